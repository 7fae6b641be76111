"""The map's points past `RASTER_FROM` of them: one image per view, drawn by the server with datashader.

A browser's cost of drawing, hit-testing and recolouring a scatter grows with its points (Canvas: 53 ms to show
a lasso's selection at 10k points, 837 ms at 100k; issue 18). Past the threshold the page gets one PNG of the
current view instead, whose cost does not depend on the points, and Python does what the browser did:

- `PointsImage.png(...)`: every point of the view aggregated per pixel and colour by datashader (each point
  weighted by its alpha, so what the model knows fades), shaded by density, each point spread one pixel so a
  lone point stays visible; with a selection, the rest is dimmed as Bokeh dims unselected points, and the
  selection is drawn again on top.
- `inside_lasso` / `inside_box`: the lasso's polygon (in data coordinates, from Bokeh's `SelectionGeometry`
  event) filled into a mask finer than the screen, and each point looked up in it: O(points), tens of ms at 1M.
- `PointsImage.nearest`: the point under the pointer, for the preview the hover gives below the threshold.

This module imports no Bokeh; `labeler.ui.map.MapView` switches between the two ways of drawing.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

# from this many points on, the map is one server-drawn image (bench/ui_latency.py: the browser's own scatter
# shows a lasso's selection within 300 ms here up to about this many points; the image costs the same at any N)
RASTER_FROM = 50_000
UNSELECTED_ALPHA = 0.25        # what Bokeh's nonselection_alpha does to the rest of the points
MASK_PX = 2048                 # the lasso's polygon is filled at this resolution across its longer side


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    if len(colour) == 3:
        colour = "".join(c * 2 for c in colour)
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


class PointsImage:
    """The points of one drawing: positions fixed, colours and alpha replaceable, one PNG per view."""

    def __init__(self, xy: np.ndarray):
        self.xy = np.ascontiguousarray(xy, dtype=np.float32)
        self._codes = np.zeros(len(xy), dtype=np.int16)
        self._palette: list[str] = ["#bbbbbb"]
        self._alpha = np.ones(len(xy), dtype=np.float32)
        self._tree = None

    def __len__(self) -> int:
        return len(self.xy)

    def colour(self, colour: np.ndarray, alpha: np.ndarray) -> None:
        """Each point's colour ('#rrggbb') and alpha, in the order of `xy`."""
        import pandas as pd
        categories = pd.Categorical(np.asarray(colour, dtype=object))
        self._palette = ["#%02x%02x%02x" % _hex_rgb(str(c)) for c in categories.categories] or ["#bbbbbb"]
        self._codes = np.asarray(categories.codes, dtype=np.int16)
        self._alpha = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)

    def png(self, x_range, y_range, size_px, selected: np.ndarray | None = None) -> bytes:
        """The view `x_range` x `y_range` as a transparent PNG of `size_px` (width, height); `selected`: a
        boolean mask of the points, or None."""
        import datashader as ds
        import datashader.transfer_functions as tf
        import pandas as pd
        width, height = max(1, int(size_px[0])), max(1, int(size_px[1]))
        canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=tuple(map(float, x_range)),
                           y_range=tuple(map(float, y_range)))
        categories = pd.Categorical.from_codes(self._codes, categories=range(len(self._palette)))
        some = selected is not None and bool(selected.any())

        def layer(mask=None):
            frame = pd.DataFrame({"x": self.xy[:, 0], "y": self.xy[:, 1], "c": categories, "w": self._alpha})
            agg = canvas.points(frame if mask is None else frame[mask], "x", "y", agg=ds.by("c", ds.sum("w")))
            return tf.spread(tf.shade(agg, color_key=self._palette, how="eq_hist", min_alpha=90), px=1)

        image = layer()
        if some:          # the rest dimmed (density shading would undo a dimmed weight), the selection on top
            rgba = image.data.view(np.uint8).reshape(*image.data.shape, 4)
            rgba[..., 3] = (rgba[..., 3] * UNSELECTED_ALPHA).astype(np.uint8)
            image = tf.stack(image, layer(selected))
        out = io.BytesIO()
        image.to_pil().save(out, format="PNG", compress_level=1)
        return out.getvalue()

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


def to_png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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
