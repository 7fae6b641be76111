"""A first model in seconds: a linear classifier on cached features, with an honest accuracy estimate.

This is what the app's Train button runs after the first ~100 labels: no image is read and
no network is run. The estimate is cross-validated on the labeled items only (stratified
folds), reported with a 95% interval and per-label precision and recall, so a person can
tell how far to trust the predictions before accepting any of them.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import FirstModelError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

PCA_COMPONENTS = 256


@dataclass
class FirstModelReport:
    """Cross-validated figures for a first model."""

    accuracy: float
    interval: tuple[float, float]          # 95% Wilson interval of the cross-validated accuracy
    n_labeled: int
    folds: int
    classes: list[str]
    per_label: dict[str, dict] = field(default_factory=dict)   # name -> n, precision, recall

    def summary(self) -> str:
        low, high = self.interval
        return (f"{self.accuracy:.0%} accurate (95% interval {low:.0%}-{high:.0%}), "
                f"{self.folds}-fold cross-validation on {self.n_labeled} labeled images")


@dataclass
class FirstModel:
    classes: list[str]
    pipeline: object                       # fitted scikit-learn pipeline
    report: FirstModelReport

    def predict_proba(self, features: np.ndarray, chunk_rows: int = 8192) -> np.ndarray:
        """(n, n_classes) float32 probabilities, computed in chunks (features may be a float16 memmap)."""
        out = np.empty((len(features), len(self.classes)), dtype=np.float32)
        for start in range(0, len(features), chunk_rows):
            block = np.asarray(features[start:start + chunk_rows], dtype=np.float32)
            out[start:start + len(block)] = self.pipeline.predict_proba(block)
        return out


def fit_first_model(features: np.ndarray, y: np.ndarray, classes: list[str], *, folds: int = 5,
                    seed: int = 0) -> FirstModel:
    """Fit a standardized logistic regression on the rows with y >= 0 and estimate its accuracy.

    features: (n, d) for all items (float16 memmap is fine); y: (n,) class index or -1.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(y)
    rows = np.flatnonzero(y >= 0)
    present, counts = np.unique(y[rows], return_counts=True)
    if len(present) < 2 or counts.min() < 2:
        raise FirstModelError(
            f"Training needs at least two labels with two images each; there are {len(present)} label(s) "
            f"in use with {counts.min() if len(counts) else 0} image(s) in the smallest. Label more images first."
        )
    X = np.asarray(features[rows], dtype=np.float32)
    target = y[rows]
    k = int(min(folds, counts.min()))
    predicted = cross_val_predict(_pipeline(seed, len(rows) - math.ceil(len(rows) / k), X.shape[1]), X, target,
                                  cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed))
    report = _report(target, predicted, classes, k)
    pipeline = _pipeline(seed, len(rows), X.shape[1]).fit(X, target)
    # classes the model never saw get probability 0: keep one column per class name
    return FirstModel(classes, _FullClasses(pipeline, len(classes)), report)


def _pipeline(seed: int, n_rows: int | None = None, n_cols: int | None = None):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    # An L2-penalised logistic regression's weights lie in the span of its training rows. Past
    # PCA_COMPONENTS rows, the rows are first projected onto their leading principal axes, which
    # hold most of that span; fitting stays seconds on grid-pooled layers with thousands of columns.
    steps = [StandardScaler()]
    if n_rows is not None and n_cols is not None and min(n_rows - 1, n_cols) > PCA_COMPONENTS:
        steps.append(PCA(n_components=PCA_COMPONENTS, random_state=seed))
    # C small: a few hundred labels against thousands of dimensions
    return make_pipeline(*steps, LogisticRegression(C=0.05, max_iter=500, random_state=seed, class_weight="balanced"))


class ColumnBlocks:
    """Several (n, d_i) feature arrays (memmaps) read as one (n, sum d_i) matrix, a block of rows at a time.

    Indexing with a slice or row indices returns float32 rows; nothing else is loaded, so every
    layer of 100k images never has to sit in memory at once.
    """

    def __init__(self, arrays):
        self.arrays = list(arrays)
        if not self.arrays or len({len(a) for a in self.arrays}) != 1:
            raise FirstModelError("ColumnBlocks needs one or more feature arrays with the same number of rows.")
        self.shape = (len(self.arrays[0]), sum(a.shape[1] for a in self.arrays))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return np.concatenate([np.asarray(a[rows], dtype=np.float32) for a in self.arrays], axis=1)


class _FullClasses:
    """Wraps a fitted pipeline so predict_proba has a column for every class, seen or not."""

    def __init__(self, pipeline, n_classes: int):
        self.pipeline, self.n_classes = pipeline, n_classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        probs = self.pipeline.predict_proba(X)
        full = np.zeros((len(X), self.n_classes), dtype=np.float32)
        full[:, self.pipeline.classes_] = probs
        return full


def _report(target: np.ndarray, predicted: np.ndarray, classes: list[str], folds: int) -> FirstModelReport:
    n = len(target)
    accuracy = float((predicted == target).mean())
    per_label = {}
    for index in np.unique(target):
        tp = int(((predicted == index) & (target == index)).sum())
        per_label[classes[index]] = {
            "n": int((target == index).sum()),
            "recall": tp / max(1, int((target == index).sum())),
            "precision": tp / max(1, int((predicted == index).sum())),
        }
    return FirstModelReport(accuracy, wilson_interval(accuracy, n), n, folds, classes, per_label)


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion p observed over n trials."""
    if n == 0:
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))
