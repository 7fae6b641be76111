"""`embed(..., ray=...)` and `labeler embed --ray` on a local Ray instance (ray.init(num_cpus=2)): the same feature
cache as the local path, to float16 precision, with the real weights; resumable; and the local path when Ray is
not installed."""
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine import FeatureCache, Workspace, embed
from engine import ray_embed
from _helpers import write_image

pytestmark = [pytest.mark.slow, pytest.mark.weights]


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(image_folder):
    (image_folder / "not_an_image.png").write_text("<html>not a png</html>")
    return image_folder


def _cache(ws: Workspace, result) -> FeatureCache:
    return FeatureCache(ws.features_dir(result.backbone, result.size), backbone=result.backbone, size=result.size)


def _assert_same_cache(a: FeatureCache, b: FeatureCache, layers) -> None:
    np.testing.assert_array_equal(a.rows["status"], b.rows["status"])
    np.testing.assert_array_equal(a.rows["mtime_ns"], b.rows["mtime_ns"])
    assert a.failures == b.failures
    for layer in layers:
        x, y = a.load(layer, "avg").astype(np.float32), b.load(layer, "avg").astype(np.float32)
        assert x.shape == y.shape
        # float16 keeps 11 significant bits: equal up to its rounding of the same float32 result
        np.testing.assert_allclose(x, y, rtol=2 ** -10, atol=2 ** -14, err_msg=layer)


def test_ray_writes_the_local_paths_cache_in_item_order_to_float16_precision(ray_instance, folder, tmp_path):
    local_ws, ray_ws = Workspace(folder, tmp_path / "local"), Workspace(folder, tmp_path / "ray")
    local = embed(local_ws, batch_size=4, workers=0)
    on_ray = embed(ray_ws, batch_size=4, ray="local")          # joins the instance the fixture started
    assert (on_ray.embedded, on_ray.cached) == (local.embedded, local.cached) == (12, 0)
    assert on_ray.skipped == local.skipped and on_ray.skipped[0]["path"] == "not_an_image.png"
    _assert_same_cache(_cache(local_ws, local), _cache(ray_ws, on_ray), local.layers)
    assert _hashes(ray_ws) == _hashes(local_ws) and len(_hashes(local_ws)) == 12


def _hashes(ws: Workspace) -> dict[str, str]:
    with ws.connect() as conn:
        return dict(conn.execute("SELECT path, sha1 FROM items WHERE sha1 IS NOT NULL"))


def test_ray_skips_rows_already_computed_and_computes_new_and_changed_files(ray_instance, folder, tmp_path):
    ws, reference = Workspace(folder, tmp_path / "ws"), Workspace(folder, tmp_path / "reference")
    seen = []
    first = embed(ws, batch_size=4, ray="local", progress=lambda done, total: seen.append((done, total)))
    assert first.embedded == 12 and seen[-1] == (13, 13)
    embed(reference, batch_size=4, workers=0)
    write_image(folder / "c" / "new.png", seed=100)
    write_image(folder / "a" / "img_00.png", seed=101, size=(40, 48))        # changed: read again
    again = embed(ws, batch_size=4, ray="local")
    assert (again.embedded, again.cached) == (2, 11)
    local = embed(reference, batch_size=4, workers=0)
    _assert_same_cache(_cache(reference, local), _cache(ws, again), local.layers)


def test_without_ray_the_forward_passes_run_here_and_say_so(folder, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ray_embed, "ray_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="engine.embedding"):
        result = embed(Workspace(folder, tmp_path / "ws"), batch_size=4, workers=0, ray="local")
    assert result.embedded == 12
    assert "Ray is not installed (pip install 'labeler[ray]'): embedding on this machine instead" in caplog.text


def test_the_cli_embeds_on_ray_and_a_second_run_computes_nothing(folder, tmp_path):
    pytest.importorskip("ray")
    shutil.rmtree(folder / "b")
    command = [sys.executable, "-m", "labeler.cli", "embed", str(folder), "--workspace", str(tmp_path / "ws"),
               "--ray", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.strip().splitlines()[-1])["embedded"] == 6          # a/, and the page that is not an image
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert (result["embedded"], result["cached"]) == (0, 6)


def test_opening_a_project_computes_its_features_on_the_configured_ray_cluster(ray_instance, folder, tmp_path,
                                                                              monkeypatch):
    from labeler.project import RAY_ADDRESS_VARIABLE, Project
    monkeypatch.setenv(RAY_ADDRESS_VARIABLE, "local")           # what `labeler serve --ray` sets
    calls = []
    real = ray_embed.compute_rows_ray
    monkeypatch.setattr(ray_embed, "compute_rows_ray", lambda *a, **k: calls.append(k["address"]) or real(*a, **k))
    with Project(folder, tmp_path / "ws") as project:
        project.prepare()                                       # the app's opening step
        assert calls == ["local"]
    local_ws = Workspace(folder, tmp_path / "local")
    local = embed(local_ws, workers=0)
    _assert_same_cache(_cache(local_ws, local), _cache(Workspace(folder, tmp_path / "ws"), local), local.layers)
