"""The pixel side of duplicates: grey thumbnails, 8 x 8 signatures and how much two images differ once aligned.

Machinery for `engine.duplicates`, which re-exports `thumbnail`, `signatures` and `aligned_differences`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIGNATURE_EDGE = 8    # the pixel signature: the image squashed to 8 x 8 grey levels, mean removed
THUMBNAIL_EDGE = 32   # the pixels compared: the grey image itself, shrunk to fit 32 x 32 when larger
MAX_SHIFT = 1         # pixels two thumbnails are shifted against each other in search of alignment
MAX_CROP = 0.1        # a thumbnail up to this fraction smaller on each side may be a crop of the other
RESIDUAL_BLUR = 0.7   # sigma (pixels) of the blur that spreads resampling and JPEG noise before the peak
#: grey levels: a thumbnail with a smaller standard deviation is scaled as if it had this one. Resampling
#: and JPEG noise is a few grey levels whatever the picture, so standardizing a flat image would magnify it
#: (a dark bird on a plain sky, std 10, re-encoded at quality 30: 0.98 without the floor, 0.45 with it)
CONTRAST_FLOOR = 20.0
#: what a one-pixel crop or shift does to a small image, for `signatures`: the four corners a crop
#: may keep, and four shifts (a copy shifted the other way matches from its own side)
VARIANTS = (("crop", (0, 0)), ("crop", (0, 1)), ("crop", (1, 0)), ("crop", (1, 1)),
            ("shift", (0, 1)), ("shift", (1, 0)), ("shift", (1, 1)), ("shift", (1, -1)))


def thumbnail(grey) -> np.ndarray:
    """(h, w) uint8: a PIL grey image as it is when it fits THUMBNAIL_EDGE, else shrunk to fit (aspect kept)."""
    from PIL import Image
    scale = THUMBNAIL_EDGE / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.LANCZOS)
    return np.asarray(grey, dtype=np.uint8)


def signatures(thumbnails: Sequence, variant: tuple[str, tuple[int, int]] | None = None) -> np.ndarray:
    """(n, 64) float32: each grey `thumbnail` averaged down to 8 x 8, its mean removed (zeros for None).

    With a variant from VARIANTS: of the thumbnail cropped by a pixel ("crop", (top, left): one row
    and one column cut, that corner kept) or shifted by one ("shift", (down, right): the uncovered
    edge repeating its neighbour).
    """
    out = np.zeros((len(thumbnails), SIGNATURE_EDGE * SIGNATURE_EDGE), dtype=np.float32)
    shapes: dict[tuple[int, int], list[int]] = {}
    for row, pixels in enumerate(thumbnails):
        if pixels is not None and min(pixels.shape) > 1:
            shapes.setdefault(pixels.shape, []).append(row)
    for rows in shapes.values():
        stack = np.stack([thumbnails[row] for row in rows]).astype(np.float32)
        if variant is not None:
            stack = _varied(stack, *variant)
        small = np.einsum("oh,nhw,pw->nop", _box_weights(stack.shape[1]), stack, _box_weights(stack.shape[2]),
                          optimize=True)
        out[rows] = (small - small.mean(axis=(1, 2), keepdims=True)).reshape(len(rows), -1)
    return out


def _varied(stack: np.ndarray, kind: str, offset: tuple[int, int]) -> np.ndarray:
    """(m, h, w) images cropped by a pixel (keeping corner `offset`) or shifted by `offset`, edges repeated."""
    first, second = offset
    height, width = stack.shape[1:]
    if kind == "crop":
        return stack[:, first:height - 1 + first, second:width - 1 + second]
    padded = np.pad(stack, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return padded[:, 1 - first:1 - first + height, 1 - second:1 - second + width]


def _box_weights(size: int) -> np.ndarray:
    """(8, size): the share of each of `size` pixels in each of 8 equal cells (rows sum to 1)."""
    edges = np.linspace(0, size, SIGNATURE_EDGE + 1)
    pixel = np.arange(size)
    overlap = np.clip(np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def aligned_differences(thumbnails: Sequence, a, b, *, sizes=None) -> np.ndarray:
    """(len(a),) how much images a and b differ once aligned: 0 for the same pixels, inf when not comparable.

    Both grey thumbnails are standardized (mean 0, standard deviation 1, so brightness and contrast
    do not count) and blurred (RESIDUAL_BLUR); the difference is the peak of their absolute
    difference. Alignments tried, the best kept: both squashed to the smaller one's short side and
    shifted by up to MAX_SHIFT pixels; and, when one image is up to MAX_CROP smaller at the same
    scale (from `sizes`, the originals' (width, height)), every place of it inside the other.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    images = _Thumbnails(thumbnails, sizes)
    out = np.full(len(a), np.inf, dtype=np.float32)
    edge = np.minimum(images.short_side[a], images.short_side[b])
    for size in np.unique(edge[edge > 2 * MAX_SHIFT + 2]):
        chosen = np.flatnonzero(edge == size)
        out[chosen] = _shifted_difference(images.stack(a[chosen], size), images.stack(b[chosen], size))
    for k in images.crops(a, b):
        out[k] = min(out[k], images.crop_difference(a[k], b[k]))
    return out


class _Thumbnails:
    """Thumbnails resized, standardized and blurred on demand (each row and size once)."""

    def __init__(self, thumbnails: Sequence, sizes):
        self.arrays = [None if t is None else np.asarray(t, dtype=np.uint8) for t in thumbnails]
        self.short_side = np.array([0 if t is None else min(t.shape[:2]) for t in self.arrays], dtype=np.int64)
        shapes = np.array([(0, 0) if t is None else (t.shape[1], t.shape[0]) for t in self.arrays]).reshape(-1, 2)
        self.shapes = shapes                                        # (width, height) of each thumbnail
        self.sizes = np.asarray(shapes if sizes is None else sizes, dtype=np.float64).reshape(-1, 2)
        self._ready: dict[tuple[int, int, int], np.ndarray] = {}

    def stack(self, rows: np.ndarray, size: int) -> np.ndarray:
        """(len(rows), size, size) the rows' thumbnails squashed to squares, ready to compare."""
        shape = (int(size), int(size))
        missing = [int(row) for row in np.unique(rows) if (int(row), *shape) not in self._ready]
        if missing:
            for row, image in zip(missing, _prepared(np.stack([_resized(self.arrays[row], shape) for row in missing]))):
                self._ready[(row, *shape)] = image
        return np.stack([self._ready[(int(row), *shape)] for row in rows])

    def crops(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Indices of the pairs whose smaller image, at the larger's thumbnail scale, is smaller by at most
        MAX_CROP on each side (and not the same size): maybe a crop of it."""
        big = np.where(self.sizes[a].prod(1) >= self.sizes[b].prod(1), a, b)
        small = np.where(big == a, b, a)
        outer = self.shapes[big]
        inner = np.maximum(1, np.round(self.sizes[small] * (outer[:, :1] / np.maximum(self.sizes[big][:, :1], 1))))
        gap = outer - inner
        fits = ((gap >= 0) & (gap <= MAX_CROP * outer)).all(1) & gap.any(1) & (inner.min(1) > 2)
        return np.flatnonzero(fits & (self.short_side[a] > 0) & (self.short_side[b] > 0))

    def crop_difference(self, one: int, other: int) -> float:
        """The best difference of the smaller image placed anywhere inside the larger (see `crops`)."""
        big, small = (one, other) if np.prod(self.sizes[one]) >= np.prod(self.sizes[other]) else (other, one)
        width, height = (int(v) for v in self.shapes[big])
        scale = width / max(self.sizes[big][0], 1)
        inner_w, inner_h = (max(1, round(side * scale)) for side in self.sizes[small])
        outer = _prepared(_resized(self.arrays[big], (width, height))[None])[0]
        inner = _prepared(_resized(self.arrays[small], (inner_w, inner_h))[None])[0]
        windows = np.stack([outer[y:y + inner_h, x:x + inner_w]
                            for y in range(height - inner_h + 1) for x in range(width - inner_w + 1)])
        inside = (slice(None), slice(1, inner_h - 1), slice(1, inner_w - 1))   # the blur at the cut mixed in more
        return float(_peak(windows[inside] - inner[inside[1:]]).min())


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (h, w) of uint8 grey pixels resized to size (width, height), antialiased (Lanczos)."""
    from PIL import Image
    if (pixels.shape[1], pixels.shape[0]) == tuple(size):
        return pixels.astype(np.float32)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS), dtype=np.float32)


def _prepared(stack: np.ndarray) -> np.ndarray:
    """(m, h, w) images with mean 0 and standard deviation 1 each (CONTRAST_FLOOR for flat ones), blurred."""
    from scipy.ndimage import gaussian_filter
    centred = stack - stack.mean(axis=(1, 2), keepdims=True)
    scaled = centred / np.maximum(centred.std(axis=(1, 2), keepdims=True), CONTRAST_FLOOR)
    return gaussian_filter(scaled, (0, RESIDUAL_BLUR, RESIDUAL_BLUR)).astype(np.float32)


def _peak(residual: np.ndarray) -> np.ndarray:
    """(m,) the largest absolute value of each of m residual images."""
    return np.abs(residual).max(axis=(1, 2))


def _shifted_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(m,) the smallest peak absolute difference of m pairs of (s, s) prepared images over shifts of up to
    MAX_SHIFT pixels (`_overlap`)."""
    size = first.shape[1]
    best = np.full(len(first), np.inf, dtype=np.float32)
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            rows_one, rows_two = _overlap(size, dy)
            cols_one, cols_two = _overlap(size, dx)
            one, two = first[:, rows_one, cols_one], second[:, rows_two, cols_two]
            np.minimum(best, _peak(one - two), out=best)
    return best


def _overlap(size: int, shift: int) -> tuple[slice, slice]:
    """Where two images of `size` pixels overlap when the second is moved by `shift`, less a pixel on a cut
    side: the blur there mixed in pixels that the other image lacks."""
    if shift == 0:
        return slice(0, size), slice(0, size)
    trim = abs(shift) + 1
    moved, still = slice(trim, size - 1), slice(1, size - trim)
    return (moved, still) if shift > 0 else (still, moved)
