"""The map's thumbnails as ONE JPEG of the current view, rebuilt by the server when the view changes.

Measured in DESIGN.md: a single composite image shown as one Bokeh `ImageURL` is the only way
to draw thumbnails whose cost stays flat as the number of items grows (one image per item
costs seconds at 10k). Thumbnails go "wherever there is room": the view is cut into square
screen cells of `tile_px`, and each cell shows at most one item's tile, centred on its point.

How the app shows it (this module imports no Bokeh):
    result = render_composite(xy, thumb_cache.get, (x0, x1), (y0, y1), (width, height), 32,
                              background=plot_background_rgb)
    ImageURL(url=[to_data_uri(result.jpeg)], x=x0, y=y1, w=x1 - x0, h=y1 - y0, anchor="top_left")
The image covers exactly the view (row 0 is the top edge, y1) and is opaque, since JPEG has
no alpha: it is painted over `background`, which should be the plot's background colour. Add
its renderer BEFORE the scatter, so the points are drawn ON TOP of the thumbnails (and keep
their hover, selection and label colours); `result.ids` says which items have a tile, e.g. to
shrink their points. `canvas_px` is the plot's inner frame size in pixels (times the
device pixel ratio for a sharp image on high-DPI screens).
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from labeler.errors import CompositeError
from labeler.thumbs import encode_jpeg, resize_tiles

ThumbsGetter = Callable[[np.ndarray, int], np.ndarray]  # (ids, tile_px) -> uint8 (k, s, s, 3)
_NO_ITEM = np.iinfo(np.int64).max


class TileChoice(NamedTuple):
    """The items that get a tile: ids ascending, and each one's point on the canvas."""

    ids: np.ndarray  # int64 (k,)
    px: np.ndarray  # float64 (k, 2): x from the left edge, y from the top edge, in canvas pixels


class Composite(NamedTuple):
    """A rendered view: JPEG bytes (None when no tile was drawn), how many tiles, and whose."""

    jpeg: bytes | None
    n_drawn: int
    ids: np.ndarray  # int64 (n_drawn,), ascending


def choose_tiles(xy, visible_mask, x_range, y_range, canvas_px, tile_px: int, priority=None) -> TileChoice:
    """Pick at most one item per `tile_px`-square screen cell of the view, vectorized.

    In each cell the item with the highest `priority` wins (ties: lowest id); without
    `priority`, the point nearest the cell's centre. Items outside the view, with a
    non-finite position, or False in `visible_mask` are never chosen. The cell grid is
    anchored at data coordinate (0, 0) rather than at the view's corner, so panning without
    zooming keeps the same winners (tiles do not jump); a cell cut by the view's edge competes
    among its visible points only. Zooming in makes cells smaller in data units, so more of the
    points of a region win a cell.
    """
    xy = _points(xy)
    (x0, x1), (y0, y1) = _span(x_range, "x_range"), _span(y_range, "y_range")
    width, height = _canvas(canvas_px)
    tile_px = _positive_int(tile_px, "tile_px")
    scale_x, scale_y = width / (x1 - x0), height / (y1 - y0)  # canvas pixels per data unit
    x, y = xy[:, 0], xy[:, 1]
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)  # False for NaN
    if visible_mask is not None:
        inside &= _per_item(visible_mask, len(xy), "visible_mask").astype(bool)
    ids = np.flatnonzero(inside)
    # cell coordinates in tile units, columns to the right and rows downwards from (0, 0)
    u, v = x[ids] * (scale_x / tile_px), -y[ids] * (scale_y / tile_px)
    col, row = np.floor(u), np.floor(v)
    first_col, first_row = np.floor(x0 * scale_x / tile_px), np.floor(-y1 * scale_y / tile_px)
    n_cols, n_rows = -(-width // tile_px) + 2, -(-height // tile_px) + 2
    cell = (np.clip(row - first_row, 0, n_rows - 1).astype(np.int64) * n_cols
            + np.clip(col - first_col, 0, n_cols - 1).astype(np.int64))
    if priority is None:
        score = -((u - col - 0.5) ** 2 + (v - row - 0.5) ** 2)
    else:
        score = np.nan_to_num(_per_item(priority, len(xy), "priority").astype(np.float64)[ids],
                              nan=-np.inf, posinf=np.finfo(np.float64).max)
    best = np.full(n_cols * n_rows, -np.inf)
    np.maximum.at(best, cell, score)
    top = score >= best[cell]
    winner = np.full(n_cols * n_rows, _NO_ITEM, dtype=np.int64)
    np.minimum.at(winner, cell[top], ids[top])
    chosen = np.sort(winner[winner != _NO_ITEM])
    px = np.column_stack(((x[chosen] - x0) * scale_x, (y1 - y[chosen]) * scale_y))
    return TileChoice(chosen, px)


def render_composite(xy, thumbs_getter: ThumbsGetter, x_range, y_range, canvas_px, tile_px: int, *,
                     visible_mask=None, priority=None, border=None, background=(255, 255, 255),
                     quality: int = 80) -> Composite:
    """Draw the tiles `choose_tiles` picks, centred on their points, into one JPEG of the view.

    `thumbs_getter(ids, tile_px)` returns uint8 (k, s, s, 3) tiles for ascending `ids`, s
    ideally `tile_px` (`ThumbCache.get` reads them so from its stored levels); other sizes are
    resized here, fastest when s is a multiple of `tile_px`.
    `border`: optional (n, 3) RGB per item, drawn as a frame over the outer 2 px of its tile
    (1 px below 8 px tiles); a row with a negative value gets no frame (e.g. unlabeled items).
    Where neighbouring tiles overlap, the higher `priority` is drawn on top (without
    `priority`, the lower id). Returns `Composite(None, 0, [])` when nothing is in view.
    """
    view, ids = composite_pixels(xy, thumbs_getter, x_range, y_range, canvas_px, tile_px, visible_mask=visible_mask,
                                 priority=priority, border=border, background=background)
    return Composite(None if view is None else encode_jpeg(view, quality), len(ids), ids)


def composite_pixels(xy, thumbs_getter: ThumbsGetter, x_range, y_range, canvas_px, tile_px: int, *,
                     visible_mask=None, priority=None, border=None, background=(255, 255, 255)):
    """`render_composite`'s view before encoding: (uint8 (height, width, 3) or None when nothing is in view,
    the ids drawn), for a caller that draws more over it (the server-drawn points)."""
    ids, px = choose_tiles(xy, visible_mask, x_range, y_range, canvas_px, tile_px, priority)
    if not len(ids):
        return None, ids
    width, height = _canvas(canvas_px)
    tiles = _fetch_tiles(thumbs_getter, ids, tile_px)
    if border is not None:
        _draw_frames(tiles, _per_item(border, len(xy), "border", columns=3)[ids], 2 if tile_px >= 8 else 1)
    # a margin of one tile on every side takes the tiles that stick out of the view
    row = np.empty((width + 2 * tile_px, 3), dtype=np.uint8)
    row[:] = background
    canvas = np.empty((height + 2 * tile_px, *row.shape), dtype=np.uint8)
    canvas[:] = row  # a row at a time: ~50x faster than broadcasting one pixel over the canvas
    corners = (np.floor(px - tile_px / 2).astype(np.int64) + tile_px).tolist()
    for index in _bottom_to_top(ids, priority):  # at most one tile per cell, ~1 us each; overlaps in order
        left, top = corners[index]
        canvas[top:top + tile_px, left:left + tile_px] = tiles[index]
    return canvas[tile_px:tile_px + height, tile_px:tile_px + width], ids


def to_data_uri(jpeg: bytes) -> str:
    """`data:image/jpeg;base64,...` for an `ImageURL`'s url."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _fetch_tiles(thumbs_getter: ThumbsGetter, ids: np.ndarray, tile_px: int) -> np.ndarray:
    """The getter's tiles resized to `tile_px`, in an array this module may draw on."""
    raw = np.asarray(thumbs_getter(ids, tile_px))
    if raw.dtype != np.uint8 or raw.ndim != 4 or raw.shape[0] != len(ids) or raw.shape[1] != raw.shape[2] \
            or raw.shape[3] != 3:
        raise CompositeError(f"thumbs_getter must return uint8 tiles of shape ({len(ids)}, s, s, 3); "
                         f"got {raw.dtype} {raw.shape}.")
    tiles = resize_tiles(raw, tile_px)
    return tiles.copy() if np.shares_memory(tiles, raw) else tiles


def _bottom_to_top(ids: np.ndarray, priority) -> list[int]:
    """Positions in `ids` in drawing order, so the highest priority (ties: the lowest id) ends on top."""
    if priority is None:
        return list(range(len(ids) - 1, -1, -1))
    return np.argsort(-np.asarray(priority, dtype=np.float64)[ids], kind="stable")[::-1].tolist()


def _draw_frames(tiles: np.ndarray, colours: np.ndarray, thickness: int) -> None:
    framed = (colours >= 0).all(axis=1)
    colour = np.clip(colours[framed], 0, 255).astype(np.uint8)[:, None, None, :]
    tiles[framed, :thickness] = colour
    tiles[framed, -thickness:] = colour
    tiles[framed, :, :thickness] = colour
    tiles[framed, :, -thickness:] = colour


def _points(xy) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise CompositeError(f"xy must be an (n, 2) array of point positions; got shape {xy.shape}.")
    return xy


def _span(value, name: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CompositeError(f"{name} must be a pair (start, end); got {value!r}.") from None
    if not (np.isfinite(start) and np.isfinite(end) and start < end):
        raise CompositeError(f"{name} must be finite with start < end; got ({start}, {end}). "
                         f"Skip drawing until the plot's ranges are known.")
    return start, end


def _canvas(canvas_px) -> tuple[int, int]:
    try:
        width, height = canvas_px
    except (TypeError, ValueError):
        raise CompositeError(f"canvas_px must be (width, height) in pixels; got {canvas_px!r}.") from None
    return _positive_int(width, "canvas width"), _positive_int(height, "canvas height")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CompositeError(f"{name} must be a positive int of pixels; got {value!r}.")
    return int(value)


def _per_item(values, n: int, name: str, columns: int | None = None) -> np.ndarray:
    values = np.asarray(values)
    expected = (n,) if columns is None else (n, columns)
    if values.shape != expected:
        raise CompositeError(f"{name} must have shape {expected}, one entry per point; got {values.shape}.")
    return values
