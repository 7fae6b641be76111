"""The review grid: the selection as thumbnails; a click drops an image, a second click takes it back.

The image under the mouse is known (`hovered`), so a label's number key pressed over it labels that
image alone. A check of predictions shows each image's predicted label on it. `set_overlays` shows
other pictures in some tiles instead of their thumbnails (the heatmaps of `heatmap_view`), and
`on_show` hears of every review shown.
"""
from __future__ import annotations


import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, ImageURL, Range1d
from bokeh.plotting import figure

from labeler.thumbs import encode_jpeg

from .composite import to_data_uri

COLUMNS = 12
TILE_PX = 72
MAX_SHOWN = 240


class ReviewGrid:
    """A Bokeh grid of the review's thumbnails (one composite JPEG) with clickable cells."""

    def __init__(self, thumbs, on_change, *, columns: int = COLUMNS, tile_px: int = TILE_PX, colours=None):
        self.thumbs, self.on_change = thumbs, on_change
        self.colours = colours or (lambda: {})   # label name -> colour: a predicted label's caption wears it
        self.columns, self.tile_px = columns, tile_px
        self.review = None                  # the session's Review: dropping edits it directly
        self.ids: list[int] = []
        self.hovered: int | None = None     # the image under the mouse
        self.overlays: dict[int, np.ndarray] = {}   # item -> a tile shown instead of its thumbnail
        self.on_show = None                 # called with no argument after each review shown
        # what the pointer does over the grid, as text from the page: "hover:<id>" ("hover:" off the grid)
        # or "tap:<id>:<count>" (a count, so a second click on the same image is news). One hidden Div
        # carries both: in a notebook (JupyterLab 4.6) Panel passed neither a TapTool's selection nor a
        # second Div's text to Python, while this Div's did arrive
        self._pointer = Div(text="", visible=False, name="review-pointer")
        self._pointer.on_change("text", self._on_pointer)
        self._cells = ColumnDataSource(dict(x=[], y=[], id=[], veil=[], cross=[], score=[], tag=[]))
        self._image = ColumnDataSource(dict(url=[], x=[], y=[], w=[], h=[]))
        self.figure = self._make_figure()
        self.panel = pn.pane.Bokeh(self.figure, visible=False)

    def _make_figure(self):
        fig = figure(width=self.columns * self.tile_px, height=self.tile_px, tools="", toolbar_location=None,
                     x_range=Range1d(0, self.columns), y_range=Range1d(0, 1), min_border=0, name="review-grid")
        fig.axis.visible = False
        fig.grid.visible = False
        fig.outline_line_color = None
        fig.add_glyph(self._image, ImageURL(url="url", x="x", y="y", w="w", h="h", anchor="top_left"))
        cells = fig.rect("x", "y", width=1, height=1, source=self._cells, fill_color="white", fill_alpha="veil",
                         line_color="#ffffff", line_width=2, selection_fill_alpha="veil", nonselection_fill_alpha="veil")
        fig.scatter("x", "y", source=self._cells, marker="x", size=self.tile_px * 0.6, line_width=4,
                    color="#d32f2f", alpha="cross")
        fig.text("x", "y", text="score", source=self._cells, x_offset=-self.tile_px / 2 + 3, y_offset=self.tile_px / 2 - 3,
                 text_font_size="10px", text_color="#ffffff", background_fill_color="tag",
                 background_fill_alpha=0.8)
        fig.js_on_event("tap", CustomJS(args=dict(div=self._pointer, source=self._cells, fig=fig), code="""
            const columns = Math.round(fig.x_range.end), rows = Math.round(fig.y_range.end);
            const index = (rows - 1 - Math.floor(cb_obj.y)) * columns + Math.floor(cb_obj.x);
            if (cb_obj.x >= 0 && cb_obj.x < columns && cb_obj.y >= 0 && index < source.data.id.length) {
              div.taps = (div.taps || 0) + 1;
              div.text = `tap:${source.data.id[index]}:${div.taps}`;
            }"""))
        fig.add_tools(HoverTool(renderers=[cells], tooltips=None, callback=CustomJS(
            args=dict(div=self._pointer, source=self._cells),
            code="const i = cb_data.index.indices; div.text = 'hover:' + (i.length ? source.data.id[i[0]] : '');")))
        fig.js_on_event("mouseleave", CustomJS(args=dict(div=self._pointer), code="div.text = 'hover:';"))
        return fig

    def show(self, review) -> None:
        """Show a review (ids, dropped, similarity) from the start."""
        self.review = review
        self.ids = list(review.ids)[:MAX_SHOWN]
        rows = max(1, -(-len(self.ids) // self.columns))
        if self.figure.height != rows * self.tile_px:      # resize only when the rows change: no needless re-layout
            self.figure.height = rows * self.tile_px
            self.figure.y_range.start, self.figure.y_range.end = 0, rows
        positions = np.arange(len(self.ids))
        x = positions % self.columns + 0.5
        y = rows - positions // self.columns - 0.5
        scores = [review.predicted[i] if i in review.predicted else
                  f"{review.similarity[i]:.2f}" if i in review.similarity else "" for i in self.ids]
        colours = self.colours() if review.predicted else {}
        tags = [colours.get(review.predicted.get(i), "#000000") for i in self.ids]
        self._cells.data = dict(x=x, y=y, id=self.ids, veil=self._veil(), cross=self._cross(), score=scores, tag=tags)
        self._image.data = self._composite(rows) if self.ids else dict(url=[], x=[], y=[], w=[], h=[])
        self.panel.visible = bool(self.ids)
        if self.on_show is not None:
            self.on_show()

    @property
    def tile_size(self) -> int:
        """The edge, in pixels, of the tiles the grid's picture is made of (and of `overlays`)."""
        return self.thumbs.size

    def set_overlays(self, overlays: dict[int, np.ndarray]) -> None:
        """Show these tiles (uint8, `tile_size` square) instead of the thumbnails of their items; {}: none."""
        changed = overlays.keys() != self.overlays.keys() or any(
            tile is not self.overlays[item] for item, tile in overlays.items())
        self.overlays = dict(overlays)
        if changed and self.ids:
            self._image.data = self._composite(round(self.figure.y_range.end))

    def set_columns(self, columns: int) -> None:
        """Tiles per row (a narrower place shows fewer); the review shown is laid out again."""
        self.columns = columns
        self.figure.width = columns * self.tile_px
        self.figure.x_range.end = columns
        if self.review is not None:
            self.show(self.review)

    def _on_pointer(self, attr, old, new) -> None:
        kind, _, rest = new.partition(":")
        item = rest.split(":")[0]
        known = item.isdigit() and int(item) in self.ids
        if kind == "hover":
            self.hovered = int(item) if known else None
        elif kind == "tap" and known:
            self.toggle(int(item))

    @property
    def dropped(self) -> set[int]:
        return self.review.dropped if self.review is not None else set()

    def toggle(self, item_id: int) -> None:
        self.review.toggle(item_id)
        self._cells.data.update(veil=self._veil(), cross=self._cross())
        self.on_change()

    def _veil(self) -> list[float]:
        return [0.65 if i in self.dropped else 0.0 for i in self.ids]

    def _cross(self) -> list[float]:
        return [0.9 if i in self.dropped else 0.0 for i in self.ids]

    def _composite(self, rows: int) -> dict:
        tiles = self.thumbs.get(self.ids)
        size = tiles.shape[1]
        canvas = np.full((rows * size, self.columns * size, 3), 255, dtype=np.uint8)
        for position, (item, tile) in enumerate(zip(self.ids, tiles)):
            r, c = divmod(position, self.columns)
            canvas[r * size:(r + 1) * size, c * size:(c + 1) * size] = self.overlays.get(item, tile)
        return dict(url=[to_data_uri(encode_jpeg(canvas, 85))], x=[0], y=[rows], w=[self.columns], h=[rows])
