"""Duplicates: exact copies by content hash, near copies by a cheap signature confirmed pixel by pixel. No UI imports.

Two stages, because no single similarity tells copies from look-alikes in every set:

1. Candidates (`candidate_pairs`): each image's few most similar images by an 8 x 8 grey signature
   with an early CNN layer's features (`duplicate_rows`), ranked twice: as they are, and with the
   smaller image of each pair (<= 64 pixels a side) also cropped or shifted by a pixel, since that
   moves a 28-pixel digit's signature more than the difference between two handwritten 1s. A
   planted copy was always first in one of the two rankings (bench/clean.py), but no similarity
   of this kind tells a copy from a look-alike: among the 5,000 demo digits, hundreds of different
   1s score 0.99 (the Duplicates queue listed 645 of them at a cosine of 0.98).
2. Confirmation (`aligned_differences`): each candidate pair is compared on the images' own grey
   pixels (`thumbnail`: the image itself up to 32 pixels a side), aligned by a shift of up to a
   pixel or, when one is a slightly cropped version of the other, by sliding it over the larger.
   Both are standardized and blurred a little, and the peak of their difference is the pair's
   difference: resampling, JPEG and brightness leave a faint, scattered residual; a different
   picture leaves a strong local one (a stroke or an edge elsewhere). How much still counts as a
   copy comes from the set itself (`CopyLimit`): a fraction of how much a typical image differs
   from its most similar other image, and never more than a ceiling. An image smaller than its
   partners keeps only the best of them and its copies: shrunk to 14 pixels, a 1 matches other 1s.

Pairs are joined into groups (connected components) with a suggestion of which image to keep.
The pixel machinery is `engine._pixels`. Cleaners follow the scikit-learn contract (`__init__`
stores arguments, `fit` returns self, fitted state ends in `_`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._pixels import VARIANTS, aligned_differences, signatures, thumbnail
from .errors import InputError
from .neighbors import normalize_rows

__all__ = ["COPY_DIFFERENCE_RATIO", "DEFAULT_DUPLICATE_THRESHOLD", "DUPLICATE_LAYERS", "DUPLICATE_NEIGHBORS",
           "DUPLICATE_WEIGHTS", "MAX_PIXEL_DIFFERENCE", "CopyLimit", "DuplicateFinder", "aligned_differences",
           "candidate_pairs", "duplicate_groups", "duplicate_rows", "exact_duplicate_pairs", "near_duplicate_pairs",
           "signatures", "suggest_keep", "thumbnail"]

#: the similarity (`candidate_pairs`: `duplicate_rows`' weighted mean of two cosines, the larger with a
#: small image cropped or shifted by a pixel) from which two images are compared pixel by pixel. Planted
#: copies (resized 0.5x to 3x, JPEG quality 30 to 90, shifted or cropped by a pixel, brightness +-15%)
#: scored >= 0.99 on the digits demo and on cifar10 (bench/clean.py). Without thumbnails
#: (`DuplicateFinder.fit`) it is the near-duplicate threshold itself.
DEFAULT_DUPLICATE_THRESHOLD = 0.85
#: candidates per image, from each of the two rankings (plain, and cropped or shifted by a pixel)
DUPLICATE_NEIGHBORS = 3
#: the layer and pooling whose features join the pixel signature: an early layer (later layers make any
#: two photos of one kind alike, and lose most when a copy was shrunk)
DUPLICATE_LAYERS = {"mobilenet_v2": ("features.3", "grid")}
#: weights of the pixel signature and the CNN features in the candidate similarity. The signature
#: carries it: shrinking a 32-pixel photo to 16 pixels blurs away the texture the CNN sees (its cosine
#: to the original fell to 0.88) while the 8 x 8 layout stays (>= 0.994).
DUPLICATE_WEIGHTS = (0.9, 0.1)
#: the most an aligned pixel difference (in grey-level standard deviations, see `aligned_differences`)
#: may be for a copy, whatever the set. Planted copies (7 seeded sets of 50, bench/clean.py's kinds)
#: differed by <= 0.38 on the digits demo and, but for 1 in 350 (brightness +15% that clipped a
#: white blaze: 0.65), by <= 0.50 on cifar10; different images by >= 0.71 (two handwritten 1s) and
#: >= 0.97 (cifar10)
MAX_PIXEL_DIFFERENCE = 0.6
#: a copy differs from its original by at most this fraction of the median difference between an
#: image and its most similar other image in the set (digits demo 2.02, cifar10 2.27): a set of
#: look-alikes (video frames, renders) gets a stricter limit
COPY_DIFFERENCE_RATIO = 0.26
MAX_BLOCK_VALUES = 1 << 24    # similarity scores held at once by the all-pairs search (64 MiB of float32)
SMALL_IMAGE_EDGE = 64  # images at most this many pixels a side also compete cropped or shifted by a pixel


def duplicate_rows(matrices: Sequence, weights: Sequence[float] | None = None) -> np.ndarray:
    """Unit rows whose dot products are the weighted mean of the cosine similarities in each matrix.

    Each matrix's rows are L2-normalized and scaled by sqrt(weight) side by side (weights sum to
    1; equal by default); rows of zeros or NaN in one matrix add 0 for it. The candidate
    similarity is `duplicate_rows([signatures, features], DUPLICATE_WEIGHTS)`: the pixel
    signature (the layout of light and dark, which resizing and JPEG keep almost exactly) with an
    early CNN layer's features (texture).
    """
    if not len(matrices):
        raise InputError("duplicate_rows needs at least one (rows, dims) matrix.")
    weights = np.full(len(matrices), 1 / len(matrices)) if weights is None else np.asarray(weights, dtype=float)
    if len(weights) != len(matrices) or (weights < 0).any() or not np.isclose(weights.sum(), 1):
        raise InputError(f"weights {weights.tolist()} must give one non-negative weight per matrix "
                         f"({len(matrices)}), summing to 1.")
    n = len(matrices[0])
    if any(len(matrix) != n for matrix in matrices):
        raise InputError(f"Matrices for duplicates must have one row per image; got {[len(m) for m in matrices]} rows.")
    return np.concatenate([_unit_rows(matrix) * np.sqrt(w) for matrix, w in zip(matrices, weights)], axis=1)


class CopyLimit:
    """The largest aligned pixel difference that still counts as a copy in this set.

    fit(nearest): each image's difference to its nearest candidate (NaN where it has none). The
    limit is `ratio` times their median, the difference a typical image has to its most alike
    neighbour, and at most `ceiling`; with fewer than `min_rows` values it is `ceiling`. A set of
    look-alikes (digits, video frames) gets a strict limit; a set of varied photos the ceiling.
    Fitted: `limit_`, `typical_` (the median, NaN when too few), `n_rows_` (values used).
    """

    def __init__(self, ratio: float = COPY_DIFFERENCE_RATIO, ceiling: float = MAX_PIXEL_DIFFERENCE,
                 min_rows: int = 20):
        self.ratio = ratio
        self.ceiling = ceiling
        self.min_rows = min_rows

    def fit(self, nearest) -> CopyLimit:
        if not (self.ratio > 0 and self.ceiling > 0):
            raise InputError(f"ratio={self.ratio!r} and ceiling={self.ceiling!r} must both be positive, e.g. "
                             f"{COPY_DIFFERENCE_RATIO} and {MAX_PIXEL_DIFFERENCE}.")
        values = np.asarray(nearest, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        self.n_rows_ = len(values)
        self.typical_ = float(np.median(values)) if len(values) >= self.min_rows else float("nan")
        self.limit_ = self.ceiling if np.isnan(self.typical_) else min(self.ceiling, self.ratio * self.typical_)
        return self


class DuplicateFinder:
    """Exact duplicates (same content hash) and near-duplicates, grouped.

    fit(features, hashes=None, thumbnails=None, sizes=None):
    - features (n, d): without thumbnails, rows whose cosine similarity >= `threshold` makes a
      near-duplicate pair (rows of zeros or NaN never pair); with thumbnails, CNN features (or None)
      that join the thumbnails' signatures in `candidate_pairs` (DUPLICATE_WEIGHTS).
    - hashes (n,): content hashes or None per row, for the exact pairs.
    - thumbnails (n,): grey uint8 arrays (`thumbnail`; None where unreadable). Each candidate pair
      (`candidate_pairs`, `neighbors` per image and ranking) with similarity >= `threshold` is
      compared pixel by pixel (`aligned_differences`), and so is each image's most similar
      candidate, whatever its similarity: how much those differ calibrates the set's
      `CopyLimit(difference_ratio, max_difference)`. A pair within the limit is a near-duplicate.
    - sizes (n, 2): the originals' (width, height), when thumbnails were shrunk (default: the
      thumbnails' own).
    Fitted: `pairs_` (a, b, similarity, difference, exact) with a < b, sorted by similarity
    descending (difference NaN for exact pairs and without thumbnails); `groups_` (n,) group id per
    row, -1 for rows in no pair (ids dense, in order of the best pair of each group). With
    thumbnails also `candidates_` (every compared pair, same columns less exact),
    `nearest_difference_` (n,) (each image's difference to its most similar candidate, NaN where it
    has none) and `limit_` (the fitted CopyLimit).
    """

    def __init__(self, threshold: float = DEFAULT_DUPLICATE_THRESHOLD, neighbors: int = DUPLICATE_NEIGHBORS,
                 max_difference: float = MAX_PIXEL_DIFFERENCE, difference_ratio: float = COPY_DIFFERENCE_RATIO,
                 chunk_rows: int = 2048):
        self.threshold = threshold
        self.neighbors = neighbors
        self.max_difference = max_difference
        self.difference_ratio = difference_ratio
        self.chunk_rows = chunk_rows

    def fit(self, features, hashes: Sequence[str | None] | None = None, thumbnails: Sequence | None = None,
            sizes=None) -> DuplicateFinder:
        import pandas as pd
        if not 0 < self.threshold <= 1:
            raise InputError(f"threshold={self.threshold!r} must be a cosine similarity in (0, 1], e.g. "
                             f"{DEFAULT_DUPLICATE_THRESHOLD}.")
        if thumbnails is None:
            if features is None:
                raise InputError("DuplicateFinder.fit needs features, thumbnails or both; got neither.")
            n = len(features)
            a, b, sim = near_duplicate_pairs(features, self.threshold, chunk_rows=self.chunk_rows)
            table = pd.DataFrame({"a": a, "b": b, "similarity": sim.astype(np.float64), "difference": np.nan})
        else:
            n = len(thumbnails)
            table = self._confirmed(features, thumbnails, sizes)
        table["exact"] = False
        exact = exact_duplicate_pairs(hashes) if hashes is not None else np.empty((0, 2), np.int64)
        if len(exact):
            extra = pd.DataFrame({"a": exact[:, 0], "b": exact[:, 1], "similarity": 1.0, "difference": np.nan,
                                  "exact": True})
            table = pd.concat([extra, table]).drop_duplicates(["a", "b"], keep="first")
        self.pairs_ = table.sort_values(["similarity", "a", "b"], ascending=[False, True, True],
                                        kind="stable").reset_index(drop=True)
        self.groups_ = duplicate_groups(n, self.pairs_["a"].to_numpy(), self.pairs_["b"].to_numpy())
        return self

    def _confirmed(self, features, thumbnails: Sequence, sizes):
        """The candidate pairs that pass the pixel check (and the fitted state that says why)."""
        import pandas as pd
        if features is not None and len(features) != len(thumbnails):
            raise InputError(f"Got {len(thumbnails)} thumbnails for {len(features)} feature rows; give one per row "
                             f"(None where the image is unreadable).")
        if int(self.neighbors) < 1:
            raise InputError(f"neighbors={self.neighbors!r} must be a positive number of candidates per image, e.g. "
                             f"{DUPLICATE_NEIGHBORS}.")
        n = len(thumbnails)
        a, b, sim = candidate_pairs(thumbnails, features, int(self.neighbors), sizes=sizes, chunk_rows=self.chunk_rows)
        nearest = _nearest_pair(n, a, b, sim)        # each image's most similar one: the set's calibration
        compared = sim >= self.threshold
        compared[nearest[nearest >= 0]] = True
        difference = np.full(len(a), np.inf, dtype=np.float32)
        difference[compared] = aligned_differences(thumbnails, a[compared], b[compared], sizes=sizes)
        self.candidates_ = pd.DataFrame({"a": a, "b": b, "similarity": sim.astype(np.float64),
                                         "difference": difference.astype(np.float64)})[compared]
        self.nearest_difference_ = np.full(n, np.nan)
        known = np.flatnonzero(nearest >= 0)
        self.nearest_difference_[known] = difference[nearest[known]]
        self.nearest_difference_[~np.isfinite(self.nearest_difference_)] = np.nan
        self.limit_ = CopyLimit(self.difference_ratio, self.max_difference).fit(self.nearest_difference_)
        near = self.candidates_[(self.candidates_["similarity"] >= self.threshold)
                                & (self.candidates_["difference"] <= self.limit_.limit_)]
        keep = _one_picture(near, thumbnails, sizes, self.limit_.limit_)
        return near[keep].reset_index(drop=True)


def _nearest_pair(n: int, a: np.ndarray, b: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(n,) for each row the index of its most similar pair among (a, b, similarity); -1 for rows in none."""
    rows = np.concatenate([a, b])
    index = np.tile(np.arange(len(a)), 2)
    order = np.lexsort((-np.tile(similarity, 2), rows))            # by row, the most similar first
    rows, index = rows[order], index[order]
    first = np.r_[True, rows[1:] != rows[:-1]][:len(rows)]
    nearest = np.full(n, -1, dtype=np.int64)
    nearest[rows[first]] = index[first]
    return nearest


def _one_picture(near, thumbnails: Sequence, sizes, limit: float) -> np.ndarray:
    """(len(near),) bool: False for a pair whose smaller image also matches a better partner of a different picture.

    Compared at the smaller image's size, a shrunk copy of a handwritten 1 is within the limit of
    other 1s too. So an image that is smaller than several partners within the limit keeps only its
    best partner and those within the limit of that one (other copies of the same picture).
    """
    a, b, difference = (near[column].to_numpy() for column in ("a", "b", "difference"))
    side = np.array([0 if t is None else min(np.shape(t)) for t in thumbnails])
    keep = np.ones(len(a), dtype=bool)
    smaller = np.where(side[a] < side[b], a, np.where(side[b] < side[a], b, -1))   # -1: the same size
    for row in np.unique(smaller[smaller >= 0]):
        mine = np.flatnonzero(smaller == row)
        if len(mine) < 2:
            continue
        partners = np.where(a[mine] == row, b[mine], a[mine])
        best = partners[np.argmin(difference[mine])]
        others = partners != best
        same = aligned_differences(thumbnails, np.full(others.sum(), best), partners[others], sizes=sizes) <= limit
        keep[mine[others]] = same
    return keep


def exact_duplicate_pairs(hashes: Sequence[str | None]) -> np.ndarray:
    """(m, 2) row pairs (a < b) with the same non-empty hash: each row paired with the first of its hash."""
    first: dict[str, int] = {}
    pairs = []
    for row, digest in enumerate(hashes):
        if not digest:
            continue
        if digest in first:
            pairs.append((first[digest], row))
        else:
            first[digest] = row
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def near_duplicate_pairs(features, threshold: float, *, chunk_rows: int = 2048):
    """(a, b, similarity) of every row pair a < b whose cosine similarity is >= threshold.

    Exact all-pairs search in chunks of normalized float32 rows; a chunk's scores hold at most
    `chunk_rows` x n and at most MAX_BLOCK_VALUES values.
    """
    rows = _unit_rows(features)
    found = []
    for start, stop in _chunks(len(rows), chunk_rows):
        block = rows[start:stop] @ rows[start:].T                     # only pairs with b >= this chunk
        block[np.tril_indices(len(block), 0, block.shape[1])] = -np.inf   # b > a
        a, b = np.nonzero(block >= threshold)
        found.append((a + start, b + start, block[a, b]))
    return _concatenated(found)


def candidate_pairs(thumbnails: Sequence, features, neighbors: int, *, sizes=None, chunk_rows: int = 2048):
    """(a, b, similarity) with a < b: each image's `neighbors` most similar images, twice ranked.

    Similarity: as `duplicate_rows([signatures, features], DUPLICATE_WEIGHTS)` (the signatures
    alone when features is None). First ranking: that similarity. Second: the larger of it and the
    similarity of any of the image's VARIANTS (cropped or shifted by a pixel, `signatures`) to the
    other, for images at most SMALL_IMAGE_EDGE a side (by `sizes`, else the thumbnail). The pairs'
    similarity is this larger one.
    """
    weight = DUPLICATE_WEIGHTS[0] if features is not None else 1.0
    plain = _unit_rows(signatures(thumbnails)) * np.sqrt(weight)
    extra = None if features is None else _unit_rows(features) * np.sqrt(1 - weight)
    shapes = [(0, 0) if t is None else (t.shape[1], t.shape[0]) for t in thumbnails]
    originals = np.asarray(shapes if sizes is None else sizes, dtype=np.float64).reshape(-1, 2)
    small = np.flatnonzero(originals.max(1) <= SMALL_IMAGE_EDGE)
    varied = [_unit_rows(signatures([thumbnails[row] for row in small], variant)) * np.sqrt(weight)
              for variant in VARIANTS]
    position = np.full(len(plain), -1)
    position[small] = np.arange(len(small))
    found = []
    for start, stop in _chunks(len(plain), chunk_rows):
        similar = plain[start:stop] @ plain.T
        best = similar.copy()
        mine = np.flatnonzero(position[start:stop] >= 0)           # this chunk's small images
        for variant in varied:
            if len(mine) == stop - start:                            # all small (a set of tiny images): in place
                np.maximum(best, variant[position[start:stop]] @ plain.T, out=best)
            elif len(mine):
                best[mine] = np.maximum(best[mine], variant[position[start + mine]] @ plain.T)
        if extra is not None:
            texture = extra[start:stop] @ extra.T
            similar += texture
            best += texture
        local = np.arange(stop - start)
        similar[local, local + start] = best[local, local + start] = -np.inf   # not itself
        for ranking in (similar, best):
            a, b = _top(ranking, neighbors)
            found.append((a + start, b, best[a, b]))
    a, b, sim = _concatenated(found)
    order = np.argsort(-sim, kind="stable")                          # each pair once, at its best
    low, high, sim = np.minimum(a, b)[order], np.maximum(a, b)[order], sim[order]
    _, first = np.unique(low * max(len(plain), 1) + high, return_index=True)
    return low[first], high[first], sim[first]


def _top(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the k largest values of each row of block (fewer when it has fewer columns)."""
    k = min(k, block.shape[1] - 1)
    if k < 1:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    top = np.argpartition(-block, k - 1, axis=1)[:, :k]
    return np.repeat(np.arange(len(block)), k), top.ravel()


def _chunks(n: int, chunk_rows: int):
    """(start, stop) of row chunks whose scores against all n rows hold at most MAX_BLOCK_VALUES values."""
    size = max(1, min(chunk_rows, MAX_BLOCK_VALUES // max(n, 1)))
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _concatenated(found: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    a, b, sim = zip(*found)
    return (np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64),
            np.concatenate(sim).astype(np.float32))


def _unit_rows(features) -> np.ndarray:
    rows = np.array(features, dtype=np.float32)
    if rows.ndim != 2:
        raise InputError(f"Features must be a (rows, dims) matrix, not shape {rows.shape}.")
    rows[~np.isfinite(rows).all(1)] = 0.0        # never pairs: a zero row stays zero
    return normalize_rows(rows)


def duplicate_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) group id of each row (connected components of the pairs), -1 for rows in no pair.

    Ids follow the order of the pairs given (the group of the first pair is 0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    groups = np.full(n, -1, dtype=np.int64)
    if len(a) == 0:
        return groups
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = {}
    for row in np.asarray(a):
        order.setdefault(component[row], len(order))
    paired = np.zeros(n, dtype=bool)
    paired[a] = paired[b] = True
    groups[paired] = [order[c] for c in component[paired]]
    return groups


def suggest_keep(groups: np.ndarray, pixels: np.ndarray, file_bytes: np.ndarray) -> np.ndarray:
    """(n,) bool: in each group the row with the most pixels, then the largest file, then the lowest row;
    True for rows in no group."""
    keep = np.ones(len(groups), dtype=bool)
    paired = np.flatnonzero(groups >= 0)
    keep[paired] = False
    # lexsort: last key first; lowest row wins ties because the order is stable
    order = paired[np.lexsort((-np.asarray(file_bytes)[paired], -np.asarray(pixels)[paired], groups[paired]))]
    first = np.r_[True, groups[order][1:] != groups[order][:-1]]
    keep[order[first]] = True
    return keep
