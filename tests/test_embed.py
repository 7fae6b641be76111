import os
import shutil

import numpy as np
import pytest

from engine import FeatureCache, Workspace, embed
from engine.backbones import get_backbone_cfg
from _helpers import write_image

EMBED = dict(backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)


def _cache(ws):
    return FeatureCache(ws.features_dir("resnet18", 32), backbone="resnet18", size=32)


def test_first_embed_computes_every_layer_as_float16_rows_in_item_order(image_folder):
    ws = Workspace(image_folder)
    result = embed(ws, **EMBED)
    assert (result.embedded, result.cached, result.skipped) == (12, 0, [])
    assert result.layers == list(get_backbone_cfg("resnet18").layers)
    cache = _cache(ws)
    for layer in result.layers:
        features = cache.load(layer, "both")
        assert features.dtype == np.float16 and isinstance(features, np.memmap)
        assert features.shape[0] == 12
    paths = [item.path for item in ws.items()]
    assert paths == sorted(paths) and paths[0] == "a/img_00.png"


def test_second_embed_reuses_the_cache_without_reading_any_image(image_folder, monkeypatch):
    ws = Workspace(image_folder)
    embed(ws, **EMBED)
    monkeypatch.setattr("engine.activations.create_backbone", lambda *a, **k: pytest.fail("model rebuilt"))
    result = embed(ws, **EMBED)
    assert (result.embedded, result.cached) == (0, 12)


def test_added_images_are_computed_alone_and_get_new_ids(image_folder):
    ws = Workspace(image_folder)
    embed(ws, **EMBED)
    before = _cache(ws).load("layer4", "both")[:12].copy()
    write_image(image_folder / "a" / "zzz_new.png", seed=99)
    write_image(image_folder / "0_first.png", seed=98)  # sorts first, still gets the last id
    result = embed(ws, **EMBED)
    assert (result.embedded, result.cached) == (2, 12)
    items = ws.items()
    assert [it.path for it in items[12:]] == ["0_first.png", "a/zzz_new.png"]
    after = _cache(ws).load("layer4", "both")
    np.testing.assert_array_equal(after[:12], before)


def test_changed_file_is_recomputed_and_matches_a_fresh_computation(image_folder, tmp_path):
    ws = Workspace(image_folder)
    embed(ws, **EMBED)
    target = image_folder / "b" / "img_07.jpg"
    write_image(target, seed=1234, size=(60, 50))
    result = embed(ws, **EMBED)
    assert (result.embedded, result.cached) == (1, 11)
    fresh_folder = tmp_path / "fresh"
    shutil.copytree(image_folder, fresh_folder, ignore=shutil.ignore_patterns(".labeler"))
    fresh = Workspace(fresh_folder)
    embed(fresh, **EMBED)
    row = [it.path for it in ws.items()].index("b/img_07.jpg")
    np.testing.assert_allclose(_cache(ws).load("layer3", "both")[row].astype(np.float32),
                               _cache(fresh).load("layer3", "both")[row].astype(np.float32), atol=1e-2)


def test_a_touched_file_with_new_mtime_is_recomputed(image_folder):
    ws = Workspace(image_folder)
    embed(ws, **EMBED)
    target = image_folder / "a" / "img_02.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert embed(ws, **EMBED).embedded == 1


def test_removed_file_is_marked_missing_and_keeps_its_row(image_folder):
    ws = Workspace(image_folder)
    embed(ws, **EMBED)
    (image_folder / "a" / "img_03.jpg").unlink()
    result = embed(ws, **EMBED)
    assert (result.embedded, result.cached, result.n_items) == (0, 11, 12)
    missing = [it.path for it in ws.items() if it.missing]
    assert missing == ["a/img_03.jpg"]


def test_salted_folder_embeds_the_good_images_and_reports_every_bad_one(image_folder, monkeypatch):
    from PIL import Image
    bad = image_folder / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("this is not an image")
    good = (image_folder / "a" / "img_01.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (400, 400)).save(bad / "bomb.png")
    (bad / "locked.png").write_bytes((image_folder / "a" / "img_00.png").read_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    real_open = open

    def guarded_open(path, *args, **kwargs):  # tests run as root, where chmod 000 does not block reads
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", guarded_open)
    result = embed(Workspace(image_folder), **EMBED)
    reasons = {s["path"]: s["reason"] for s in result.skipped}
    assert result.embedded == 12
    assert set(reasons) == {"bad/empty.jpg", "bad/notes.png", "bad/truncated.jpg", "bad/bomb.png", "bad/locked.png"}
    assert "empty" in reasons["bad/empty.jpg"]
    assert "not an image" in reasons["bad/notes.png"]
    assert "truncated" in reasons["bad/truncated.jpg"]
    assert "decompression bomb" in reasons["bad/bomb.png"]
    assert "permission denied" in reasons["bad/locked.png"].lower()
    again = embed(Workspace(image_folder), **EMBED)
    assert again.embedded == 0 and {s["path"] for s in again.skipped} == set(reasons)
