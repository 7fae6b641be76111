"""What a task is: one class per kind of problem (classify, multi-label, segment, regress), in one registry.

Everything that differs between tasks is a method of its class, asked by `datablock`, `models`, the `Learner`,
`Predictor`, `clean` and the CLI. Class methods serve the data side, before a task is configured; instance
methods are configured (label smoothing, threshold, void code, loss) and travel in exported files (`config`).
A fifth task is one class: subclass `Task`, override what differs, decorate it with `@register_task`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision import tv_tensors

from . import metrics
from .augment import draw_sample
from .interpret import ClassTarget, CoordinateTarget, RegionTarget
from ._targets import Targets, load_mask, multi_hot, normalized_points
from ._registry import TASKS, get_task, register_task  # noqa: F401  (the registry, importable from here)
from .errors import InputError, LearnerError
from .losses import dice_weight, segment_item_losses, segment_loss, training_class_weights

class Task:
    """What one kind of problem needs from the data block, the model builder and the shared loop.

    A subclass overrides what differs: it implements `encode`, `loss` and `decode` (and `encode_one` for
    top losses); the other methods have defaults that suit a classifier. The methods, in order: choosing and
    configuring the task; the data side (class methods: nothing is configured yet); training; prediction and
    export; per-item losses of a trained model (top losses).
    """

    name: ClassVar[str] = ""
    architecture: ClassVar[str] = "classifier"  # its model: a builder of `engine.models.ARCHITECTURES`
    can_unflip: bool = True  # whether flip test-time augmentation applies (`unflip` maps a mirrored output back)
    per_label_scores: ClassVar[bool] = True  # one probability per label and image (storable as predictions)
    one_label: ClassVar[bool] = False  # one label an image: the probabilities sum to 1 (checks and Accept use them)
    unscored: ClassVar[str] = "no loss"  # why an item's loss is NaN (top losses)
    # learning from unlabeled images (engine.semi): why this task cannot (None: it can, by `pseudo_targets`), and
    # whether its outputs are per pixel (then the strong view may change colours only)
    no_pseudo_labels: ClassVar[str | None] = "it does not say how to pick pseudo-labels"
    pixel_aligned: ClassVar[bool] = False

    @classmethod
    def matches(cls, targets: list) -> bool:
        """Whether labels like `targets` are this task's (`infer_task`); False: chosen by name only."""
        return False

    @classmethod
    def from_data(cls, data) -> Task:
        """The task configured for a TaskData; keyword-only arguments after `data` are options of `learner.task_for`."""
        return cls()

    @classmethod
    def encode(cls, labeler, targets: list, folder: Path) -> Targets:
        """Every item's label (as `labeler` gave it) in the batch layout of `y`."""
        raise NotImplementedError

    @classmethod
    def sample_extras(cls, targets: Targets, index: int, image: Image.Image) -> dict:
        """What the augmentation must transform with item `index`'s image (a mask, key points); {}: nothing."""
        return {}

    @classmethod
    def to_xy(cls, targets: Targets, index: int, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A transformed sample as the (x, y) pair of a batch."""
        return sample["image"].as_subclass(torch.Tensor), torch.as_tensor(targets.values[index])

    @classmethod
    def label_targets(cls, targets: Targets, folder: Path, items: list[str]) -> torch.Tensor | None:
        """Every item's `y` without decoding images (for baselines); None when that needs the images (masks)."""
        return torch.as_tensor(targets.values) if isinstance(targets.values, np.ndarray) else None

    @classmethod
    def picture(cls, image: np.ndarray, y: torch.Tensor, targets: Targets) -> np.ndarray:
        """A preview (HWC uint8) of one sample: `image` with `y` drawn on it where it can be."""
        return image

    def loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The training loss of raw model outputs (`reduction` as in torch.nn.functional)."""
        raise NotImplementedError

    def activation(self, pred: torch.Tensor) -> torch.Tensor:
        """Model output -> what predictions are (probabilities, masks, coordinates)."""
        return pred

    def pseudo_targets(self, weak: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets for `loss`, where they are at least `threshold` confident) from raw outputs on weak views of
        unlabeled images (`engine.semi`, FixMatch-style); a task that cannot says why (`no_pseudo_labels`)."""
        raise LearnerError(f"Learning from unlabeled images is not offered for the {self.name!r} task: "
                           f"{self.no_pseudo_labels}.")

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Scores over the whole validation set; `outputs` are `activation(pred)` for every row."""
        return {}

    def held_out_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """`metrics` on a test set, tuning nothing on it (a multi-label task keeps its validation threshold)."""
        return self.metrics(outputs, targets)

    def baseline(self, train_targets: torch.Tensor, valid_targets: torch.Tensor) -> dict[str, float] | None:
        """The metrics of a predictor that ignores the image, fitted on the training targets; None: no baseline."""
        return None

    def unflip(self, pred: torch.Tensor) -> torch.Tensor | None:
        """The model's output on a mirrored image, mapped back to the original; None: no flip TTA."""
        return pred

    def decode(self, output: torch.Tensor, image_size: tuple[int, int], labels: list | None) -> dict:
        """One image's activated output -> a result for a person (label, mask, points in pixels)."""
        raise NotImplementedError

    def cam_target(self, output: torch.Tensor):
        """What Grad-CAM explains by default, for one image's raw output: the predicted class (`engine.interpret`)."""
        return ClassTarget(int(output.argmax()))

    def draw(self, image: np.ndarray, output: torch.Tensor, labels: list | None, truth=None) -> np.ndarray:
        """`image` (HWC uint8) with one activated `output` (and `truth`, in the layout of `y`) drawn where it can be."""
        return image

    def summary(self, result: dict) -> dict:
        """A short JSON-ready digest of a `decode` result (a line of `labeler predict`)."""
        return dict(result)

    def config(self) -> dict:
        """Keyword arguments that rebuild this task (saved in exported files)."""
        return {}

    def targets_from_labels(self, names: list[str], matrix: np.ndarray) -> list:
        """Each row's label as labelers give it (None: none), from `names` and an (n,) index or (n, k) bool matrix."""
        raise InputError(f"Top losses of a {self.name} model need its targets: a label store holds class names "
                         "only. Pass targets= a labeler as for training (e.g. MaskLabel(...) or PointsLabel(...)).")

    def encode_one(self, image: Image.Image, label, labels: list, size: int) -> torch.Tensor:
        """One item's label as `loss` takes it, for `image` fed to the model at `size` x `size`."""
        raise NotImplementedError

    def item_losses(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One loss per item of a batch: `loss` with reduction "none", averaged over each item's values."""
        losses = self.loss(pred, target, reduction="none")
        return losses.flatten(1).mean(1) if losses.ndim > 1 else losses

    def loss_rows(self, pred: torch.Tensor, target: torch.Tensor, labels: list) -> list[tuple]:
        """(loss, predicted, confidence, note) for each item of a batch of raw model outputs."""
        return [(loss, "", math.nan, None if math.isfinite(loss) else self.unscored)
                for loss in self.item_losses(pred, target).tolist()]


# --- single-label classification -------------------------------------------------------

@register_task
class ClassifyTask(Task):
    """Cross-entropy, optionally with label smoothing (the target keeps 1 - eps, the rest is spread)."""

    name, no_pseudo_labels = "classify", None
    one_label = True

    def __init__(self, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise LearnerError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = label_smoothing

    @classmethod
    def matches(cls, targets):
        return isinstance(targets[0], str)

    @classmethod
    def from_data(cls, data, *, label_smoothing: float = 0.0):
        return cls(label_smoothing)

    @classmethod
    def encode(cls, labeler, targets, folder):
        classes = sorted({str(label) for label in targets})
        lookup = {name: i for i, name in enumerate(classes)}
        return Targets(np.array([lookup[str(label)] for label in targets], np.int64), classes, n_out=len(classes))

    def loss(self, pred, target, reduction="mean"):
        return F.cross_entropy(pred, target, label_smoothing=self.label_smoothing, reduction=reduction)

    def activation(self, pred):
        return pred.softmax(dim=1)

    def pseudo_targets(self, weak, threshold):
        confidence, pseudo = weak.softmax(dim=1).max(dim=1)   # the class, per image or per pixel
        return pseudo, confidence >= threshold

    def baseline(self, train_targets, valid_targets):
        """Always the most common training class."""
        counts = torch.bincount(train_targets.long())
        return self.metrics(F.one_hot(counts.argmax().expand(len(valid_targets)), len(counts)).float(), valid_targets)

    def metrics(self, outputs, targets):
        return {"accuracy": metrics.accuracy(outputs, targets), "error_rate": metrics.error_rate(outputs, targets)}

    def decode(self, output, image_size, labels):
        probs = output.tolist()
        best = int(np.argmax(probs))
        return {"label": labels[best] if labels else best,
                "probabilities": dict(zip(labels or range(len(probs)), probs))}

    def summary(self, result):
        return {"label": result["label"], "confidence": round(float(max(result["probabilities"].values())), 4)}

    def config(self):
        return {"label_smoothing": self.label_smoothing}

    def targets_from_labels(self, names, matrix):
        if matrix.ndim == 2:
            raise InputError("the model is a single-label classifier but the labels are multi-label.")
        return [names[k] if k >= 0 else None for k in matrix]

    def encode_one(self, image, label, labels, size):
        if str(label) not in (lookup := {str(name): i for i, name in enumerate(labels)}):
            raise InputError(f"label {label!r} is not one the model knows ({', '.join(map(str, labels))}).")
        return torch.tensor(lookup[str(label)])

    def loss_rows(self, pred, target, labels):
        confidence, best = pred.softmax(1).max(1)
        return [(float(loss), labels[int(b)], float(c), None)
                for loss, b, c in zip(self.item_losses(pred, target), best, confidence)]


# --- multi-label classification --------------------------------------------------------

@register_task
class MultiLabelTask(Task):
    """Independent sigmoid per tag; the decision threshold is tuned on validation for F-beta."""

    name, no_pseudo_labels = "multilabel", None

    def __init__(self, threshold: float = 0.5, beta: float = 2.0):
        self.threshold, self.beta = threshold, beta

    @classmethod
    def matches(cls, targets):
        return isinstance(targets[0], (list, tuple)) and all(isinstance(tag, str) for tag in targets[0])

    @classmethod
    def encode(cls, labeler, targets, folder):
        targets = [[tags] if isinstance(tags, str) else tags for tags in targets]  # a str is one tag, not letters
        classes = sorted({str(tag) for tags in targets for tag in tags})
        return Targets(multi_hot(targets, classes), classes, n_out=len(classes))

    def loss(self, pred, target, reduction="mean"):
        return F.binary_cross_entropy_with_logits(pred, target.float(), reduction=reduction)

    def activation(self, pred):
        return pred.sigmoid()

    def pseudo_targets(self, weak, threshold):
        probs = weak.sigmoid()          # per tag: sure on or sure off; unsure tags are left out
        return (probs >= 0.5).float(), (probs >= threshold) | (probs <= 1 - threshold)

    def baseline(self, train_targets, valid_targets):
        """All-positive for the decisions (its own threshold), the tag-frequency ranking for the mAPs."""
        scores = MultiLabelTask(beta=self.beta).metrics(torch.ones_like(valid_targets.float()), valid_targets)
        if (valid_targets > 0.5).any():
            scores.update(metrics.average_precisions(metrics.frequency_ranking(train_targets, len(valid_targets)),
                                                     valid_targets))
        return scores

    def metrics(self, outputs, targets):
        self.threshold, _ = metrics.best_threshold(outputs, targets, self.beta)
        return self.held_out_metrics(outputs, targets)

    def held_out_metrics(self, outputs, targets):
        scores = {"accuracy": metrics.accuracy_multi(outputs, targets, self.threshold),
                  f"f{self.beta:g}": metrics.fbeta_multi(outputs, targets, self.threshold, self.beta),
                  "threshold": self.threshold}
        if (targets > 0.5).any():
            scores.update(metrics.average_precisions(outputs, targets))
        return scores

    def decode(self, output, image_size, labels):
        probs = output.tolist()
        names = labels or list(range(len(probs)))
        return {"labels": [name for name, p in zip(names, probs) if p > self.threshold],
                "probabilities": dict(zip(names, probs))}

    def summary(self, result):
        return {"labels": list(result["labels"])}

    def config(self):
        return {"threshold": self.threshold, "beta": self.beta}

    def targets_from_labels(self, names, matrix):
        if matrix.ndim == 1:  # single-label labels: each image's one label is its one tag
            return [[names[k]] if k >= 0 else None for k in matrix]
        return [[names[k] for k in np.flatnonzero(row)] if row.any() else None for row in matrix]

    def encode_one(self, image, label, labels, size):
        return torch.from_numpy(multi_hot([[label] if isinstance(label, str) else label], labels)[0])

    def loss_rows(self, pred, target, labels):
        rows = []
        for loss, probs in zip(self.item_losses(pred, target), pred.sigmoid()):
            on = np.flatnonzero(probs.numpy() > self.threshold)
            confidence = float(probs[on].mean()) if len(on) else math.nan
            rows.append((float(loss), " ".join(labels[i] for i in on), confidence, None))
        return rows


# --- segmentation ----------------------------------------------------------------------

@register_task
class SegmentTask(Task):
    """Per-pixel cross-entropy, plus `dice` x soft Dice (engine.losses); void pixels count in no loss or metric."""

    name, architecture, unscored = "segment", "unet", "only void pixels"
    no_pseudo_labels, pixel_aligned, per_label_scores = None, True, False

    def __init__(self, void_code: int | None = None, n_classes: int | None = None, dice: float = 0.0,
                 class_weights: list[float] | None = None):
        self.void_code, self.n_classes, self.dice = void_code, n_classes, dice_weight(dice)
        self.ignore_index = -100 if void_code is None else void_code
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]  # per code

    @classmethod
    def from_data(cls, data, *, dice: float = 0.0, class_weights: str | None = None):  # "median", "sqrt": losses
        return cls(data.void_code, data.n_out, dice, class_weights and training_class_weights(data, class_weights))

    @classmethod
    def encode(cls, labeler, targets, folder):
        if getattr(labeler, "task", None) != cls.name:  # MaskLabel names its task
            raise InputError(f"task='segment' needs a MaskLabel labeler, not {type(labeler).__name__}. "
                             f"Use MaskLabel(mask_path, codes, void_code).")
        return Targets([str(folder / path) for path in targets], codes=labeler.codes, void_code=labeler.void_code,
                       n_out=len(labeler.codes))

    @classmethod
    def sample_extras(cls, targets, index, image):
        mask = load_mask(targets.values[index], image.size, len(targets.codes), targets.void_code)
        return {"mask": tv_tensors.Mask(torch.from_numpy(mask))}

    @classmethod
    def to_xy(cls, targets, index, sample):
        return sample["image"].as_subclass(torch.Tensor), sample["mask"].as_subclass(torch.Tensor).long()

    @classmethod
    def picture(cls, image, y, targets):
        return draw_sample(image, mask=y.numpy(), n_codes=len(targets.codes), void_code=targets.void_code)

    def loss(self, pred, target, reduction="mean"):
        return segment_loss(pred, target, self.ignore_index, self.dice, reduction, self.class_weights)

    def activation(self, pred):
        return pred.argmax(dim=1)  # rather than probabilities: whole validation sets of masks stay small

    def pseudo_targets(self, weak, threshold):
        pseudo, keep = ClassifyTask.pseudo_targets(self, weak, threshold)
        return pseudo, keep & (pseudo != self.ignore_index)      # void is never a pseudo-label

    def unflip(self, pred):
        return pred.flip(-1)

    def metrics(self, outputs, targets):
        n_classes = self.n_classes or int(max(outputs.max(), targets.max())) + 1
        return {"pixel_accuracy": metrics.pixel_accuracy(outputs, targets, self.void_code),
                "mean_iou": metrics.mean_iou(outputs, targets, n_classes, self.void_code)}

    def cam_target(self, output):
        """The most common predicted class but void, over the pixels predicted as it."""
        predicted = output.argmax(0)
        counted = predicted[predicted != self.ignore_index]
        best = int((counted if len(counted) else predicted.flatten()).mode().values)
        return RegionTarget(best, (predicted == best).cpu().numpy())

    def draw(self, image, output, labels, truth=None):
        return draw_sample(image, mask=np.asarray(output), n_codes=len(labels), void_code=self.void_code)

    def decode(self, output, image_size, labels):
        width, height = image_size
        mask = F.interpolate(output[None, None].float(), size=(height, width), mode="nearest")[0, 0]
        return {"mask": mask.to(torch.int64).numpy(), "codes": labels}

    def summary(self, result):
        counts = np.bincount(np.asarray(result["mask"]).ravel(), minlength=len(result["codes"]))
        return {"classes": {c: round(float(n / counts.sum()), 4) for c, n in zip(result["codes"], counts) if n}}

    def config(self):
        return {"void_code": self.void_code, "n_classes": self.n_classes, "dice": self.dice,
                "class_weights": self.class_weights}

    def encode_one(self, image, label, labels, size):
        mask = torch.from_numpy(load_mask(label, image.size, len(labels), self.void_code))[None, None].float()
        return F.interpolate(mask, size=(size, size), mode="nearest")[0, 0].long()  # as validation resizes masks

    def item_losses(self, pred, target):
        return segment_item_losses(self.loss(pred, target, reduction="none"), target, self.ignore_index)


# --- regression: points or plain values ------------------------------------------------

@register_task
class RegressTask(Task):
    """Points as (x, y) pairs in [-1, 1], metrics and predictions in pixels; other numbers pass through."""

    name, architecture = "regress", "regressor"
    no_pseudo_labels = "a regressed point has no probability to tell a confident prediction from a guess"
    per_label_scores = False
    LOSSES: ClassVar[dict] = {"mse": F.mse_loss, "l1": F.l1_loss}

    def __init__(self, size: int = 224, loss: str = "mse", points: int = 0):
        if loss not in self.LOSSES:
            raise LearnerError(f"Unknown regression loss {loss!r}. Choose one of: {', '.join(self.LOSSES)}.")
        self.size, self.loss_name, self.points = size, loss, points
        self.can_unflip = points == 1  # `unflip` knows one point's mirror image

    @classmethod
    def matches(cls, targets):
        first = targets[0]  # numbers, or a list of them (a list of str is multi-label)
        return isinstance(first, (np.ndarray, float, int, np.number)) or (
            isinstance(first, (list, tuple)) and not all(isinstance(value, str) for value in first))

    @classmethod
    def from_data(cls, data, *, loss: str = "mse"):
        return cls(data.size, loss=loss, points=getattr(data, "points", 0))

    @classmethod
    def encode(cls, labeler, targets, folder):
        values = np.stack([np.asarray(value, np.float32) for value in targets]) if targets else np.zeros((0, 1))
        if getattr(labeler, "task", None) == cls.name:  # PointsLabel: pixel points that follow the augmentation
            return Targets(values, n_out=int(values[0].size), points=True)
        return Targets(values.reshape(len(targets), -1), n_out=int(values[0].size))

    @classmethod
    def sample_extras(cls, targets, index, image):
        if not targets.points:
            return {}
        return {"points": tv_tensors.KeyPoints(torch.from_numpy(targets.values[index]), canvas_size=image.size[::-1])}

    @classmethod
    def to_xy(cls, targets, index, sample):
        if not targets.points:
            return super().to_xy(targets, index, sample)
        x = sample["image"].as_subclass(torch.Tensor)
        return x, normalized_points(sample["points"].as_subclass(torch.Tensor), x.shape[-1], x.shape[-2])

    @classmethod
    def label_targets(cls, targets, folder, items):
        """Points are scaled by each image's size, read from its header; unreadable images are left out."""
        if not targets.points:
            return super().label_targets(targets, folder, items)
        rows = []
        for item, points in zip(items, targets.values):
            try:
                with Image.open(folder / item) as image:
                    rows.append(normalized_points(points, *image.size))
            except OSError:
                continue
        return torch.stack(rows) if rows else torch.zeros((0, targets.n_out))

    @classmethod
    def picture(cls, image, y, targets):
        if not targets.points:
            return image
        return draw_sample(image, points=(y.view(-1, 2).numpy() + 1) / 2 * [image.shape[1], image.shape[0]])

    def loss(self, pred, target, reduction="mean"):
        return self.LOSSES[self.loss_name](pred, target, reduction=reduction)

    def unflip(self, pred):
        """One point mirrors back by negating x; several points would also swap left and right (not known)."""
        return pred * torch.tensor([-1.0, 1.0], dtype=pred.dtype, device=pred.device) if self.points == 1 else None

    def baseline(self, train_targets, valid_targets):
        """Always the training mean of every coordinate."""
        return self.metrics(train_targets.float().mean(0).expand(len(valid_targets), -1), valid_targets)

    def metrics(self, outputs, targets):
        return {"point_error_px": metrics.mean_point_error(outputs, targets, self.size),
                "point_error_rel": metrics.relative_point_error(outputs, targets, self.size)}

    def cam_target(self, output):
        return CoordinateTarget(0)  # the first value: the x of the first point

    def draw(self, image, output, labels, truth=None):
        """Predicted points as red dots, over the true ones (`truth`) in green."""
        if not self.points:
            return image
        if truth is not None:  # draw_sample draws red: the pixels it changed become green
            true = draw_sample(image, points=(np.asarray(truth).reshape(-1, 2) + 1) / 2 * image.shape[1::-1])
            image = np.where((true != image).any(-1, keepdims=True), np.uint8([0, 200, 0]), image)
        return draw_sample(image, points=(np.asarray(output).reshape(-1, 2) + 1) / 2 * image.shape[1::-1])

    def decode(self, output, image_size, labels):
        return {"points": ((output.reshape(-1, 2) + 1) / 2 * torch.tensor(image_size, dtype=torch.float32)).numpy()}

    def summary(self, result):
        return {"points": np.round(np.asarray(result["points"]), 2).tolist()}

    def config(self):
        return {"size": self.size, "loss": self.loss_name, "points": self.points}

    def encode_one(self, image, label, labels, size):
        return normalized_points(np.asarray(label, np.float32), *image.size)
