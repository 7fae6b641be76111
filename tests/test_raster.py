"""The map past its threshold of points (labeler/ui/raster.py, MapView's server-drawn mode): the selection a lasso
or box geometry makes, the image of a view, the hovered point, and MapView giving the app the same calls as the
browser-drawn scatter does."""
import json

import numpy as np
import pytest

pytest.importorskip("datashader")
from labeler.ui.map import MapView  # noqa: E402
from labeler.ui.raster import PointsImage, _shade, inside_box, inside_lasso, over_rgb  # noqa: E402


class Thumbs:
    def get(self, ids, tile_px):
        return np.full((len(ids), tile_px, tile_px, 3), 128, dtype=np.uint8)


def circle(cx, cy, r, k=48):
    angle = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return cx + r * np.cos(angle), cy + r * np.sin(angle)


def test_a_lasso_selects_the_points_inside_its_polygon_as_an_exact_test_does():
    rng = np.random.default_rng(0)
    xy = rng.random((200_000, 2)).astype(np.float32)
    xs, ys = circle(0.4, 0.6, 0.2)
    # the exact answer: a point is inside a convex polygon when it is on the inner side of every edge
    ex, ey = np.roll(xs, -1) - xs, np.roll(ys, -1) - ys
    side = ex[None, :] * (xy[:, 1:2] - ys[None, :]) - ey[None, :] * (xy[:, 0:1] - xs[None, :])
    exact = (side >= 0).all(axis=1)
    got = inside_lasso(xy, xs, ys)
    assert got.sum() > 20_000
    # the mask is 2048 cells across the polygon: only points within a cell of the edge may differ
    assert (got != exact).sum() < 0.005 * exact.sum()
    assert not got[np.hypot(xy[:, 0] - 0.4, xy[:, 1] - 0.6) > 0.21].any()


def test_a_lasso_of_too_few_points_or_no_area_and_nan_positions_select_nothing():
    xy = np.array([[0.5, 0.5], [np.nan, np.nan]], dtype=np.float32)
    assert not inside_lasso(xy, [0.4, 0.6], [0.4, 0.6]).any()
    assert not inside_lasso(xy, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]).any()
    assert inside_lasso(xy, [0.4, 0.6, 0.6, 0.4], [0.4, 0.4, 0.6, 0.6]).tolist() == [True, False]
    assert inside_box(xy, 0.6, 0.4, 0.6, 0.4).tolist() == [True, False]


def test_the_image_shows_each_colour_where_its_points_are_and_dims_the_unselected():
    xy = np.array([[0.25, 0.25]] * 50 + [[0.75, 0.75]] * 50, dtype=np.float32)
    image = PointsImage(xy)
    image.colour(np.array(["#ff0000"] * 50 + ["#0000ff"] * 50, dtype=object), np.ones(100, dtype=np.float32))
    rgba = image.rgba((0, 1), (0, 1), (100, 100))
    # row 0 is the top (y = 1): the red point (0.25, 0.25) is low on the left, the blue one high on the right
    assert tuple(rgba[75, 25][:3]) == (255, 0, 0) and rgba[75, 25][3] > 200
    assert tuple(rgba[25, 75][:3]) == (0, 0, 255) and rgba[25, 75][3] > 200
    assert rgba[50, 50][3] == 0
    selected = np.arange(100) < 50
    dimmed = image.rgba((0, 1), (0, 1), (100, 100), selected)
    assert dimmed[75, 25][3] > 200 and dimmed[25, 75][3] < rgba[25, 75][3] * 0.4


def shaded_in_numpy(counts, palette, min_alpha=90):
    """The shading's rules written plainly in numpy (what the compiled `_shade` replaced; about 10x slower)."""
    counts = np.nan_to_num(counts)
    height, width, _ = counts.shape
    sums = np.zeros((height + 2, width + 2, 4))
    sums[1:-1, 1:-1, :3] = counts @ palette
    sums[1:-1, 1:-1, 3] = counts.sum(axis=2)
    spread = sum(sums[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
    total = spread[..., 3]
    drawn = total > 0
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = np.clip(spread[..., :3] / np.where(drawn, total, 1)[..., None], 0, 255)
    hist, edges = np.histogram(total[drawn], bins=256)
    cdf = np.concatenate([[0.0], np.cumsum(hist) / drawn.sum()])
    rank = cdf[np.clip(np.searchsorted(edges, total, side="right"), 0, 256)]
    rgba[..., 3] = np.where(drawn, min_alpha + (255 - min_alpha) * rank, 0)
    return rgba


def test_the_compiled_shading_follows_its_rules_and_the_composite_is_alpha_over_the_thumbnails():
    rng = np.random.default_rng(1)
    counts = rng.exponential(1.0, (60, 80, 8)) * (rng.random((60, 80, 8)) < 0.05)
    counts[counts == 0] = np.nan                          # datashader's sum where no point of a colour falls
    counts[:, :, 5:] = np.nan                             # the slots beyond the palette's colours
    palette = np.zeros((8, 3))
    palette[:5] = rng.integers(0, 256, (5, 3))
    got, expected = _shade(counts, palette).astype(int), shaded_in_numpy(counts, palette).astype(int)
    assert (got[..., 3] > 0).sum() > 1000 and np.array_equal(got[..., 3] > 0, expected[..., 3] > 0)
    assert np.abs(got - expected).max() <= 1                # float rounding of the same sums
    assert not _shade(np.full((4, 4, 8), np.nan), palette).any()
    bottom = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    top = _shade(counts, palette)
    alpha = top[..., 3:4] / 255
    assert np.abs(over_rgb(top, bottom).astype(int) - (top[..., :3] * alpha + bottom * (1 - alpha)).astype(int)).max() <= 1


def test_the_nearest_point_within_the_radius_is_hovered():
    image = PointsImage(np.array([[0.1, 0.1], [np.nan, np.nan], [0.5, 0.5]], dtype=np.float32))
    assert image.nearest(0.49, 0.5, 0.02) == 2
    assert image.nearest(0.3, 0.3, 0.02) is None


def test_map_view_draws_an_image_past_its_threshold_and_reports_a_lassos_ids():
    selections, hovers = [], []
    view = MapView(Thumbs(), "canvas", on_select=selections.append, on_hover=hovers.append, raster_from=100)
    rng = np.random.default_rng(1)
    ids = np.arange(10, 310)                    # items 10..309 drawn, of 320
    xy = rng.random((300, 2)).astype(np.float32)
    colour = np.full(320, "#bbbbbb", dtype=object)
    view.draw(xy, ids, 320, colour, np.full(320, 0.9, dtype=np.float32), np.full((320, 3), -1),
              reset_view=True)
    assert view.raster and len(view.source.data["x"]) == 0
    assert view.ids.tolist() == ids.tolist()
    drawn = view._tiles.data["url"][0]
    assert drawn.startswith("data:image/jpeg;base64,"), "thumbnails and points: one JPEG of the view"
    xs, ys = circle(0.5, 0.5, 0.25)
    view._on_geometry(json.dumps(dict(n=1, type="poly", x=list(xs), y=list(ys))))
    inside = np.hypot(xy[:, 0] - 0.5, xy[:, 1] - 0.5) < 0.24
    assert set(inside.nonzero()[0] + 10) <= set(selections[-1])
    assert len(selections[-1]) < inside.sum() + 10
    shown = view._tiles.data["url"][0]
    assert shown != drawn, "the selection is drawn"
    for bad in ("{", "[1, 2]", json.dumps(dict(type="poly", x=None, y=None)), json.dumps(dict(type="rect", x0=0)),
                json.dumps(dict(type="rect", x0="a", x1=1, y0=0, y1=1)), json.dumps(dict(type="point", x=0, y=0))):
        view._on_geometry(bad)
    assert len(selections) == 1, "a geometry that is not a finished lasso or box selects nothing"
    view._on_geometry(json.dumps(dict(n=2, type="rect", x0=-1, x1=2, y0=-1, y1=2)))
    assert sorted(selections[-1]) == ids.tolist()
    view.clear_selection()
    assert view._selected is None and view._tiles.data["url"][0] != shown
    colour[ids[:5]] = "#ff0000"
    view.recolour(colour, np.full(320, 0.9, dtype=np.float32), np.full((320, 3), -1))
    view._on_pointer(f"{xy[7, 0]} {xy[7, 1]}")
    assert hovers == [17]
    view._on_pointer("not a place")
    assert hovers == [17]


def test_map_view_below_its_threshold_keeps_the_browsers_scatter():
    view = MapView(Thumbs(), "canvas", on_select=lambda ids: None, on_hover=lambda i: None, raster_from=1000)
    xy = np.random.default_rng(2).random((50, 2)).astype(np.float32)
    view.draw(xy, np.arange(50), 50, np.full(50, "#bbbbbb", dtype=object), np.ones(50, dtype=np.float32),
              np.full((50, 3), -1))
    assert not view.raster and len(view.source.data["x"]) == 50
