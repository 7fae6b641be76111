"""Ray on a local instance (ray.init(num_cpus=2)).

`embed(..., ray=...)` and `labeler embed --ray`: the same feature cache as the local path, to float16 precision,
with the real weights; resumable; and the local path when Ray is not installed. Prediction over a folder
(`engine.ray_predict`: `labeler predict --ray`, the fine-tuned model's layer of the map): the local path's outputs,
targets and features, in the order asked for."""
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
    with caplog.at_level(logging.WARNING, logger="engine.ray_embed"):
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


# --- prediction over a folder ------------------------------------------------------------------------------------

SIZE = 32
CLASSES = ["blue", "red"]


def _exported_model(path):
    """A small classifier with random weights (no download), exported as `labeler train --out` writes one."""
    import torch
    from types import SimpleNamespace
    from torch.utils.data import DataLoader, TensorDataset

    from engine.backbones import DEFAULT_BACKBONE
    from engine.learner import Learner
    from engine.models import create_model
    torch.manual_seed(0)
    model = create_model("classify", DEFAULT_BACKBONE, 2, pretrained=False)
    for module in model.body.modules():     # a freshly made body outputs about 1e-7, which float16 stores as 0
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(module.bias, 0.2)
    loader = DataLoader(TensorDataset(torch.randn(4, 3, SIZE, SIZE), torch.arange(4) % 2), batch_size=4)
    data = SimpleNamespace(task="classify", classes=CLASSES, codes=None, void_code=None, n_out=2, train=loader,
                           valid=loader, size=SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return Learner(data, model, device="cpu").export(path)


def test_ray_predicts_what_the_local_path_predicts_in_the_order_asked(ray_instance, folder, tmp_path):
    from engine.data import discover_images
    from engine.predictor import load_exported
    from engine.ray_predict import ray_outputs
    model_file = _exported_model(tmp_path / "model.pt")
    predictor = load_exported(model_file)
    paths = discover_images(folder)
    assert "not_an_image.png" in paths
    targets = {path: CLASSES[i % 2] for i, path in enumerate(paths[:7])}
    local = list(predictor.labeled_outputs(folder, paths, targets, batch_size=4, workers=0))
    heard = []
    on_ray = list(ray_outputs(model_file, folder, paths, targets, batch_size=4, address="local", progress=heard.append))
    assert [row[0] for row in on_ray] == [row[0] for row in local] == [p for p in paths if p != "not_an_image.png"]
    assert sum(heard) == len(paths) == 13
    for (_, size, output, target, feature), (_, size_here, output_here, target_here) in zip(on_ray, local):
        assert size == size_here and feature is None
        np.testing.assert_allclose(output.numpy(), output_here.numpy(), rtol=1e-4, atol=1e-6)
        assert (target is None) == (target_here is None) and (target is None or target.tolist() == target_here.tolist())
    embedded = list(ray_outputs(model_file, folder, paths, embedded=True, batch_size=4, address="local"))
    here = list(predictor.embedded_outputs(folder, paths, batch_size=4, workers=0))
    assert [row[0] for row in embedded] == [row[0] for row in here]
    for (_, _, output, _, feature), (_, feature_here, output_here) in zip(embedded, here):
        np.testing.assert_allclose(feature.numpy(), feature_here.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(output.numpy(), output_here.numpy(), rtol=1e-4, atol=1e-6)


def test_a_label_the_model_cannot_know_stops_a_ray_prediction_as_it_stops_the_local_one(ray_instance, folder,
                                                                                        tmp_path):
    from engine.errors import InputError
    from engine.ray_predict import ray_outputs
    model_file = _exported_model(tmp_path / "model.pt")
    with pytest.raises(InputError, match="green"):
        list(ray_outputs(model_file, folder, ["a/img_00.png"], {"a/img_00.png": "green"}, address="local"))


def test_the_fine_tuned_models_layer_of_the_map_is_the_same_on_ray(ray_instance, tmp_path):
    from _helpers import colour_folder
    from engine.predictor import load_exported
    from labeler.model_layer import LAYER, build_model_layer, layer_cache
    from labeler.project import Project
    model_file = _exported_model(tmp_path / "model.pt")
    images = colour_folder(tmp_path / "colours", n=20)
    made, features, predictions = {}, {}, {}
    for where, ray in (("here", None), ("ray", "local")):
        with Project(images, tmp_path / where) as project:
            made[where] = build_model_layer(load_exported(model_file), Workspace(images, project.workspace.root),
                                            "model-1", model_file=model_file, ray=ray)
            features[where] = layer_cache(project.workspace.root, "model-1", SIZE).load(LAYER, "both")
            predictions[where] = project.store.predictions()
    assert made["ray"] == made["here"] == {"images": 20, "predictions": 20, "temperature": 1.0}
    np.testing.assert_allclose(np.asarray(features["ray"], np.float32), np.asarray(features["here"], np.float32),
                               rtol=2 ** -9, atol=2 ** -13)
    (model, classes, ids, probs), (model_here, classes_here, ids_here, probs_here) = predictions["ray"], predictions["here"]
    assert (model, classes, ids.tolist()) == (model_here, classes_here, ids_here.tolist())
    np.testing.assert_allclose(probs, probs_here, atol=1e-5)


def test_the_cli_predicts_and_stores_on_ray_as_it_does_here(folder, tmp_path):
    pytest.importorskip("ray")
    model_file = _exported_model(tmp_path / "model.pt")
    outputs = {}
    for where, extra in (("here", []), ("ray", ["--ray"])):
        command = [sys.executable, "-m", "labeler.cli", "predict", str(model_file), str(folder), "--json", "--store",
                   "--workspace", str(tmp_path / where), *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[where] = json.loads(done.stdout.strip().splitlines()[-1])
    here, on_ray = outputs["here"], outputs["ray"]
    assert [row["path"] for row in on_ray["predictions"]] == [row["path"] for row in here["predictions"]]
    assert len(here["predictions"]) == 12 and on_ray["stored"] == here["stored"]
    for row, row_here in zip(on_ray["predictions"], here["predictions"]):
        assert row["label"] == row_here["label"] and row["confidence"] == pytest.approx(row_here["confidence"], abs=1e-3)


def test_without_ray_prediction_runs_here_and_says_so(folder, tmp_path, monkeypatch, caplog):
    from engine.predictor import load_exported
    from labeler.training import _predict_paths
    monkeypatch.setattr(ray_embed, "ray_available", lambda: False)
    model_file = _exported_model(tmp_path / "model.pt")
    with caplog.at_level(logging.WARNING, logger="engine.ray_embed"):
        rows = list(_predict_paths(load_exported(model_file), folder, ["a/img_00.png", "b/img_07.jpg"], ray="local",
                                   model_file=model_file))
    assert [row[0] for row in rows] == ["a/img_00.png", "b/img_07.jpg"]
    assert "Ray is not installed (pip install 'labeler[ray]'): predicting on this machine instead" in caplog.text
