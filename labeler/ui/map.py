"""The map: every drawn image as a point coloured by its label, thumbnails where there is room.

`map_figure` builds the Bokeh plot the app draws (and `bench/ui_latency.py` measures):
points in a `ColumnDataSource`, a lasso that sends one selection per drag, box select, wheel
zoom. `MapView` adds what the app needs around it: the thumbnails as one composite JPEG of the
current view (rebuilt by the server on zoom and pan; see `composite`), the hovered image's id
(for the large preview), and the positions of every item. Past `raster.RASTER_FROM` points it draws
the points into that JPEG too and computes a lasso's selection itself (see `raster`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
import panel as pn
from bokeh.events import MouseEnter, MouseMove, PanStart, RangesUpdate, SelectionGeometry
from bokeh.models import (BoxSelectTool, ColumnDataSource, CustomJS, Div, HoverTool, ImageURL, LassoSelectTool,
                          Range1d, WheelZoomTool)
from bokeh.plotting import figure

from labeler.errors import USER_ERRORS
from labeler.thumbs import encode_jpeg

from .composite import composite_pixels, to_data_uri
from .raster import RASTER_FROM, PointsImage, inside_box, inside_lasso, over_rgb

logger = logging.getLogger(__name__)
TILE_PX = 32
JPEG_QUALITY = 85     # the view's image (thumbnails, and server-drawn points)
HOVER_PX = 6       # server-drawn points: the hovered one is the nearest within this many pixels of the pointer
# WebGL is fastest on a real GPU; "canvas" redraws large maps faster where WebGL is software-rendered
BACKENDS = ("webgl", "canvas")
MARGIN = 0.03      # the unit square the map is scaled into, with this much room around it
# BokehJS 3.9's lasso asserts, at every move of a drag and at its end, that the drag began inside the plot's frame,
# but its start just returns when it did not (a press on the 5-px border, or where a layout change has not reached
# the frame yet): each move then throws "Assertion failed" into the page. Its box select returns instead; this makes
# the lasso do the same, patching its view class once per page, when the pointer enters the plot or a drag starts
# (before the drag's first move: Bokeh's events follow its tools' handlers).
LASSO_GUARD = """
const View = lasso.default_view;
if (View.prototype.__labelerGuarded) { return; }
for (const name of ['_pan', '_pan_end']) {
  const original = View.prototype[name];
  View.prototype[name] = function (ev) { return this._is_selecting ? original.call(this, ev) : undefined; };
}
View.prototype.__labelerGuarded = true;"""


def map_figure(source: ColumnDataSource, backend: str = "webgl", *, point_size: int = 4, **size):
    """The map's plot and its points renderer: columns x, y, color, alpha of `source`; lasso active.

    `size`: width/height for a fixed plot, default stretching to fill its container.
    """
    fixed = {"width", "height"} <= set(size)
    plot = figure(tools="pan,reset", output_backend=backend, toolbar_location="above", name="map", match_aspect=False,
                  **(size if fixed else {"sizing_mode": "stretch_both", "min_height": 400}))
    plot.x_range, plot.y_range = Range1d(-MARGIN, 1 + MARGIN), Range1d(-MARGIN, 1 + MARGIN)
    plot.lod_timeout, plot.lod_interval = 100, 100     # else every zoom waits 500 ms
    plot.axis.visible = False
    plot.grid.visible = False
    points = plot.scatter("x", "y", source=source, size=point_size, color="color", alpha="alpha",
                          nonselection_alpha=0.25, selection_color="color", name="points")
    # one selection per drag: the default sends one per mouse move (seconds for a single lasso)
    lasso = LassoSelectTool(continuous=False, renderers=[points])
    plot.add_tools(lasso, BoxSelectTool(continuous=False, renderers=[points]), WheelZoomTool())
    plot.toolbar.active_drag = lasso
    plot.toolbar.active_scroll = plot.select_one(WheelZoomTool)
    guard = CustomJS(args=dict(lasso=lasso), code=LASSO_GUARD)
    plot.js_on_event(MouseEnter, guard)
    plot.js_on_event(PanStart, guard)
    return plot, points


class MapView:
    """The plot with thumbnails under the points (`thumbs`: a ThumbCache, or None for none); tells `on_select(ids)`
    and `on_hover(id)`.

    Up to `raster_from` points the browser draws them (a Bokeh scatter: its own hover, lasso hit-testing and
    selection). From there on, the server draws them as one image per view (`raster.PointsImage`), the lasso's
    geometry comes to Python (Bokeh's `SelectionGeometry` event) and the selection is computed in numpy, and
    a throttled pointer position finds the hovered point; the app sees the same calls either way.
    """

    def __init__(self, thumbs, backend: str, *, on_select: Callable, on_hover: Callable,
                 raster_from: int = RASTER_FROM):
        self.thumbs, self._on_select_ids, self._on_hover_id = thumbs, on_select, on_hover
        self.raster_from = raster_from
        self.source = ColumnDataSource(dict(x=[], y=[], id=[], color=[], alpha=[]))
        # the view as one JPEG: its thumbnails, and its points too when the server draws them
        self._tiles = ColumnDataSource(dict(url=[], x=[], y=[], w=[], h=[]), name="map-image")
        self.plot, points = map_figure(self.source, backend)
        # the composite goes under the points, so they keep their hover, selection and colours
        tiles = self.plot.add_glyph(self._tiles, ImageURL(url="url", x="x", y="y", w="w", h="h", anchor="top_left"))
        self.plot.renderers = [tiles, *(r for r in self.plot.renderers if r is not tiles)]
        self._hover_id = Div(text="", visible=False, name="hover-id")
        self.plot.add_tools(HoverTool(renderers=[points], tooltips=None, callback=CustomJS(
            args=dict(div=self._hover_id, source=self.source),
            code="const i = cb_data.index.indices; if (i.length) { div.text = String(source.data.id[i[0]]); }")))
        self._hover_id.on_change("text", lambda attr, old, new: new.isdigit() and self._on_hover_id(int(new)))
        # drawn as an image, the points have no hover of their own: the pointer's place, once it rests 60 ms
        self._pointer = Div(text="", visible=False, name="pointer")
        self.plot.js_on_event(MouseMove, CustomJS(args=dict(div=self._pointer, source=self.source), code="""
            if (source.get_length() > 0) { return; }
            clearTimeout(window.__labelerPointer);
            const x = cb_obj.x, y = cb_obj.y;
            window.__labelerPointer = setTimeout(() => { div.text = `${x} ${y}`; }, 60);"""))
        self._pointer.on_change("text", lambda attr, old, new: self._on_pointer(new))
        self.source.selected.on_change("indices", self._on_indices)
        # a finished lasso's or box's geometry, for server-drawn points: through a model property, as the hover's
        # place travels (a Python `on_event(SelectionGeometry)` stops a notebook's lasso: Panel's notebook wrapper
        # of Bokeh event callbacks leaves the document holding the selection's change back)
        self._geometry = Div(text="", visible=False, name="lasso-geometry")
        self.plot.js_on_event(SelectionGeometry, CustomJS(args=dict(div=self._geometry, source=self.source), code="""
            if (!cb_obj.final || source.get_length() > 0) { return; }
            const g = cb_obj.geometry;
            const list = (v) => (v == null ? null : Array.from(v));      // typed arrays become lists
            const keep = {type: g.type, x: list(g.x), y: list(g.y), x0: g.x0, x1: g.x1, y0: g.y0, y1: g.y1};
            div.text = JSON.stringify({n: (window.__labelerLassos = (window.__labelerLassos || 0) + 1), ...keep});"""))
        self._geometry.on_change("text", lambda attr, old, new: self._on_geometry(new))
        self.plot.on_event(RangesUpdate, lambda event: self.draw_tiles())
        self.panel = pn.pane.Bokeh(self.plot, sizing_mode="stretch_both")
        self._xy = np.zeros((0, 2), dtype=np.float32)
        self._frames = None
        self._cleared = False         # the app cleared the selection: the change it causes is nobody's selection
        self._raster: PointsImage | None = None     # the points, when the server draws them
        self._raster_ids = np.zeros(0, dtype=np.int64)
        self._selected: np.ndarray | None = None    # the selection (a mask of the drawn points) when drawn so
        self._under = (None, None)    # (the view, its thumbnails' pixels or None): what server-drawn points go over

    @property
    def raster(self) -> bool:
        """Whether the server draws the points (as one image per view)."""
        return self._raster is not None

    @property
    def ids(self) -> np.ndarray:
        if self._raster is not None:
            return self._raster_ids
        return np.asarray(self.source.data["id"], dtype=np.int64)

    def draw(self, xy: np.ndarray, ids: np.ndarray, n_items: int, colour: np.ndarray, alpha: np.ndarray,
             frames: np.ndarray, *, reset_view: bool = False) -> None:
        """Show `ids` at `xy` (already in the unit square); colour and alpha are per item (all items)."""
        self._xy = np.full((n_items, 2), np.nan, dtype=np.float32)
        self._xy[ids] = xy
        self._frames = frames
        if len(ids) >= self.raster_from:
            self._raster, self._raster_ids = PointsImage(xy), np.asarray(ids, dtype=np.int64)
            self._raster.colour(colour[ids], alpha[ids])
            self._selected = None
            self.source.data = dict(x=[], y=[], id=[], color=[], alpha=[])
        else:
            self._raster, self._raster_ids, self._selected = None, np.zeros(0, dtype=np.int64), None
            self.source.data = dict(x=xy[:, 0], y=xy[:, 1], id=ids, color=colour[ids], alpha=alpha[ids])
        self.source.selected.indices = []
        if reset_view:
            self.plot.x_range.start, self.plot.x_range.end = -MARGIN, 1 + MARGIN
            self.plot.y_range.start, self.plot.y_range.end = -MARGIN, 1 + MARGIN
        self.draw_tiles()

    def recolour(self, colour: np.ndarray, alpha: np.ndarray, frames: np.ndarray) -> None:
        ids = self.ids
        self._frames = frames
        if self._raster is not None:
            self._raster.colour(colour[ids], alpha[ids])
        else:
            self.source.data.update(color=colour[ids], alpha=alpha[ids])
        self.draw_tiles()             # the labeled thumbnails' frames change colour

    def clear_selection(self) -> None:
        """Clear the plot's selection without telling `on_select`: the app keeps its own review (the images
        dropped before a label stay in it), nobody lassoed nothing. Bokeh calls back now, or later when
        the document holds its events: the flag waits for that call."""
        if self._raster is not None:
            if self._selected is not None:
                self._selected = None
                self._show_view()
        elif len(self.source.selected.indices):
            self._cleared = True
            self.source.selected.indices = []

    def draw_tiles(self) -> None:
        """The current view as one JPEG covering it: the thumbnails (and the points, when the server draws them)."""
        view = self._view()
        under = None
        if self.thumbs is not None:       # None: a map without thumbnails (bench/ui_latency.py)
            visible = np.zeros(len(self._xy), dtype=bool)
            visible[self.ids] = True
            try:
                under, _ = composite_pixels(np.nan_to_num(self._xy, nan=-1e9), self.thumbs.get, view[0], view[1],
                                            view[2], TILE_PX, visible_mask=visible, border=self._frames)
            except USER_ERRORS as err:
                logger.warning("no thumbnails: %s", err)
        self._under = (view, under)
        self._show_view()

    def _view(self) -> tuple:
        plot = self.plot
        return (plot.x_range.start, plot.x_range.end), (plot.y_range.start, plot.y_range.end), _plot_px(plot)

    def _show_view(self) -> None:
        """Send the view's image: the thumbnails drawn last, under the points when the server draws them."""
        view, under = self._under
        if view != self._view():
            self.draw_tiles()
            return
        (x0, x1), (y0, y1), size = view
        if self._raster is not None:
            points = self._raster.rgba((x0, x1), (y0, y1), size, self._selected)
            under = over_rgb(points, under if under is not None else np.full((*points.shape[:2], 3), 255, np.uint8))
        if under is None:
            self._tiles.data = dict(url=[], x=[], y=[], w=[], h=[])
        else:
            self._tiles.data = dict(url=[to_data_uri(encode_jpeg(under, JPEG_QUALITY))], x=[x0], y=[y1],
                                    w=[x1 - x0], h=[y1 - y0])

    def _on_indices(self, attr, old, new) -> None:
        cleared, self._cleared = self._cleared, False
        if (cleared or self._raster is not None) and not len(new):
            return
        self._on_select_ids(self.ids[np.asarray(new, dtype=np.int64)].tolist() if len(new) else [])

    def _on_geometry(self, text: str) -> None:
        """A finished lasso or box over server-drawn points (its geometry as JSON): the selection, computed here."""
        try:
            geometry = json.loads(text) if text else {}
        except ValueError:
            return
        if self._raster is None or not isinstance(geometry, dict) or geometry.get("type") not in ("poly", "rect"):
            return
        xy = self._raster.xy
        try:
            if geometry["type"] == "poly":
                if len(geometry.get("x") or ()) < 3 or len(geometry.get("y") or ()) < 3:
                    return                        # not an area: nobody lassoed nothing
                chosen = inside_lasso(xy, geometry["x"], geometry["y"])
            else:
                chosen = inside_box(xy, *(float(geometry[key]) for key in ("x0", "x1", "y0", "y1")))
        except (KeyError, TypeError, ValueError):
            return
        self._selected = chosen if chosen.any() else None
        self._show_view()
        self._on_select_ids(self._raster_ids[chosen].tolist())

    def _on_pointer(self, text: str) -> None:
        """The pointer rests at "x y" over server-drawn points: the nearest within a few pixels is hovered."""
        if self._raster is None:
            return
        try:
            x, y = (float(v) for v in text.split())
        except ValueError:
            return
        plot = self.plot
        per_px = (plot.x_range.end - plot.x_range.start) / _plot_px(plot)[0]
        found = self._raster.nearest(x, y, HOVER_PX * per_px)
        if found is not None:
            self._on_hover_id(int(self._raster_ids[found]))


def _plot_px(plot) -> tuple[int, int]:
    """The plot's drawing area in pixels once the browser has laid it out, else a typical size."""
    from bokeh.core.property.descriptors import UnsetValueError
    try:
        return max(200, int(plot.inner_width)), max(200, int(plot.inner_height))
    except (UnsetValueError, TypeError):
        return 1000, 560


def unit_square(xy: np.ndarray, fixed: float | None = None) -> np.ndarray:
    """Scale a projection into the unit square (robust to a few far outliers); `fixed`: the layout
    already lies in [-fixed, fixed] on both axes, keep its shape (the Predicted view's circle)."""
    if fixed is not None:
        return ((xy + fixed) / (2 * fixed)).astype(np.float32)
    if not len(xy):
        return np.zeros((0, 2), dtype=np.float32)
    low, high = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    return ((xy - low) / span).astype(np.float32)
