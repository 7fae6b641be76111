"""Projections of CNN feature matrices to 2-D scatter coordinates.

Projectors are scikit-learn transformers (``__init__`` only stores arguments,
``fit`` validates, fitted state ends in ``_``) returning float32 ``(n, 2)``.  X
is any numeric array, often a float16 memmap up to 100k x 6400, converted to
float32 in chunks; NaN/inf rows are rejected.  Supervised projectors
(:data:`SUPERVISED`) take ``y``, one int per row, -1 meaning unlabeled.
:func:`cached_projection` memoizes a projection on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.utils.validation import check_is_fitted

from ._atomic import save_npy
from ._checks import feature_matrix

from .class_layout import CLASS_LAYOUT_EXTENT, class_anchors, class_layout  # noqa: F401  (importable from here)
from .errors import ProjectionError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

CHUNK_VALUES = 1 << 23  # values converted to float32 at a time
RANDOMIZED_MIN_VALUES = 1_000_000  # n * d above which PCA uses the randomized solver
CACHE_FORMAT = 1  # bump when the meaning of cached files changes
MIN_UMAP_ROWS = 5


# ------------------------------------------------------------------ validation


def _check_matrix(X: Any) -> np.ndarray:
    """Return ``X`` as a 2-D numeric ndarray with >= 2 rows and columns (memmaps stay)."""
    arr = feature_matrix(X, ProjectionError)
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ProjectionError(
            f"A 2-D projection needs at least 2 rows and 2 feature columns; got shape "
            f"{arr.shape}. Project more images or a layer with more features.")
    return arr


def _check_number(name: str, value: Any, low: float, high: float | None = None, *,
                  integer: bool = False, example: Any) -> Any:
    """Return ``value`` if it is a number (an int when ``integer``) in [low, high]."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and value >= low
    if ok and (high is None or value <= high):
        return value
    kind = "an int" if integer else "a number"
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ProjectionError(f"{name} must be {kind} {bounds}; got {value!r}. Use e.g. {example}.")


def _iter_float32(arr: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, float32 chunk)`` over the rows of ``arr``."""
    n, d = arr.shape
    step = max(1, CHUNK_VALUES // d)
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield start, stop, np.asarray(arr[start:stop], dtype=np.float32)


def _bad_rows(chunk: np.ndarray) -> int:
    """Number of rows of ``chunk`` holding NaN or inf."""
    return int(np.count_nonzero(~np.isfinite(chunk).all(axis=1)))


def _raise_bad_rows(bad: int, n: int, what: str = "feature rows contain NaN or inf") -> None:
    if bad:
        raise ProjectionError(
            f"{bad} of {n} {what}; projections need finite values. Re-extract the "
            "features of those images, drop those rows, or try another method.")


def as_float32(X: Any) -> np.ndarray:
    """Convert ``X`` chunk by chunk to an in-memory float32 array; reject NaN/inf rows.

    A plain float32 ndarray is used as is; memmaps and other dtypes are copied
    chunk by chunk so no float64 intermediate of the whole matrix is built.
    """
    arr = _check_matrix(X)
    copy = not (type(arr) is np.ndarray and arr.dtype == np.float32)
    out = np.empty(arr.shape, dtype=np.float32) if copy else arr
    bad = 0
    for start, stop, chunk in _iter_float32(arr):
        if copy:
            out[start:stop] = chunk
        bad += _bad_rows(chunk)
    _raise_bad_rows(bad, arr.shape[0])
    return out


def _finite_output(emb: np.ndarray) -> np.ndarray:
    """``emb`` as contiguous float32, raising if the method produced NaN/inf."""
    out = np.ascontiguousarray(emb, dtype=np.float32)
    _raise_bad_rows(_bad_rows(out), len(out), "projected rows are NaN or inf")
    return out


def normalize_labels(y: Any, n_rows: int) -> np.ndarray:
    """Return ``y`` as int64 with every negative value mapped to -1 (unlabeled)."""
    if y is None:
        raise ProjectionError(
            "This projection needs labels y (one int per row, -1 for unlabeled); got None. "
            "Pass y, or use an unsupervised projection ('pca' or 'umap').")
    arr = np.asarray(y)
    integral = arr.dtype.kind in "iub" or (arr.dtype.kind == "f" and np.all(arr == np.round(arr)))
    if arr.shape != (n_rows,) or not integral:
        raise ProjectionError(
            f"Labels y must be {n_rows} integers (one per feature row); got shape {arr.shape}, "
            f"dtype {arr.dtype}. Map class names to ints, -1 for unlabeled.")
    labels = arr.astype(np.int64)
    labels[labels < 0] = -1
    return labels


def check_label_counts(labels: np.ndarray) -> None:
    """Require at least two classes with at least two labeled items each."""
    known = labels[labels >= 0]
    classes, counts = np.unique(known, return_counts=True)
    usable = int(np.count_nonzero(counts >= 2))
    if usable < 2:
        raise ProjectionError(
            f"Supervised projections need at least two labels with two items each; there are "
            f"{len(classes)} labeled class(es) and {len(known)} labeled item(s) ({usable} "
            "class(es) with two or more items). Label at least two items in each of two "
            "classes, or use 'pca' or 'umap'.")


# ------------------------------------------------------------------------- PCA


def _make_pca(n_components: int, n_rows: int, n_cols: int, random_state: Any) -> PCA:
    """A PCA whose solver is randomized for large inputs and exact for small ones."""
    large = n_rows * n_cols > RANDOMIZED_MIN_VALUES
    solver = "randomized" if large and n_components < 0.8 * min(n_rows, n_cols) else "full"
    return PCA(n_components=n_components, svd_solver=solver, random_state=random_state)


def _fit_reducer(Xf: np.ndarray, pca_dims: Any, random_state: Any, *,
                 need_more_rows: bool) -> PCA | None:
    """Fit the PCA pre-step when ``Xf`` has more columns than ``pca_dims`` (None: never).

    With ``need_more_rows`` it is also skipped unless there are more rows than
    ``pca_dims``; otherwise it keeps ``min(pca_dims, rows)`` dimensions.
    """
    if pca_dims is None:
        return None
    dims = int(_check_number("pca_dims", pca_dims, 2, integer=True, example="50, or None"))
    n, d = Xf.shape
    if d <= dims or (need_more_rows and n <= dims):
        return None
    logger.debug("PCA pre-step %d x %d -> %d dims", n, d, min(dims, n))
    return _make_pca(min(dims, n), n, d, random_state).fit(Xf)


def _reduce(pca: PCA | None, Xf: np.ndarray) -> np.ndarray:
    """Apply the optional PCA pre-step, returning float32."""
    return Xf if pca is None else np.asarray(pca.transform(Xf), dtype=np.float32)


# ------------------------------------------------------------------ projectors


class _Projector(TransformerMixin, BaseEstimator):
    """Shared fit/transform plumbing.

    Subclasses implement ``_fit(Xf, y)`` (learn from float32 rows, return their
    (n, 2) embedding) and ``_project(Xf)`` (map float32 rows with fitted state).
    """

    def fit(self, X: Any, y: Any = None) -> "_Projector":
        """Validate ``X`` (and ``y`` for supervised methods), fit, return self."""
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit and return the float32 (n, 2) coordinates of the training rows."""
        Xf = as_float32(X)
        self.n_features_in_ = Xf.shape[1]
        emb = _finite_output(self._fit(Xf, y))
        logger.info("%s fitted on %d x %d", type(self).__name__, *Xf.shape)
        return emb

    def transform(self, X: Any) -> np.ndarray:
        """Project rows of ``X`` (converted chunk by chunk) to float32 (n, 2)."""
        check_is_fitted(self)
        arr = _check_matrix(X)
        if arr.shape[1] != self.n_features_in_:
            raise ProjectionError(
                f"X has {arr.shape[1]} feature columns but the projector was fitted on "
                f"{self.n_features_in_}. Transform features of the same layer.")
        out = np.empty((arr.shape[0], 2), dtype=np.float32)
        bad = 0
        for start, stop, chunk in _iter_float32(arr):
            chunk_bad = _bad_rows(chunk)
            bad += chunk_bad
            if not chunk_bad:
                out[start:stop] = self._project(chunk)
        _raise_bad_rows(bad, arr.shape[0])
        return _finite_output(out)


class PCAProjector(_Projector):
    """Two chosen principal components: ``(0, 1)`` is PC1/PC2, ``(2, 3)`` PC3/PC4.

    The PCA fits ``n_components`` (default ``max(components) + 1``) components,
    with the randomized solver on large inputs.
    """

    def __init__(self, components=(0, 1), n_components=None, random_state=0):
        self.components = components
        self.n_components = n_components
        self.random_state = random_state

    def _fit(self, Xf: np.ndarray, y: Any) -> np.ndarray:
        comps = self.components
        if not (isinstance(comps, (tuple, list)) and len(comps) == 2 and comps[0] != comps[1]
                and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0
                        for c in comps)):
            raise ProjectionError(
                f"components must be two different non-negative ints; got {comps!r}. "
                "Use e.g. (0, 1) for PC1/PC2 or (2, 3) for PC3/PC4.")
        needed = max(comps) + 1
        n_comp = needed if self.n_components is None else self.n_components
        _check_number("n_components", n_comp, needed, integer=True, example=f"None ({needed})")
        n, d = Xf.shape
        if n_comp > min(n, d):
            raise ProjectionError(
                f"components={tuple(comps)} needs {n_comp} principal components but data of "
                f"{n} rows x {d} features allows at most {min(n, d)}. Choose lower "
                "components or project more rows.")
        self.pca_ = _make_pca(int(n_comp), n, d, self.random_state).fit(Xf)
        self.columns_ = [int(comps[0]), int(comps[1])]
        return self._project(Xf)

    def _project(self, Xf: np.ndarray) -> np.ndarray:
        return self.pca_.transform(Xf)[:, self.columns_]


class UMAPProjector(_Projector):
    """UMAP to 2-D, after a PCA to ``pca_dims`` when X is wider and taller than that.

    Deterministic for a fixed ``random_state`` (umap-learn then runs on one
    thread).  The PCA centers the data, so ``metric="cosine"`` then compares
    directions of centered, reduced features.
    """

    def __init__(self, n_neighbors=15, min_dist=0.1, metric="cosine", pca_dims=50,
                 random_state=0):
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.pca_dims = pca_dims
        self.random_state = random_state

    def _fit_labels(self, y: Any, n_rows: int) -> np.ndarray | None:
        """Labels handed to umap (None: unsupervised)."""
        return None

    def _umap_kwargs(self, n_rows: int) -> dict[str, Any]:
        nn = int(_check_number("n_neighbors", self.n_neighbors, 2, integer=True, example=15))
        min_dist = float(_check_number("min_dist", self.min_dist, 0, example=0.1))
        if nn >= n_rows:
            logger.warning("n_neighbors=%d >= %d rows; using %d", nn, n_rows, n_rows - 1)
        return dict(n_components=2, n_neighbors=min(nn, n_rows - 1), min_dist=min_dist,
                    metric=self.metric, random_state=self.random_state,
                    n_jobs=1 if self.random_state is not None else -1)

    def _fit(self, Xf: np.ndarray, y: Any) -> np.ndarray:
        n = Xf.shape[0]
        if n < MIN_UMAP_ROWS:
            raise ProjectionError(
                f"UMAP needs at least {MIN_UMAP_ROWS} rows; got {n}. Use 'pca' for so few images.")
        labels = self._fit_labels(y, n)
        kwargs = self._umap_kwargs(n)
        import umap  # deferred: importing umap-learn loads numba (seconds)

        self.pca_ = _fit_reducer(Xf, self.pca_dims, self.random_state, need_more_rows=True)
        self.umap_ = umap.UMAP(**kwargs)
        return self.umap_.fit_transform(_reduce(self.pca_, Xf), y=labels)

    def _project(self, Xf: np.ndarray) -> np.ndarray:
        return self.umap_.transform(_reduce(self.pca_, Xf))


class SupervisedUMAPProjector(UMAPProjector):
    """UMAP guided by labels ``y`` (-1 = unlabeled, handled by umap-learn natively).

    ``target_weight`` in [0, 1] balances data topology (0) against labels (1).
    """

    def __init__(self, n_neighbors=15, min_dist=0.1, metric="cosine", target_weight=0.5,
                 pca_dims=50, random_state=0):
        super().__init__(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                         pca_dims=pca_dims, random_state=random_state)
        self.target_weight = target_weight

    def _fit_labels(self, y: Any, n_rows: int) -> np.ndarray:
        labels = normalize_labels(y, n_rows)
        check_label_counts(labels)
        return labels

    def _umap_kwargs(self, n_rows: int) -> dict[str, Any]:
        weight = _check_number("target_weight", self.target_weight, 0, 1, example=0.5)
        return {**super()._umap_kwargs(n_rows), "target_weight": float(weight)}


class LDAProjector(_Projector):
    """Linear discriminant analysis fitted on the labeled rows (y >= 0).

    When X has more columns than ``pca_dims`` a PCA fitted on all rows reduces
    it first.  With two classes LDA yields one axis; the second axis is then the
    first principal component of the data with the LDA direction removed.
    """

    def __init__(self, shrinkage="auto", pca_dims=100, random_state=0):
        self.shrinkage = shrinkage
        self.pca_dims = pca_dims
        self.random_state = random_state

    def _fit(self, Xf: np.ndarray, y: Any) -> np.ndarray:
        labels = normalize_labels(y, Xf.shape[0])
        check_label_counts(labels)
        if self.shrinkage is not None and not (isinstance(self.shrinkage, str)
                                               and self.shrinkage == "auto"):
            _check_number("shrinkage", self.shrinkage, 0, 1, example="'auto' or None")
        self.pca_ = _fit_reducer(Xf, self.pca_dims, self.random_state, need_more_rows=False)
        Z = _reduce(self.pca_, Xf)
        known = labels >= 0
        self.classes_ = np.unique(labels[known])
        n_out = min(2, len(self.classes_) - 1)
        self.lda_ = LinearDiscriminantAnalysis(
            solver="eigen", shrinkage=self.shrinkage, n_components=n_out,
        ).fit(Z[known], labels[known])
        self.second_center_, self.second_axis_ = (
            _residual_axis(Z, self.lda_.scalings_[:, 0]) if n_out == 1 else (None, None))
        return self._project_reduced(Z)

    def _project_reduced(self, Z: np.ndarray) -> np.ndarray:
        first = self.lda_.transform(Z)
        if self.second_axis_ is None:
            return first[:, :2]
        return np.column_stack([first[:, 0], (Z - self.second_center_) @ self.second_axis_])

    def _project(self, Xf: np.ndarray) -> np.ndarray:
        return self._project_reduced(_reduce(self.pca_, Xf))


def _residual_axis(Z: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and first principal axis of ``Z`` after removing ``direction``.

    The residual covariance is ``P C P`` with ``P = I - w w^T``; its top
    eigenvector (orthogonal to ``w``; sign fixed so its largest entry is
    positive) is the axis.
    """
    w = np.asarray(direction, dtype=np.float64)
    w = w / np.linalg.norm(w)
    center = Z.mean(axis=0, dtype=np.float64)
    Zc = np.asarray(Z, dtype=np.float64) - center
    proj = np.eye(len(w)) - np.outer(w, w)
    _, vecs = np.linalg.eigh(proj @ (Zc.T @ Zc) @ proj)
    axis = vecs[:, -1]
    if axis[np.argmax(np.abs(axis))] < 0:
        axis = -axis
    return center.astype(np.float32), axis.astype(np.float32)


# ------------------------------------------------------------ registry & cache

PROJECTIONS: dict[str, type] = {
    "pca": PCAProjector,
    "umap": UMAPProjector,
    "lda": LDAProjector,
    "supervised_umap": SupervisedUMAPProjector,
}
#: projections whose ``fit`` needs labels ``y``.
SUPERVISED = frozenset({"lda", "supervised_umap"})


def create_projector(name: str, **params: Any) -> _Projector:
    """Instantiate the projector registered as ``name`` with ``params``."""
    cls = PROJECTIONS.get(name)
    if cls is None:
        raise ProjectionError(
            f"Unknown projection {name!r}. Choose one of: {', '.join(PROJECTIONS)}.")
    allowed = cls._get_param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ProjectionError(
            f"Unknown parameter(s) {unknown} for projection {name!r}. Allowed: "
            f"{', '.join(allowed)}.")
    return cls(**params)


def projection_cache_path(cache_dir: str | os.PathLike, key: str, method: str,
                          params: Mapping[str, Any], shape: tuple[int, int],
                          y: Any = None) -> Path:
    """Cache file for a projection; ``params`` should be the full parameter set."""
    record = {
        "format": CACHE_FORMAT, "key": key, "method": method, "shape": list(shape),
        "params": {k: params[k] for k in sorted(params)},
        # the labels version: any label change gives another file
        "labels": (hashlib.sha256(normalize_labels(y, shape[0]).tobytes()).hexdigest()
                   if method in SUPERVISED else None),
    }
    text = json.dumps(record, sort_keys=True,
                      default=lambda v: v.item() if isinstance(v, np.generic) else repr(v))
    return Path(cache_dir) / f"{method}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"


def _load_cached(path: Path, n_rows: int) -> np.ndarray | None:
    """Cached coordinates at ``path``, or None when absent or unusable."""
    try:
        emb = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable projection cache %s: %s", path, exc)
        return None
    if emb.shape == (n_rows, 2) and np.isfinite(emb).all():
        return emb.astype(np.float32, copy=False)
    logger.warning("Ignoring projection cache %s of shape %s", path, emb.shape)
    return None


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` atomically (the folder is created when needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, arr)


def cached_projection(X: Any, method: str, params: Mapping[str, Any] | None, *,
                      cache_dir: str | os.PathLike, key: str, y: Any = None) -> np.ndarray:
    """``create_projector(method, **params).fit_transform(X, y)``, cached on disk.

    The file name hashes ``key``, ``method``, the projector's full parameters
    (defaults included, so ``{}`` and the spelled-out defaults share a file),
    X's shape and, for supervised methods, a hash of the labels.
    X's values are NOT hashed: ``key`` must identify the feature file, the
    layer AND a version of the features (e.g. an extraction id or the file's
    mtime and size) so that re-extracted features miss the cache.  Files are
    ``.npy`` in ``cache_dir``, written atomically; unreadable ones are redone.
    """
    projector = create_projector(method, **dict(params or {}))
    arr = _check_matrix(X)
    labels = y if method in SUPERVISED else None
    path = projection_cache_path(cache_dir, key, method, projector.get_params(), arr.shape,
                                 labels)
    emb = _load_cached(path, arr.shape[0])
    if emb is not None:
        logger.debug("Projection cache hit %s", path)
        return emb
    with _computing(path):     # pages asking at once for one projection: the first computes, the others read it
        emb = _load_cached(path, arr.shape[0])
        if emb is None:
            emb = projector.fit_transform(arr, labels)
            _save_atomic(path, emb)
            logger.info("Projection %s cached at %s", method, path)
    return emb


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _computing(path: Path) -> threading.Lock:
    """This process's lock for computing the projection cached at `path` (a served app computes a UMAP in a
    background thread per page: twenty pages pressing the same key would otherwise compute it twenty times)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(str(path), threading.Lock())
