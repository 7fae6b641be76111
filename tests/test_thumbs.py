import io
import os

import numpy as np
import pytest
from PIL import Image

from engine import Workspace
from labeler.errors import ThumbnailError
from labeler.thumbs import CROSS_RGB, FAILED_RGB, PAD_RGB, ThumbCache, failed_tile, resize_tiles

RED = (200, 30, 30)


def _solid(path, size, colour=RED, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "images"
    _solid(folder / "a_wide.png", (100, 50))
    _solid(folder / "b_tall.png", (30, 90), (20, 160, 60))
    _solid(folder / "c_photo.jpg", (640, 480), (30, 60, 200))
    _solid(folder / "d_tiny.png", (8, 8), (250, 250, 0))
    return folder


def _workspace(folder):
    ws = Workspace(folder)
    ws.sync_items()
    return ws


def test_build_makes_a_tile_per_image_that_keeps_its_aspect_centred_on_grey(folder):
    ws = _workspace(folder)
    result = ThumbCache(ws).build(workers=0)
    assert (result.built, result.cached, result.failed, result.n_items) == (4, 0, [], 4)
    cache = ThumbCache(ws)  # reads back what the build wrote
    tiles = cache.get([0, 1, 2, 3])
    assert tiles.shape == (4, 64, 64, 3) and tiles.dtype == np.uint8
    wide = tiles[0].astype(int)
    assert np.abs(wide[16:48] - RED).max() <= 2  # 100x50 -> a 64x32 content area
    assert (wide[:16] == PAD_RGB).all() and (wide[48:] == PAD_RGB).all()
    tall = tiles[1].astype(int)  # 30x90 -> 21x64, centred
    assert (tall[:, :21] == PAD_RGB).all() and np.abs(tall[:, 22:42] - (20, 160, 60)).max() <= 2
    assert np.abs(tiles[2, 8:56].astype(int) - (30, 60, 200)).max() <= 8  # 640x480 JPEG -> 64x48
    assert np.abs(tiles[3].astype(int) - (250, 250, 0)).max() <= 2  # small images are enlarged
    assert cache.done_mask().tolist() == [True] * 4
    assert (ws.root / "thumbs" / "64.npy").exists()


def test_second_build_reads_no_image(folder, monkeypatch):
    ws = _workspace(folder)
    ThumbCache(ws).build(workers=0)
    monkeypatch.setattr("labeler.thumbs.decode_image", lambda *a, **k: pytest.fail("an image was decoded"))
    result = ThumbCache(ws).build(workers=0)
    assert (result.built, result.cached) == (0, 4)


def test_changed_and_added_files_alone_are_rebuilt(folder, monkeypatch):
    ws = _workspace(folder)
    ThumbCache(ws).build(workers=0)
    monkeypatch.setattr("engine._atomic.COPY_ROWS", 3)  # the arrays grow in several steps
    changed = _solid(folder / "a_wide.png", (50, 100), (0, 0, 250))
    os.utime(changed, ns=(1, 1))
    _solid(folder / "e_new.png", (20, 20), (0, 250, 0))
    items = ws.sync_items()
    decoded = []
    import labeler.thumbs as thumbs
    real = thumbs.decode_image
    monkeypatch.setattr(thumbs, "decode_image", lambda data, path, **kw: decoded.append(path) or real(data, path, **kw))
    cache = ThumbCache(ws)
    result = cache.build(items, workers=0)
    assert (result.built, result.cached) == (2, 3)
    assert sorted(os.path.basename(p) for p in decoded) == ["a_wide.png", "e_new.png"]
    tiles = cache.get([0, 4]).astype(int)
    assert np.abs(tiles[0, :, 24:40] - (0, 0, 250)).max() <= 2 and (tiles[0, :, :8] == PAD_RGB).all()
    assert np.abs(tiles[1] - (0, 250, 0)).max() <= 2


def test_unreadable_file_gets_the_crossed_out_tile_and_is_reported(folder):
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    ws = _workspace(folder)
    cache = ThumbCache(ws)
    result = cache.build(workers=0)
    assert result.built == 4
    assert result.failed == [{"path": "broken.jpg", "reason": "not an image (cannot identify format)"}]
    broken = next(item.id for item in ws.items() if item.path == "broken.jpg")
    assert np.array_equal(cache.get([broken])[0], failed_tile(64))
    assert not cache.done_mask()[broken] and cache.failures == {broken: "not an image (cannot identify format)"}
    tile = failed_tile(64)
    assert (tile[0, 0] == FAILED_RGB).all() and (tile[32, 32] == CROSS_RGB).all()
    assert ThumbCache(ws).build(workers=0).failed == result.failed  # reported again, not re-read


def test_a_killed_build_keeps_what_it_flushed_and_the_next_build_does_the_rest(folder, monkeypatch):
    ws = _workspace(folder)
    monkeypatch.setattr("labeler.thumbs._CHUNK", 1)
    monkeypatch.setattr("labeler.thumbs._FLUSH_SECONDS", 0.0)
    seen_on_disk = []

    def progress(done, total):
        seen_on_disk.append(ThumbCache(ws).done_mask(4).tolist())  # what another process would read
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ThumbCache(ws).build(workers=0, progress=progress)
    assert seen_on_disk[0] == [True, False, False, False]
    result = ThumbCache(ws).build(workers=0)
    assert (result.built, result.cached) == (2, 2)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_process_and_in_process_builds_are_identical(folder, tmp_path, monkeypatch, start_method):
    monkeypatch.setattr("labeler.thumbs.worker_start_method", lambda: start_method)
    (folder / "broken.png").write_bytes(b"")
    arrays = []
    for workers in (0, 1):
        ws = Workspace(folder, workspace=tmp_path / f"ws{workers}")
        ws.sync_items()
        cache = ThumbCache(ws)
        cache.build(workers=workers)
        arrays.append(cache.get(np.arange(5)))
    assert np.array_equal(arrays[0], arrays[1])


def test_smaller_sizes_come_from_stored_levels_averaged_down(folder):
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "f_gradient.png")
    ws = _workspace(folder)
    cache = ThumbCache(ws)
    cache.build(workers=0)
    assert cache.levels == (64, 32, 16, 8)
    assert (ws.root / "thumbs" / "64-8.npy").exists()
    full = cache.get(np.arange(5))
    for size in (32, 16, 8):
        stored = cache.get(np.arange(5), size=size)
        assert stored.shape == (5, size, size, 3)
        assert np.abs(stored.astype(int) - resize_tiles(full, size)).max() <= 1  # halved step by step
    assert cache.get([0], size=128).shape == (1, 128, 128, 3)
    assert cache.get([0], size=24).shape == (1, 24, 24, 3)


def test_rows_not_built_yet_read_as_plain_grey(folder):
    ws = _workspace(folder)
    cache = ThumbCache(ws)
    assert (cache.get([0, 2]) == PAD_RGB).all()
    assert cache.get([]).shape == (0, 64, 64, 3)
    assert cache.done_mask(4).tolist() == [False] * 4


def test_progress_is_reported_up_to_the_total(folder):
    calls = []
    ThumbCache(_workspace(folder)).build(workers=0, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4)


def test_jpeg_and_hover_preview_keep_the_aspect(folder):
    ws = _workspace(folder)
    cache = ThumbCache(ws)
    cache.build(workers=0)
    assert Image.open(io.BytesIO(cache.jpeg(0))).size == (64, 64)
    assert Image.open(io.BytesIO(cache.jpeg(0, size=128))).size == (128, 128)
    preview = Image.open(io.BytesIO(cache.preview_jpeg(2, size=256)))  # the 640x480 photo
    assert (preview.format, preview.size) == ("JPEG", (256, 192))


def test_hover_preview_falls_back_to_the_tile_when_the_file_is_gone(folder):
    ws = _workspace(folder)
    cache = ThumbCache(ws)
    cache.build(workers=0)
    (folder / "a_wide.png").unlink()
    preview = Image.open(io.BytesIO(cache.preview_jpeg(0, size=96)))
    assert preview.size == (96, 96)
    assert np.abs(np.asarray(preview)[48, 48].astype(int) - RED).max() < 30


def test_build_refuses_a_partial_item_list(folder):
    ws = _workspace(folder)
    with pytest.raises(ThumbnailError, match="whole item list in id order"):
        ThumbCache(ws).build(ws.items()[1:], workers=0)


def test_bad_size_is_refused_with_the_value(folder):
    with pytest.raises(ThumbnailError, match="positive int of pixels .* not 0"):
        ThumbCache(None, size=0)
    with pytest.raises(ThumbnailError, match="not 2.5"):
        ThumbCache(_workspace(folder)).get([0], size=2.5)
