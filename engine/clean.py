"""Cleaning a dataset before training: likely label errors, top losses, duplicates and odd files. No UI imports.

- Label issues: out-of-sample probabilities for every labeled item from k-fold logistic
  regression on cached features (`issue_pipeline`), ranked by cleanlab's confident-learning
  methods (`cleanlab.rank`, `cleanlab.filter`), single- or multi-label.
- Top losses: per-item loss of an exported model, as its task computes it (`Task.loss_rows`).
- Duplicates (`engine.duplicates`, re-exported here): exact by the sha1 of the file bytes; near
  when a pixel signature and an early layer's features make two images candidates and their own
  pixels, aligned, differ by no more than copies do in this set; pairs are joined into groups
  (connected components) with a suggestion of which to keep.
- Odd files: unreadable ones, tiny, extreme aspect ratio, almost blank, greyscale in a colour set.

Cleaners follow the scikit-learn contract (`__init__` stores arguments, `fit` returns self,
fitted state ends in `_`); everything else is a plain function over arrays and paths.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import decode_image, load_image, read_image_bytes
from .duplicates import (DEFAULT_DUPLICATE_THRESHOLD, DUPLICATE_LAYERS, DUPLICATE_WEIGHTS, CopyLimit,
                         DuplicateFinder, aligned_differences, candidate_pairs, duplicate_groups, duplicate_rows,
                         exact_duplicate_pairs, near_duplicate_pairs, suggest_keep, thumbnail)
from .errors import ImageReadError, InputError

logger = logging.getLogger(__name__)

# the duplicate names are engine.duplicates', re-exported for callers of engine.clean
__all__ = ["DEFAULT_DUPLICATE_THRESHOLD", "DUPLICATE_LAYERS", "DUPLICATE_WEIGHTS", "CopyLimit", "DuplicateFinder",
           "LabelIssueFinder", "OddFileRules", "Survey", "aligned_differences", "candidate_pairs", "duplicate_groups",
           "duplicate_rows", "exact_duplicate_pairs", "find_odd_files", "image_stats", "issue_pipeline",
           "model_losses", "near_duplicate_pairs", "out_of_sample_probs", "suggest_keep", "survey_images"]

ProgressFn = Callable[[int, int], None]

DEFAULT_FOLDS = 5
STATS_EDGE = 64       # images are decoded near this size to measure blankness and colour


# ---- label issues ----------------------------------------------------------------------------

class LabelIssueFinder:
    """Out-of-sample probabilities by k-fold on features, ranked by cleanlab for likely label errors.

    fit(X, y): X (n, d) features (float16 memmaps are fine); y (n,) int class indices with -1
    for unlabeled rows, or (n, k) bool for multi-label (rows with no label are left out).
    Fitted: `rows_` (the rows scored), `classes_` (the label indices that are columns of
    `pred_probs_`: classes with fewer than two items are left out), `pred_probs_` (out of sample),
    `quality_` (cleanlab label quality in [0, 1]), `issue_score_` (1 - quality: higher is more
    likely wrong), `is_issue_` (cleanlab's confident-learning flag), `suggested_` (the class
    the out-of-sample model prefers, as a label index; multi-label: bool matrix of classes above 0.5).
    """

    def __init__(self, folds: int = DEFAULT_FOLDS, method: str = "self_confidence", seed: int = 0):
        self.folds = folds
        self.method = method
        self.seed = seed

    def fit(self, X, y) -> LabelIssueFinder:
        y = np.asarray(y)
        if len(X) != len(y):
            raise InputError(f"Features have {len(X)} rows but the labels {len(y)}; pass one label per row "
                             f"(-1 for unlabeled).")
        multi = y.ndim == 2
        rows = _scorable_rows(y, multi)
        if multi:
            self.classes_ = np.arange(y.shape[1])
            given = y[rows]
            self.pred_probs_ = _oos_probs_multi(_dense(X, rows), given, self.folds, self.seed)
        else:
            # classes numbered 0..k-1 among the usable ones: cleanlab wants a column for every label
            self.classes_, given = np.unique(y[rows], return_inverse=True)
            self.pred_probs_ = out_of_sample_probs(X, _scatter(given, rows, len(y)), rows=rows,
                                                   folds=self.folds, seed=self.seed)
        self.rows_ = rows
        self.quality_, self.is_issue_ = _cleanlab_rank(given, self.pred_probs_, multi, self.method)
        self.issue_score_ = 1.0 - self.quality_
        self.suggested_ = self.pred_probs_ >= 0.5 if multi else self.classes_[self.pred_probs_.argmax(1)]
        return self


def _scatter(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """(n,) int array holding `values` at `rows` and -1 elsewhere."""
    full = np.full(n, -1, dtype=np.int64)
    full[rows] = values
    return full


def _scorable_rows(y: np.ndarray, multi: bool) -> np.ndarray:
    """Rows that can be cross-validated: labeled, and (single-label) of a class with >= 2 items."""
    if multi:
        rows = np.flatnonzero(y.any(1))
        if len(rows) < 4:
            raise InputError(f"Finding label issues needs at least 4 labeled images; there are {len(rows)}.")
        return rows
    rows = np.flatnonzero(y >= 0)
    classes, counts = np.unique(y[rows], return_counts=True)
    usable = classes[counts >= 2]
    if len(usable) < 2:
        raise InputError(f"Finding label issues needs two labels with two images each; there are {len(usable)} "
                         f"such label(s). Label more images first.")
    return rows[np.isin(y[rows], usable)]


def out_of_sample_probs(X, y, *, rows=None, folds: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """(len(rows), n_classes) probabilities of rows `rows` (default: y >= 0), each from a model that did
    not see it (stratified k-fold with `issue_pipeline`).
    Columns are class indices 0..y.max(); classes absent from a fold's training rows get 0."""
    from sklearn.model_selection import StratifiedKFold
    y = np.asarray(y)
    rows = np.flatnonzero(y >= 0) if rows is None else np.asarray(rows)
    target = y[rows]
    n_classes = int(target.max()) + 1
    k = int(max(2, min(folds, np.bincount(target)[np.unique(target)].min())))
    probs = np.zeros((len(rows), n_classes), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(rows)), target):
        model = issue_pipeline(len(train), X.shape[1], seed).fit(_dense(X, rows[train]), target[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(_dense(X, rows[test]))
    return probs


def issue_pipeline(n_rows: int, n_dims: int, seed: int = 0):
    """The out-of-sample model: L2-normalized features, PCA to at most 256 dimensions, logistic regression.

    Chosen on cifar10 with 5% flipped labels (bench/clean.py): the app's first model (standardized,
    C=0.05) ranks the flipped items worse (precision at 150: 0.62-0.64 against 0.71) and, on
    full-width features, takes about twice as long.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    return make_pipeline(Normalizer(), PCA(min(256, n_rows - 1, n_dims), random_state=seed),
                         LogisticRegression(C=10.0, max_iter=500, random_state=seed))


def _oos_probs_multi(X, hot: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Multi-label: one logistic regression per class, out of sample by k-fold."""
    from sklearn.model_selection import KFold
    from sklearn.multiclass import OneVsRestClassifier
    rows = np.arange(len(X))
    probs = np.zeros(hot.shape, dtype=np.float32)
    splitter = KFold(n_splits=min(folds, len(hot)), shuffle=True, random_state=seed)
    for train, test in splitter.split(hot):
        constant = hot[train].all(0) | ~hot[train].any(0)    # a class always (never) on in this fold
        model = OneVsRestClassifier(issue_pipeline(len(train), X.shape[1], seed)).fit(_dense(X, rows[train]), hot[train][:, ~constant])
        probs[np.ix_(test, np.flatnonzero(~constant))] = model.predict_proba(_dense(X, rows[test]))
        probs[np.ix_(test, np.flatnonzero(constant))] = hot[train][:1, constant].astype(np.float32)
    return probs


def _dense(X, rows: np.ndarray) -> np.ndarray:
    return np.asarray(X[rows], dtype=np.float32)


def _cleanlab_rank(labels: np.ndarray, pred_probs: np.ndarray, multi: bool, method: str):
    """(quality in [0, 1], confident-learning issue flag) for each row, from cleanlab.

    `n_jobs=1`: by default cleanlab forks a `multiprocessing.Pool` (one process per core) for its per-class pruning.
    The app runs this in a thread of its server, and a fork while the server's main thread is inside BLAS (the Train
    key's logistic regression) deadlocked both, spinning, with the page answered by nothing (found by the monkey; a
    `py-spy dump` showed the fork in cleanlab and the main thread in scikit-learn). The pruning is a few vector
    operations per class: one process loses nothing."""
    import cleanlab.filter
    import cleanlab.rank
    if multi:
        from cleanlab.multilabel_classification.rank import get_label_quality_scores
        given = [np.flatnonzero(row).tolist() for row in labels]
        from cleanlab.multilabel_classification.filter import find_label_issues
        quality = get_label_quality_scores(given, pred_probs, method=method)
        flags = find_label_issues(given, pred_probs, n_jobs=1)
        return np.asarray(quality, dtype=np.float64), np.asarray(flags, dtype=bool)
    quality = cleanlab.rank.get_label_quality_scores(labels, pred_probs, method=method)
    flags = cleanlab.filter.find_label_issues(labels, pred_probs, n_jobs=1)
    return np.asarray(quality, dtype=np.float64), np.asarray(flags, dtype=bool)


# ---- odd files -------------------------------------------------------------------------------

@dataclass
class OddFileRules:
    """When a readable image is odd enough to review (every size in pixels of the original file)."""

    min_side: int = 16            # smaller than this on either side: tiny
    min_side_of_median: float = 0.25   # ... or than this fraction of the set's median short side
    max_aspect: float = 4.0       # long side / short side above this: extreme aspect ratio
    blank_std: float = 4.0        # grey-level standard deviation (0..255) below this: almost blank
    grey_colourfulness: float = 2.0   # mean |channel difference| below this: greyscale
    colour_set_fraction: float = 0.9  # greyscale is odd only when at least this share of the set has colour


@dataclass
class Survey:
    """What one read of every file tells: `stats` (see `survey_images`) and `thumbnails` (n grey uint8
    arrays, None where unreadable) for `DuplicateFinder`."""

    stats: object          # pandas DataFrame
    thumbnails: list


def survey_images(paths: Sequence, *, progress: ProgressFn | None = None) -> Survey:
    """Read every file once (JPEGs decoded small in draft mode); never raises for a bad file.

    stats, one row per path: width, height, bytes, pixel_std (grey levels, 0..255), colourfulness
    (mean distance of the channels from grey), sha1 (of the bytes; None if unreadable), error (the
    reason, None if the image decodes). thumbnails: the grey image, shrunk to fit 32 x 32 when
    larger (`engine.duplicates.thumbnail`; None where unreadable).
    """
    import pandas as pd
    rows, thumbnails = [], []
    for done, path in enumerate(paths, 1):
        row, grey = _survey_one(path)
        rows.append(row)
        thumbnails.append(None if grey is None else thumbnail(grey))
        if progress and (done % 64 == 0 or done == len(paths)):
            progress(done, len(paths))
    columns = ["width", "height", "bytes", "pixel_std", "colourfulness", "sha1", "error"]
    return Survey(pd.DataFrame(rows, columns=columns), thumbnails)


def image_stats(paths: Sequence, *, progress: ProgressFn | None = None):
    """The `stats` table of `survey_images`."""
    return survey_images(paths, progress=progress).stats


def _survey_one(path) -> tuple[tuple, object]:
    """(stats row, the image in grey levels as decoded, None if unreadable)."""
    try:
        data = read_image_bytes(path)
    except ImageReadError as err:
        return (0, 0, 0, np.nan, np.nan, None, err.reason), None
    digest = hashlib.sha1(data).hexdigest()
    try:
        small = decode_image(data, path, size=STATS_EDGE)
    except ImageReadError as err:
        return (0, 0, len(data), np.nan, np.nan, digest, err.reason), None
    width, height = _original_size(data, small)
    grey_image = small.convert("L")
    small.thumbnail((STATS_EDGE, STATS_EDGE))
    pixels = np.asarray(small, dtype=np.float32)
    grey = pixels.mean(2)
    colourfulness = float(np.abs(pixels - grey[..., None]).mean())
    row = (width, height, len(data), float(grey.std()), colourfulness, digest, None)
    return row, grey_image


def _original_size(data: bytes, decoded) -> tuple[int, int]:
    """Width and height of the stored image (draft decoding may have shrunk `decoded`), EXIF rotation applied."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
    if (decoded.width > decoded.height) != (width > height) and width != height:
        width, height = height, width
    return width, height


def find_odd_files(stats, rules: OddFileRules | None = None):
    """Odd rows of an `image_stats` table: (row, reason, score), most worth reviewing first.

    Scores: 1.0 unreadable; otherwise in (0, 1), higher the further past a rule's limit.
    """
    import pandas as pd
    rules = rules or OddFileRules()
    readable = stats["error"].isna()
    found: dict[int, list[tuple[float, str]]] = {}

    def add(mask, score, reason):
        for row in np.flatnonzero(np.asarray(mask)):
            found.setdefault(int(row), []).append((float(np.clip(score[row], 0.01, 0.99)), reason(row)))

    for row in np.flatnonzero(~readable.to_numpy()):
        found[int(row)] = [(1.0, f"unreadable: {stats['error'].iat[row]}")]
    good = readable.to_numpy()
    width, height = stats["width"].to_numpy(float), stats["height"].to_numpy(float)
    short, long_ = np.minimum(width, height), np.maximum(width, height)
    median_short = float(np.median(short[good])) if good.any() else 0.0
    limit = max(rules.min_side, rules.min_side_of_median * median_short)
    with np.errstate(divide="ignore", invalid="ignore"):
        add(good & (short < limit), 0.9 - 0.4 * short / limit, lambda r: f"tiny: {int(width[r])}x{int(height[r])} px")
        aspect = long_ / np.maximum(short, 1)
        add(good & (aspect > rules.max_aspect), 0.5 + 0.4 * (1 - rules.max_aspect / aspect),
            lambda r: f"extreme aspect ratio {aspect[r]:.1f}:1")
        std = stats["pixel_std"].to_numpy(float)
        add(good & (std < rules.blank_std), 0.9 - 0.4 * std / rules.blank_std,
            lambda r: f"almost blank (pixel std {std[r]:.1f})")
        colour = stats["colourfulness"].to_numpy(float)
        pictures = good & (std >= rules.blank_std)       # blank images say nothing about colour
        is_grey = pictures & (colour < rules.grey_colourfulness)
        share = float((~is_grey[pictures]).mean()) if pictures.any() else 0.0
        if share >= rules.colour_set_fraction:
            add(is_grey, np.full(len(stats), 0.3),
                lambda r: f"greyscale in a colour set ({share:.0%} colour)")
    table = pd.DataFrame([(row, max(s for s, _ in hits), "; ".join(text for _, text in hits))
                          for row, hits in found.items()], columns=["row", "score", "reason"])
    return table.sort_values(["score", "row"], ascending=[False, True], kind="stable").reset_index(drop=True)


# ---- top losses of a trained model ------------------------------------------------------------

def model_losses(predictor, folder, items: Sequence[str], targets: Sequence, *, batch_size: int = 32,
                 progress: ProgressFn | None = None):
    """Per-item loss of an exported model (`load_exported`) on its true targets, as its task computes it.

    targets, one per item, as the task's labelers give them: classify a class name; multi-label
    a list of names; segment a mask file (code indices; void pixels left out, the loss is the
    mean over the other pixels); regress (k, 2) points in the image's pixels.
    Returns a DataFrame: row, loss (NaN where the item could not be scored), predicted,
    confidence (the model's probability of `predicted`; NaN for segment and regress), error.
    """
    import pandas as pd
    if len(items) != len(targets):
        raise InputError(f"model_losses got {len(items)} items but {len(targets)} targets; give one target per item.")
    out, batch = [], []
    for row, (item, target) in enumerate(zip(items, targets)):
        try:
            batch.append((row, *_loss_inputs(predictor, Path(folder) / item, target)))
        except (ImageReadError, InputError) as err:
            out.append((row, np.nan, "", np.nan, getattr(err, "reason", str(err))))
        if len(batch) == batch_size or (row == len(items) - 1 and batch):
            out.extend(_scored_rows(predictor, batch))
            batch = []
        if progress and (row % batch_size == 0 or row == len(items) - 1):
            progress(row + 1, len(items))
    table = pd.DataFrame(out, columns=["row", "loss", "predicted", "confidence", "error"])
    return table.sort_values("row").reset_index(drop=True)


def _loss_inputs(predictor, path: Path, target) -> tuple:
    """(x, y) of one item: the image as the predictor feeds it, the target as its task's loss takes it."""
    image = load_image(path)
    labels = list(predictor.labels or [])
    return predictor.preprocess(image)[0], predictor.task.encode_one(image, target, labels, predictor.size)


def _scored_rows(predictor, batch: list[tuple]) -> list[tuple]:
    """(row, loss, predicted, confidence, error) for each (row, x, y) of `batch`."""
    import torch
    rows, xs, ys = zip(*batch)
    pred = predictor.raw_outputs(torch.stack(xs))  # computed without gradients: so is every loss from it
    scored = predictor.task.loss_rows(pred, torch.stack(ys), list(predictor.labels or []))
    return [(row, *values) for row, values in zip(rows, scored)]
