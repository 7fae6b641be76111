import base64
import io

import numpy as np
import pytest
from PIL import Image

from labeler.ui.composite import choose_tiles, render_composite, to_data_uri
from labeler.errors import CompositeError

VIEW = dict(x_range=(0.0, 10.0), y_range=(0.0, 10.0), canvas_px=(100, 100))


def _cells(xy, tile_px, canvas_px=(100, 100), x_range=(0.0, 10.0), y_range=(0.0, 10.0)):
    """The documented grid: tile_px screen cells anchored at data (0, 0)."""
    cell_w = tile_px * (x_range[1] - x_range[0]) / canvas_px[0]
    cell_h = tile_px * (y_range[1] - y_range[0]) / canvas_px[1]
    return [tuple(c) for c in np.floor(np.column_stack((xy[:, 0] / cell_w, -xy[:, 1] / cell_h))).astype(int)]


def _solid_getter(colours):
    """Tiles of one colour per item, 16 px, whatever size is asked for (the renderer resizes)."""
    colours = np.asarray(colours, dtype=np.uint8)
    return lambda ids, tile_px: np.broadcast_to(colours[ids][:, None, None, :], (len(ids), 16, 16, 3)).copy()


def _decode(jpeg):
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image, np.asarray(image).astype(int)


def test_at_most_one_tile_per_cell_and_only_points_in_view():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-5, 15, size=(5000, 2))
    xy[:50, 0] = np.nan
    ids, px = choose_tiles(xy, None, tile_px=10, **VIEW)
    inside = (xy >= 0).all(axis=1) & (xy <= 10).all(axis=1)  # False for NaN
    assert inside[ids].all() and len(ids) > 50
    cells = _cells(xy[ids], 10)
    assert len(set(cells)) == len(cells)
    assert np.allclose(px[:, 0], xy[ids, 0] * 10) and np.allclose(px[:, 1], (10 - xy[ids, 1]) * 10)


def test_every_occupied_cell_gets_a_tile():
    xy = np.array([[0.5, 9.5], [0.6, 9.4], [5.5, 5.5], [9.9, 0.1]])
    ids, _ = choose_tiles(xy, None, tile_px=10, **VIEW)
    assert ids.tolist() == [0, 2, 3]  # 0 is nearer its cell's centre than 1


def test_visible_mask_hides_points():
    xy = np.array([[0.5, 9.5], [0.6, 9.4]])
    ids, _ = choose_tiles(xy, np.array([False, True]), tile_px=10, **VIEW)
    assert ids.tolist() == [1]


def test_priority_wins_the_cell_and_ties_go_to_the_lowest_id():
    xy = np.array([[0.5, 9.5], [0.6, 9.4], [0.7, 9.3], [5.5, 5.5]])
    ids, _ = choose_tiles(xy, None, tile_px=10, priority=np.array([1.0, 3.0, 2.0, 0.0]), **VIEW)
    assert ids.tolist() == [1, 3]
    ids, _ = choose_tiles(xy, None, tile_px=10, priority=np.array([1.0, 5.0, 5.0, 0.0]), **VIEW)
    assert ids.tolist() == [1, 3]


def test_zooming_in_gives_tiles_to_more_points_of_the_region():
    rng = np.random.default_rng(1)
    xy = rng.uniform(4, 6, size=(400, 2))
    wide, _ = choose_tiles(xy, None, tile_px=10, **VIEW)
    zoomed, _ = choose_tiles(xy, None, (4.0, 6.0), (4.0, 6.0), (100, 100), 10)
    assert len(zoomed) > 3 * len(wide)


def test_panning_keeps_the_same_winners():
    rng = np.random.default_rng(2)
    xy = rng.uniform(3, 7, size=(2000, 2))
    here, _ = choose_tiles(xy, None, (0.0, 10.0), (0.0, 10.0), (100, 100), 10)
    panned, _ = choose_tiles(xy, None, (0.3, 10.3), (-0.2, 9.8), (100, 100), 10)
    assert set(here.tolist()) == set(panned.tolist())


def test_choose_tiles_handles_100k_points():
    xy = np.random.default_rng(3).normal(size=(100_000, 2))
    ids, px = choose_tiles(xy, None, (-3.0, 3.0), (-3.0, 3.0), (1000, 700), 32)
    assert 0 < len(ids) <= (1000 // 32 + 2) * (700 // 32 + 2) and px.shape == (len(ids), 2)


@pytest.mark.parametrize("bad, message", [
    (dict(x_range=(1.0, 1.0)), "x_range must be finite with start < end"),
    (dict(y_range=(float("nan"), 1.0)), "y_range must be finite"),
    (dict(canvas_px=(0, 10)), "canvas width must be a positive int"),
    (dict(tile_px=2.5), "tile_px must be a positive int"),
])
def test_bad_view_is_refused_with_the_value(bad, message):
    args = dict(VIEW, tile_px=10) | bad
    with pytest.raises(CompositeError, match=message):
        choose_tiles(np.zeros((3, 2)), None, args["x_range"], args["y_range"], args["canvas_px"], args["tile_px"])


def test_per_item_arrays_of_the_wrong_length_are_refused():
    with pytest.raises(CompositeError, match=r"priority must have shape \(3,\)"):
        choose_tiles(np.zeros((3, 2)), None, tile_px=10, priority=np.zeros(2), **VIEW)


def test_render_draws_each_tile_centred_on_its_point_over_the_background():
    xy = np.array([[2.0, 8.0], [7.0, 3.0]])  # canvas pixels (20, 20) and (70, 70)
    colours = np.array([[220, 20, 20], [20, 20, 220]], dtype=np.uint8)
    result = render_composite(xy, _solid_getter(colours), tile_px=16, background=(255, 255, 255), **VIEW)
    image, pixels = _decode(result.jpeg)
    assert image.size == (100, 100) and result.n_drawn == 2 and result.ids.tolist() == [0, 1]
    assert np.abs(pixels[20, 20] - colours[0]).max() < 25 and np.abs(pixels[70, 70] - colours[1]).max() < 25
    assert np.abs(pixels[20, 70] - 255).max() < 25  # nothing drawn there: the background


@pytest.mark.parametrize("priority, on_top", [([1.0, 2.0], 1), ([2.0, 1.0], 0), (None, 0)])
def test_where_tiles_overlap_the_higher_priority_is_drawn_on_top(priority, on_top):
    xy = np.array([[3.0, 5.0], [3.6, 5.0]])  # canvas x 30 and 36: neighbouring cells, overlapping tiles
    colours = np.array([[220, 20, 20], [20, 20, 220]])
    priority = None if priority is None else np.array(priority)
    result = render_composite(xy, _solid_getter(colours), tile_px=16, priority=priority, **VIEW)
    _, pixels = _decode(result.jpeg)
    assert result.n_drawn == 2 and np.abs(pixels[50, 33] - colours[on_top]).max() < 25


def test_canvas_row_zero_is_the_top_of_the_view():
    xy = np.array([[5.0, 9.0]])  # near the top edge
    result = render_composite(xy, _solid_getter(np.array([[0, 0, 0]])), tile_px=8, **VIEW)
    _, pixels = _decode(result.jpeg)
    assert pixels[10, 50].max() < 40 and pixels[90, 50].min() > 215


def test_border_frames_a_tile_in_its_label_colour_and_negative_means_none():
    xy = np.array([[2.0, 8.0], [7.0, 3.0]])
    colours = np.array([[128, 128, 128], [128, 128, 128]], dtype=np.uint8)
    border = np.array([[0, 200, 0], [-1, -1, -1]])
    result = render_composite(xy, _solid_getter(colours), tile_px=16, border=border, quality=95, **VIEW)
    _, pixels = _decode(result.jpeg)
    assert np.abs(pixels[20, 12] - (0, 200, 0)).max() < 40  # left edge of tile 0 (x 12..27)
    assert np.abs(pixels[20, 20] - 128).max() < 20  # its inside keeps the thumbnail
    assert np.abs(pixels[70, 62] - 128).max() < 20  # tile 1 has no frame


def test_tiles_cut_by_the_edge_of_the_view_are_drawn_in_part():
    xy = np.array([[0.1, 0.1]])  # the bottom-left corner
    result = render_composite(xy, _solid_getter(np.array([[0, 0, 0]])), tile_px=16, **VIEW)
    _, pixels = _decode(result.jpeg)
    assert result.n_drawn == 1 and pixels[97, 2].max() < 40


def test_nothing_in_view_renders_nothing():
    xy = np.array([[20.0, 20.0]])
    result = render_composite(xy, _solid_getter(np.array([[0, 0, 0]])), tile_px=16, **VIEW)
    assert (result.jpeg, result.n_drawn, len(result.ids)) == (None, 0, 0)


def test_a_getter_returning_the_wrong_shape_is_named():
    with pytest.raises(CompositeError, match="thumbs_getter must return uint8 tiles"):
        render_composite(np.array([[5.0, 5.0]]), lambda ids, px: np.zeros((1, 8, 8)), tile_px=8, **VIEW)


def test_data_uri_round_trips_the_jpeg():
    uri = to_data_uri(b"\xff\xd8abc")
    assert uri.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"\xff\xd8abc"
