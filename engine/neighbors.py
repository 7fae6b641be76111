"""Find images similar to a set of seed images by cosine similarity of features.

:func:`find_similar` scans a feature matrix (often a float16 ``np.memmap`` of up
to 100k x 6400 values) chunk by chunk: each chunk is converted to float32 and
multiplied with the normalized seed vectors, so memory stays bounded.
:class:`SimilarityIndex` pre-normalizes the rows once for repeated queries.
Both share one scoring kernel and one top-k selection.

Scores: ``aggregate="mean"`` is the cosine to the mean of the L2-normalized
seed vectors; ``"max"`` is the highest cosine to any single seed.  All-zero
rows score 0 (never NaN); rows holding NaN/inf are never returned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._checks import feature_matrix
from .errors import NeighborsError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

AGGREGATES = ("mean", "max")
DEFAULT_CHUNK_ROWS = 16384
#: a chunk never holds more than this many float32 values (16 MiB).
MAX_CHUNK_VALUES = 1 << 22
#: chunks are converted and scored by this many threads (numpy releases the GIL).
MAX_WORKERS = max(1, min(8, os.cpu_count() or 1))
#: above this many values SimilarityIndex stores its rows as float16.
HALF_PRECISION_VALUES = 200_000_000

Seeds = Iterable[int] | np.ndarray
Exclude = Iterable[int] | np.ndarray | None


# -------------------------------------------------------------------- checks


def _check_features(features: Any) -> np.ndarray:
    """Return ``features`` as a 2-D numeric ndarray (memmaps stay memmaps)."""
    return feature_matrix(features, NeighborsError)


def _check_aggregate(aggregate: str) -> str:
    if aggregate not in AGGREGATES:
        raise NeighborsError(
            f"Unknown aggregate {aggregate!r}. Choose one of: {', '.join(AGGREGATES)}."
        )
    return aggregate


def _check_chunk_rows(chunk_rows: Any) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) \
            or chunk_rows < 1:
        raise NeighborsError(
            f"chunk_rows must be a positive int; got {chunk_rows!r}. Use e.g. 16384."
        )
    return int(chunk_rows)


def _as_indices(values: Any, n_rows: int, what: str) -> np.ndarray:
    """Sorted unique int64 row indices from indices or a boolean mask of length n."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    arr = values if isinstance(values, np.ndarray) else np.asarray(list(values))
    if arr.dtype == bool:
        if arr.shape != (n_rows,):
            raise NeighborsError(
                f"A boolean {what} mask must have shape ({n_rows},); got {arr.shape}. "
                "Pass one flag per feature row, or row indices."
            )
        return np.flatnonzero(arr).astype(np.int64)
    arr = arr.reshape(-1)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise NeighborsError(
            f"{what} must be integer row indices or a boolean mask; got dtype "
            f"{arr.dtype}. Pass row numbers of the feature matrix."
        )
    bad = np.unique(arr[(arr < 0) | (arr >= n_rows)])
    if bad.size:
        raise NeighborsError(
            f"{what} index(es) {bad[:10].tolist()} out of range: valid rows are "
            f"0..{n_rows - 1} ({n_rows} rows). Pass row numbers of this feature matrix."
        )
    return np.unique(arr.astype(np.int64))


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise NeighborsError(f"k must be an int >= 0; got {k!r}. Use e.g. 50.")
    return int(k)


# -------------------------------------------------------------------- kernel


def _row_norms(block: np.ndarray) -> np.ndarray:
    """L2 norm of each row of a float32 block."""
    return np.sqrt(np.einsum("ij,ij->i", block, block))


def normalize_rows(block: np.ndarray) -> np.ndarray:
    """L2-normalize float32 rows in place; zero rows stay zero, NaN/inf rows get NaN."""
    norms = _row_norms(block)[:, None]
    with np.errstate(invalid="ignore"):  # inf / inf in non-finite rows -> NaN
        np.divide(block, norms, out=block, where=norms > 0)
    return block


def _query_matrix(seed_rows: np.ndarray, seed_idx: np.ndarray, aggregate: str) -> np.ndarray:
    """(d, m) float32 matrix of normalized query vectors (m = 1 for "mean")."""
    rows = normalize_rows(np.array(seed_rows, dtype=np.float32))
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise NeighborsError(
            f"Seed row(s) {seed_idx[bad][:10].tolist()} contain NaN or inf features; "
            "their similarity is undefined. Choose other seeds or re-extract them."
        )
    if aggregate == "max":
        return np.ascontiguousarray(rows.T)
    mean = rows.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm > 0:
        mean /= norm
    return mean[:, None]


def _chunk_step(chunk_rows: int, width: int) -> int:
    """Rows per chunk: at most ``chunk_rows`` and at most MAX_CHUNK_VALUES values."""
    return max(1, min(chunk_rows, MAX_CHUNK_VALUES // max(width, 1)))


def _for_each_chunk(n_rows: int, step: int, work: Callable[[int, int], None], *,
                    threaded: bool) -> None:
    """Call ``work(start, stop)`` for every chunk, on up to MAX_WORKERS threads.

    Threads pay off when chunks need a dtype conversion (numpy releases the
    GIL); for float32 data one thread lets BLAS use all cores by itself.
    """
    starts = range(0, n_rows, step)
    workers = min(MAX_WORKERS, len(starts)) if threaded else 1
    if workers <= 1:
        for start in starts:
            work(start, min(n_rows, start + step))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, s, min(n_rows, s + step)) for s in starts]
        for future in futures:
            future.result()  # re-raises a worker's exception


def _score_rows(source: np.ndarray, queries: np.ndarray, *, chunk_rows: int,
                normalized: bool) -> np.ndarray:
    """Cosine score of every row of ``source`` against ``queries`` (max over columns).

    ``normalized`` says the rows of ``source`` are already unit (or zero)
    length; otherwise each float32 chunk's scores are divided by its row norms.
    Non-finite rows get NaN.
    """
    n, d = source.shape
    scores = np.empty(n, dtype=np.float32)
    threaded = source.dtype != np.float32

    def work(start: int, stop: int) -> None:
        block = np.asarray(source[start:stop], dtype=np.float32)
        if queries.shape[1] == 1:  # threaded: einsum, so no BLAS threads oversubscribe
            q = queries[:, 0]
            best = np.einsum("ij,j->i", block, q) if threaded else block @ q
        else:
            sims = block @ queries
            best = sims[:, 0] if sims.shape[1] == 1 else sims.max(axis=1)
        if not normalized:
            norms = _row_norms(block)
            norms[norms == 0] = 1.0  # zero rows have zero dot products -> score 0
            with np.errstate(invalid="ignore"):  # non-finite rows -> NaN
                best = best / norms
            best[~np.isfinite(norms)] = np.nan
        scores[start:stop] = best

    step = _chunk_step(chunk_rows, max(d, queries.shape[1]))
    _for_each_chunk(n, step, work, threaded=threaded)
    return scores


def _top_k(scores: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices/scores of the k best non-excluded rows: descending, ties by index."""
    candidates = np.flatnonzero(~excluded)
    values = scores[candidates]
    k = min(k, len(candidates))
    if k == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if k < len(values):
        threshold = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= threshold  # keeps every tie at the threshold
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order].astype(np.int64), values[order].astype(np.float32)


def _exclusion_mask(n_rows: int, exclude: Exclude, seed_idx: np.ndarray | None) -> np.ndarray:
    """Boolean mask of rows never returned."""
    mask = np.zeros(n_rows, dtype=bool)
    if exclude is not None:
        mask[_as_indices(exclude, n_rows, "exclude")] = True
    if seed_idx is not None:
        mask[seed_idx] = True
    return mask


def _run_query(source: np.ndarray, seeds: Seeds, *, k: int, exclude: Exclude,
               exclude_seeds: bool, aggregate: str, chunk_rows: int,
               normalized: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shared body of :func:`find_similar` and :meth:`SimilarityIndex.query`."""
    n = source.shape[0]
    k = _check_k(k)
    aggregate = _check_aggregate(aggregate)
    chunk_rows = _check_chunk_rows(chunk_rows)
    seed_idx = _as_indices(seeds, n, "seed")
    if seed_idx.size == 0:
        raise NeighborsError(
            "No seed rows given: similarity search needs at least one seed row index "
            f"(0..{n - 1}). Select one or more images first."
        )
    queries = _query_matrix(source[seed_idx], seed_idx, aggregate)
    scores = _score_rows(source, queries, chunk_rows=chunk_rows, normalized=normalized)
    excluded = _exclusion_mask(n, exclude, seed_idx if exclude_seeds else None)
    bad = ~np.isfinite(scores)
    if bad.any():
        logger.warning("%d feature rows hold NaN/inf and are left out", int(bad.sum()))
        excluded |= bad
    return _top_k(scores, k, excluded)


# ------------------------------------------------------------------ public API


def find_similar(features: Any, seeds: Seeds, *, k: int = 50, exclude: Exclude = None,
                 exclude_seeds: bool = True, aggregate: str = "mean",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Rank rows of ``features`` by cosine similarity to the ``seeds`` rows.

    Args:
        features: (n, d) array, e.g. a float16 memmap; read in float32 chunks.
        seeds: row indices (or a boolean mask) of the seed images.
        k: at most this many results.
        exclude: row indices or a boolean mask of rows to leave out.
        exclude_seeds: leave the seeds themselves out (default).
        aggregate: "mean" (cosine to the normalized mean seed) or "max".
        chunk_rows: rows per chunk (upper bound; chunks also hold at most
            ``MAX_CHUNK_VALUES`` values).

    Returns:
        ``(indices int64, scores float32)``, descending score, ties by lower index.

    Raises:
        NeighborsError: empty or out-of-range seeds, bad exclude, unknown aggregate.
    """
    source = _check_features(features)
    return _run_query(source, seeds, k=k, exclude=exclude, exclude_seeds=exclude_seeds,
                      aggregate=aggregate, chunk_rows=chunk_rows, normalized=False)


class SimilarityIndex:
    """Pre-normalized feature rows for repeated :meth:`query` calls.

    Rows are stored L2-normalized as float32, or as float16 when the matrix has
    more than ``max_float32_values`` values (to bound memory).  Rows holding
    NaN/inf are stored as NaN and never returned.
    """

    def __init__(self, features: Any, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 max_float32_values: int = HALF_PRECISION_VALUES):
        source = _check_features(features)
        self.chunk_rows = _check_chunk_rows(chunk_rows)
        n, d = source.shape
        dtype = np.float16 if n * d > max_float32_values else np.float32
        self.rows = np.empty((n, d), dtype=dtype)

        def work(start: int, stop: int) -> None:
            block = np.array(source[start:stop], dtype=np.float32)
            self.rows[start:stop] = normalize_rows(block)

        _for_each_chunk(n, _chunk_step(self.chunk_rows, d), work, threaded=True)
        logger.info("SimilarityIndex of %d x %d rows stored as %s", n, d, np.dtype(dtype))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, features) of the indexed matrix."""
        return self.rows.shape

    def query(self, seeds: Seeds, *, k: int = 50, exclude: Exclude = None,
              exclude_seeds: bool = True, aggregate: str = "mean",
              ) -> tuple[np.ndarray, np.ndarray]:
        """Same arguments, semantics and result as :func:`find_similar`."""
        return _run_query(self.rows, seeds, k=k, exclude=exclude,
                          exclude_seeds=exclude_seeds, aggregate=aggregate,
                          chunk_rows=self.chunk_rows, normalized=True)


def knn_accuracy(features: Any, labels: Any, *, k: int = 10, chunk_rows: int = 1024) -> float:
    """Leave-one-out k-nearest-neighbour accuracy by cosine similarity (majority vote of k neighbours).

    How well a layer's feature space groups known classes: the engine's measure of which
    layer shows what. Rows with a negative label are neither scored nor voted with.
    """
    labels = np.asarray(labels)
    keep = np.flatnonzero(labels >= 0)
    rows = normalize_rows(np.asarray(_check_features(features)[keep], dtype=np.float32))
    labels = labels[keep]
    k = min(_check_k(k), len(rows) - 1)
    if k < 1:
        raise NeighborsError(f"knn_accuracy needs at least two labeled rows, got {len(rows)}")
    hits = 0
    for start in range(0, len(rows), chunk_rows):
        block = rows[start:start + chunk_rows] @ rows.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not its own neighbour
        nearest = np.argpartition(-block, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(block), labels.max() + 1), dtype=np.int32)
        np.add.at(votes, (np.repeat(np.arange(len(block)), k), labels[nearest].ravel()), 1)
        hits += int((votes.argmax(1) == labels[start:start + len(block)]).sum())
    return hits / len(rows)
