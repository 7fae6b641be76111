"""The map's points past `RASTER_FROM` of them: one image per view, drawn by the server with datashader.

A browser's cost of drawing, hit-testing and recolouring a scatter grows with its points (Canvas: 53 ms to show
a lasso's selection at 10k points, 837 ms at 100k; issue 18). Past the threshold the page gets one image of the
current view instead, whose cost does not depend on the points, and Python does what the browser did:

- `PointsImage.rgba(...)`: every point of the view aggregated per pixel and colour by datashader (each point
  weighted by its alpha, so what the model knows fades), shaded by density, each point spread one pixel so a
  lone point stays visible; with a selection, the rest is dimmed as Bokeh dims unselected points, and the
  selection is drawn again on top. `over_rgb` lays it over the view's thumbnails: the page gets ONE JPEG
  per change (a transparent PNG beside the thumbnails' JPEG cost twice the bytes and a second decode).
- `inside_lasso` / `inside_box`: the lasso's polygon (in data coordinates, from Bokeh's `SelectionGeometry`
  event, passed on by the page) filled into a mask finer than the screen, and each point looked up in it:
  O(points), tens of ms at 1M.
- `PointsImage.nearest`: the point under the pointer, for the preview the hover gives below the threshold.

This module imports no Bokeh; `labeler.ui.map.MapView` switches between the two ways of drawing.
"""
from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image, ImageDraw


def _raster_from(default: int = 50_000) -> int:
    text = os.environ.get("LABELER_RASTER_FROM", "").strip()
    if text.isdigit():
        return int(text)
    if text:
        logging.getLogger(__name__).warning("LABELER_RASTER_FROM=%r is not a number of points; using %d",
                                            text, default)
    return default


# from this many points on, the map is one server-drawn image (bench/ui_latency.py: the browser's own Canvas
# scatter shows a lasso's selection faster below it; the image costs about the same at any N);
# LABELER_RASTER_FROM changes the default (0: always an image), as `labeler serve --raster-from` does
RASTER_FROM = _raster_from()
UNSELECTED_ALPHA = 0.25        # what Bokeh's nonselection_alpha does to the rest of the points
MASK_PX = 2048                 # the lasso's polygon is filled at this resolution across its longer side


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    if len(colour) == 3:
        colour = "".join(c * 2 for c in colour)
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


class PointsImage:
    """The points of one drawing: positions fixed, colours and alpha replaceable, one RGBA image per view."""

    def __init__(self, xy: np.ndarray):
        self.xy = np.ascontiguousarray(xy, dtype=np.float32)
        self._codes = np.zeros(len(xy), dtype=np.int16)
        self._palette: list[str] = ["#bbbbbb"]
        self._alpha = np.ones(len(xy), dtype=np.float32)
        self._tree = None

    def colour(self, colour: np.ndarray, alpha: np.ndarray) -> None:
        """Each point's colour ('#rrggbb') and alpha, in the order of `xy`."""
        import pandas as pd
        codes, uniques = pd.factorize(np.asarray(colour, dtype=object))     # a hash table: 4x Categorical's sort
        self._palette = ["#%02x%02x%02x" % _hex_rgb(str(c)) for c in uniques] or ["#bbbbbb"]
        self._codes = np.asarray(codes, dtype=np.int16)
        self._alpha = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)

    def rgba(self, x_range, y_range, size_px, selected: np.ndarray | None = None) -> np.ndarray:
        """The view `x_range` x `y_range` as uint8 RGBA (height, width, 4) of `size_px` (width, height), row 0 at
        the top and transparent where no point is; `selected`: a boolean mask of the points, or None."""
        import datashader as ds
        import pandas as pd
        width, height = max(1, int(size_px[0])), max(1, int(size_px[1]))
        canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=tuple(map(float, x_range)),
                           y_range=tuple(map(float, y_range)))
        # as many categories as the next power of two (at least 8): datashader compiles its aggregation for each
        # number of categories, and a new label's colour would otherwise cost a compilation (~0.3 s) at once
        slots = max(8, 1 << (len(self._palette) - 1).bit_length())
        categories = pd.Categorical.from_codes(self._codes, categories=range(slots))
        palette = np.zeros((slots, 3), dtype=np.float32)
        palette[:len(self._palette)] = [_hex_rgb(c) for c in self._palette]
        frame = pd.DataFrame({"x": self.xy[:, 0], "y": self.xy[:, 1], "c": categories, "w": self._alpha})

        def layer(mask=None):
            # datashader's aggregation (numba, the part that grows with the points): alpha-weighted counts per
            # pixel and colour; the shading below works on the pixels only (about 3x faster than datashader's
            # own shade and spread at 12 colours here)
            agg = canvas.points(frame if mask is None else frame[mask], "x", "y", agg=ds.by("c", ds.sum("w")))
            return _shade(agg.data, palette)

        image = layer()
        if selected is not None and selected.any():   # the rest dimmed as Bokeh dims it, the selection on top
            from ._shade import over_rgba
            image = over_rgba(layer(selected), image, UNSELECTED_ALPHA)
        return image[::-1]          # datashader's row 0 is the bottom of the view

    def nearest(self, x: float, y: float, radius: float) -> int | None:
        """The index of the point nearest (x, y) within `radius` (data units), or None."""
        if not len(self.xy):
            return None
        if self._tree is None:
            from scipy.spatial import cKDTree
            finite = np.isfinite(self.xy).all(axis=1)
            self._tree = (cKDTree(self.xy[finite]), np.flatnonzero(finite))
        tree, index = self._tree
        distance, found = tree.query([x, y], distance_upper_bound=radius)
        return int(index[found]) if np.isfinite(distance) else None


def _shade(counts: np.ndarray, palette: np.ndarray, min_alpha: int = 90) -> np.ndarray:
    """RGBA (height, width, 4) from per-pixel counts per colour (height, width, colours; NaN or 0 where none): each
    point spread to its 3x3 pixels (a lone point stays visible), the colours mixed by count, and the opacity by the
    rank of the pixel's count among the drawn pixels (histogram equalisation over 256 equal bins, as np.histogram
    makes them, so dense and sparse regions both read). One compiled pass over the pixels (`_shade.shade_pixels`): the
    same in numpy took most of a map image's time (about 100 ms of 800 x 800 px against 10 ms)."""
    from ._shade import shade_pixels        # numba: compiled on first use, and cached on disk
    return shade_pixels(np.ascontiguousarray(counts, dtype=np.float64), np.ascontiguousarray(palette, dtype=np.float64),
                        float(min_alpha))


def over_rgb(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """RGBA `top` composited over opaque RGB `bottom` (the thumbnails, or the plot's background): RGB uint8."""
    from ._shade import over_rgb as compiled
    return compiled(np.ascontiguousarray(top, dtype=np.uint8), np.ascontiguousarray(bottom, dtype=np.uint8))


def inside_box(xy: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Which points lie in the box (the corners in any order)."""
    (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
    x, y = xy[:, 0], xy[:, 1]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def inside_lasso(xy: np.ndarray, xs, ys, mask_px: int = MASK_PX) -> np.ndarray:
    """Which points lie inside the polygon (xs, ys): the polygon is filled into a mask of `mask_px` across its
    bounding box's longer side, and each point inside the box is looked up in it."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    result = np.zeros(len(xy), dtype=bool)
    if len(xs) < 3:
        return result
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    span = max(x1 - x0, y1 - y0)
    if not span > 0:
        return result
    scale = (mask_px - 1) / span
    width, height = int((x1 - x0) * scale) + 1, int((y1 - y0) * scale) + 1
    mask_image = Image.new("1", (width, height), 0)
    ImageDraw.Draw(mask_image).polygon(list(zip((xs - x0) * scale, (ys - y0) * scale)), fill=1, outline=1)
    mask = np.asarray(mask_image, dtype=bool)
    candidates = np.flatnonzero(inside_box(xy, x0, x1, y0, y1))
    if not len(candidates):
        return result
    px = np.clip(((xy[candidates, 0] - x0) * scale).astype(np.int64), 0, width - 1)
    py = np.clip(((xy[candidates, 1] - y0) * scale).astype(np.int64), 0, height - 1)
    result[candidates] = mask[py, px]
    return result
