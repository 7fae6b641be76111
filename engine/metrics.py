"""Metrics for the four tasks, computed over a whole validation set (not averaged per batch).

Every function takes torch tensors or numpy arrays. Scores that a maintained library already
computes come from scikit-learn (`fbeta_score`, `average_precision_score`); the rest are a
few lines of numpy because they depend on our conventions (void pixels, [-1, 1] coordinates).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, fbeta_score

from .errors import MetricError  # noqa: F401  (raised here; importable from here)


def _numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu() if values.is_floating_point() else values.detach().cpu()
        return values.numpy()
    return np.asarray(values)


def _same_length(preds: np.ndarray, targets: np.ndarray) -> None:
    if len(preds) != len(targets):
        raise MetricError(f"{len(preds)} predictions but {len(targets)} targets; pass one prediction per target.")
    if len(targets) == 0:
        raise MetricError("No targets to score: the validation set is empty. Label or split more images.")


# --- single-label classification -------------------------------------------------------

def accuracy(scores, targets) -> float:
    """Fraction of rows whose highest score (logit or probability, shape (N, C)) is the target class."""
    scores, targets = _numpy(scores), _numpy(targets)
    _same_length(scores, targets)
    return float((scores.argmax(axis=1) == targets).mean())


def error_rate(scores, targets) -> float:
    return 1.0 - accuracy(scores, targets)


# --- multi-label classification --------------------------------------------------------

def accuracy_multi(probs, targets, threshold: float = 0.5) -> float:
    """Fraction of (image, class) decisions that are right when `probs > threshold` means 'has the tag'."""
    probs, targets = _numpy(probs), _numpy(targets)
    _same_length(probs, targets)
    return float(((probs > threshold) == (targets > 0.5)).mean())


def fbeta_multi(probs, targets, threshold: float = 0.5, beta: float = 2.0) -> float:
    """F-beta averaged over samples (beta=2 weighs recall over precision, as in Planet Amazon)."""
    probs, targets = _numpy(probs), _numpy(targets)
    _same_length(probs, targets)
    return float(fbeta_score(targets > 0.5, probs > threshold, beta=beta, average="samples", zero_division=0))


THRESHOLDS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))


def best_threshold(probs, targets, beta: float = 2.0, thresholds=THRESHOLDS) -> tuple[float, float]:
    """The threshold among `thresholds` that maximizes `fbeta_multi` on these (validation) rows, and its score."""
    scores = [fbeta_multi(probs, targets, float(t), beta) for t in thresholds]
    best = int(np.argmax(scores))
    return float(thresholds[best]), float(scores[best])


def mean_average_precision(probs, targets) -> float:
    """Average precision per class, averaged over the classes that have at least one positive target."""
    probs, targets = _numpy(probs), _numpy(targets) > 0.5
    _same_length(probs, targets)
    present = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    if not present:
        raise MetricError("No class has a positive target; mean average precision is undefined.")
    return float(np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in present]))


def micro_average_precision(probs, targets) -> float:
    """Average precision of every (image, tag) decision ranked together: common tags weigh most."""
    probs, targets = _numpy(probs), _numpy(targets) > 0.5
    _same_length(probs, targets)
    if not targets.any():
        raise MetricError("No class has a positive target; micro-averaged precision is undefined.")
    return float(average_precision_score(targets.ravel(), probs.ravel()))


def per_image_average_precision(probs, targets) -> float:
    """Average precision of each image's ranking of the tags, averaged over the images with at least one tag:
    how well the model orders one image's tags (what a person tagging that image sees)."""
    probs, targets = _numpy(probs), _numpy(targets) > 0.5
    _same_length(probs, targets)
    rows = targets.any(axis=1)
    if not rows.any():
        raise MetricError("No image has a positive target; per-image average precision is undefined.")
    probs, targets = probs[rows], targets[rows]
    # scikit-learn's AP of one row, for all rows at once (a bootstrap scores thousands): the mean over the row's
    # positives of the precision among the tags scored at least as high (ties count as one threshold, as there)
    per_row = []
    for start in range(0, len(probs), 256):
        scores, positive = probs[start:start + 256], targets[start:start + 256]
        at_least = scores[:, None, :] >= scores[:, :, None]            # [n, i, j]: tag j scored >= tag i
        precision = (at_least & positive[:, None, :]).sum(-1) / at_least.sum(-1)
        per_row.append((precision * positive).sum(-1) / positive.sum(-1))
    return float(np.concatenate(per_row).mean())


def average_precisions(probs, targets) -> dict[str, float]:
    """mAP three ways: `mAP` macro over tags (each tag counts once, as Planet-style work means it),
    `mAP_micro` over every decision, `mAP_per_image` over each image's ranking of its tags."""
    return {"mAP": mean_average_precision(probs, targets), "mAP_micro": micro_average_precision(probs, targets),
            "mAP_per_image": per_image_average_precision(probs, targets)}


def frequency_ranking(train_targets, n_rows: int) -> np.ndarray:
    """The image-blind ranking: every image gets each tag's share among the training images as its score."""
    return np.repeat((_numpy(train_targets) > 0.5).mean(axis=0, keepdims=True).astype(np.float32), n_rows, axis=0)


# --- segmentation ----------------------------------------------------------------------

def _valid_pixels(pred_mask, target_mask, void_code):
    pred, target = _numpy(pred_mask).ravel(), _numpy(target_mask).ravel()
    if pred.shape != target.shape:
        raise MetricError(f"Predicted masks have {pred.size} pixels but targets {target.size}; resize one to the other.")
    if void_code is not None:
        keep = target != void_code
        pred, target = pred[keep], target[keep]
    if target.size == 0:
        raise MetricError("Every target pixel is void; there is nothing to score.")
    return pred, target


def pixel_accuracy(pred_mask, target_mask, void_code: int | None = None) -> float:
    """Fraction of non-void pixels whose predicted code equals the target code."""
    pred, target = _valid_pixels(pred_mask, target_mask, void_code)
    return float((pred == target).mean())


def mean_iou(pred_mask, target_mask, n_classes: int, void_code: int | None = None) -> float:
    """Intersection over union per class, averaged over the non-void classes present in prediction or target."""
    pred, target = _valid_pixels(pred_mask, target_mask, void_code)
    confusion = np.bincount(target * n_classes + pred, minlength=n_classes * n_classes)
    confusion = confusion[: n_classes * n_classes].reshape(n_classes, n_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    classes = [c for c in range(n_classes) if union[c] > 0 and c != void_code]
    return float(np.mean(intersection[classes] / union[classes]))


# --- point regression ------------------------------------------------------------------

def point_errors(pred_coords, target_coords, size: int) -> np.ndarray:
    """Euclidean distance in pixels per point; coordinates are (x, y) pairs in [-1, 1] on a `size`-pixel image."""
    pred, target = _numpy(pred_coords), _numpy(target_coords)
    _same_length(pred, target)
    if pred.shape != target.shape or pred.shape[-1] % 2:
        raise MetricError(f"Coordinates must be (N, 2k) pairs of the same shape; got {pred.shape} and {target.shape}.")
    offsets = (pred - target).reshape(len(pred), -1, 2) * (size / 2.0)
    return np.sqrt((offsets ** 2).sum(axis=-1))


def mean_point_error(pred_coords, target_coords, size: int) -> float:
    """Mean distance in pixels between predicted and target points."""
    return float(point_errors(pred_coords, target_coords, size).mean())


def relative_point_error(pred_coords, target_coords, size: int) -> float:
    """Mean point distance as a fraction of the image size (0.05 = 5% of the side)."""
    return mean_point_error(pred_coords, target_coords, size) / size


# --- how sure a score is ------------------------------------------------------------------

def bootstrap_intervals(score, outputs, targets, *, n_boot: int = 200, level: float = 0.95,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """A percentile bootstrap interval for every entry of `score(outputs, targets)` (a task's `metrics`).

    The validation items are resampled with replacement `n_boot` times and scored whole each time, so
    a metric over all pixels or a mean over classes gets the interval its own definition implies.
    Entries that are settings rather than scores (a tuned threshold) come out as well; ignore them.
    """
    n = len(targets)
    if n < 2:
        raise MetricError(f"A bootstrap interval needs at least 2 validation items; got {n}. Validate on more.")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        for name, value in score(outputs[rows], targets[rows]).items():
            samples.setdefault(name, []).append(float(value))
    tail = (1 - level) / 2 * 100
    return {name: (float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail)))
            for name, values in samples.items() if np.isfinite(values).any()}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller `metric` is better: losses and errors (valid_loss, error_rate, point_error_px, ...)."""
    return "loss" in metric or "error" in metric
