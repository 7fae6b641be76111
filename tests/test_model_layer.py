"""The fine-tuned network back in the map: its layer last in ←/→, its predictions the labeler's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _helpers import colour_folder
from engine import Workspace
from engine.backbones import DEFAULT_BACKBONE
from engine.models import create_model
from engine.predictor import Predictor
from engine.tasks import get_task
from labeler.io import import_folders
from labeler.model_layer import (LAYER, ModelLayer, build_model_layer, calibrated, describe_model, fit_temperature,
                                 layer_cache)
from labeler.model_store import ModelStore, write_record
from labeler.project import Project
from labeler.session import PREDICTED_VIEW, Session

SIZE = 32


def _predictor() -> Predictor:
    """A classifier of blue and red with random weights: no download, and its outputs are what they are."""
    model = create_model("classify", DEFAULT_BACKBONE, 2, pretrained=False)
    for module in model.body.modules():     # a freshly made body outputs about 1e-7, which float16 stores as 0
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(module.bias, 0.2)
    return Predictor(model, get_task("classify")(), ["blue", "red"], SIZE, [0.485, 0.456, 0.406],
                     [0.229, 0.224, 0.225])


def _finished_model(project, predictor, **record) -> str:
    folder = ModelStore(project.workspace.root).new_dir()
    write_record(folder, {"task": "classify", "size": SIZE, "labels": 24, "valid": 5,
                          "metrics": {"accuracy": 0.8}, "intervals": {"accuracy": [0.4, 1.0]}, **record})
    made = build_model_layer(predictor, Workspace(project.folder, project.workspace.root), folder.name)
    assert made == {"images": len(project.items), "predictions": len(project.items), "temperature": 1.0}
    return folder.name


def test_the_layer_holds_every_images_pooled_features_and_the_store_its_probabilities(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=24)
    predictor = _predictor()
    heard = []
    with Project(folder) as project:
        folder_model = ModelStore(project.workspace.root).new_dir()
        write_record(folder_model, {"task": "classify", "size": SIZE, "labels": 24})
        made = build_model_layer(predictor, Workspace(folder, project.workspace.root), "model-1",
                                 progress=lambda done, total: heard.append((done, total)))
        assert made == {"images": 24, "predictions": 24, "temperature": 1.0}
        assert heard[-1] == (24, 24)
        cache = layer_cache(project.workspace.root, "model-1", SIZE)
        assert cache.meta["complete"] and cache.layers == [LAYER] and cache.done_mask(24).all()
        features = cache.load(LAYER, "both")
        assert features.shape == (24, 1280 * 5) and np.abs(np.asarray(features, np.float32)).sum(1).min() > 0
        model_id, classes, ids, probs = project.store.predictions()
        assert model_id == "model-1" and classes == ["blue", "red"] and sorted(ids.tolist()) == list(range(24))
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
        # the same image through the predictor alone: the stored row is its output
        path = project.items[int(ids[0])].path
        expected = predictor.predict(folder / path)["probabilities"]
        assert probs[0].tolist() == pytest.approx([expected["blue"], expected["red"]], abs=1e-4)
        assert ModelLayer.current(project.workspace.root).name == "fine-tuned model-1"


def test_a_stopped_layer_is_never_offered(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=70)
    with Project(folder) as project:
        write_record(ModelStore(project.workspace.root).new_dir(), {"task": "classify", "size": SIZE, "labels": 70})
        made = build_model_layer(_predictor(), Workspace(folder, project.workspace.root), "model-1", stop=lambda: True)
        assert made == {}
        assert ModelLayer.current(project.workspace.root) is None
        assert project.store.predictions() is None


@pytest.mark.weights
def test_the_session_offers_the_current_models_layer_last_with_every_view_and_find_similar(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=24)
    with Project(folder) as project:
        import_folders(project, folder)
        project.prepare()
        session = Session(project)
        base = list(session.layers)
        assert session.model_layer is None and PREDICTED_VIEW not in session.views
        model_id = _finished_model(project, _predictor())
        assert session.refresh_model_layer() and not session.refresh_model_layer()   # once per new model
        assert session.layers == [*base, "fine-tuned model-1"]
        session.layer_index = len(session.layers) - 1
        assert session.layer_title == "the network fine-tuned on your 24 labels"
        assert session.step_layer(1) == base[0] and session.step_layer(-1) == "fine-tuned model-1"
        assert PREDICTED_VIEW in session.views
        for view in session.views:
            xy = session.coords(view=view)
            assert xy.shape == (len(session.rows), 2) and np.isfinite(xy).all()
        expected = layer_cache(project.workspace.root, model_id, SIZE).load(LAYER, session.pooling)
        np.testing.assert_array_equal(session.features(), expected)
        # find similar looks among the unlabeled images of this layer
        project.store.unassign(project.ids_for([project.items[0].path]))
        session.select([1])
        assert 0 in session.find_similar(5).ids
        # its predictions are the ones the checks use, and the panel says whose they are
        assert session.latest_model() == model_id
        assert session.describe_predictions() == ("fine-tuned model 1 (24 labels; 80% right on 5 of them held out "
                                                  "at random, 95% interval 40%-100%)")
        # a new session (a page reload) offers it too
        assert Session(project).layers[-1] == "fine-tuned model-1"


@pytest.mark.weights
def test_train_after_a_fine_tune_also_fits_on_its_layer_and_says_so(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=24)
    with Project(folder) as project:
        import_folders(project, folder)
        project.prepare()
        session = Session(project)
        session.train()
        before = session.latest_model()
        width = sum(session.cache.load(layer, session.pooling).shape[1] for layer in session.base_layers)
        assert session.model.pipeline.pipeline.n_features_in_ == width
        assert session.describe_predictions() == ("Train's quick model (a logistic regression on the cached "
                                                  "ImageNet features)")
        _finished_model(project, _predictor())
        session.refresh_model_layer()
        session.train()
        tuned = session.features("fine-tuned model-1").shape[1]
        assert session.model.pipeline.pipeline.n_features_in_ == width + tuned
        assert before.startswith("first-") and "+" not in before
        assert session.latest_model().startswith("first-") and session.latest_model().endswith("+model-1")
        assert session.describe_predictions() == ("Train's quick model (a logistic regression on the cached "
                                                  "ImageNet features and the layer of fine-tuned model 1)")
        _, probs, has = session.row_predictions()
        assert has.all() and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_whose_predictions_are_said_for_every_kind_of_model(tmp_path):
    assert describe_model(tmp_path, None) == "no model yet"
    assert describe_model(tmp_path, "first-12").startswith("Train's quick model")
    assert describe_model(tmp_path, "model-4") == "model 'model-4'"


def test_a_temperature_fitted_on_validation_makes_a_smoothed_models_confidence_honest():
    rng = np.random.default_rng(0)
    n, classes = 2000, 10
    targets = rng.integers(0, classes, n)
    right = rng.random(n) < 0.9                   # a model right 90% of the time...
    predicted = np.where(right, targets, (targets + rng.integers(1, classes, n)) % classes)
    probs = np.full((n, classes), 0.1 / (classes - 1))
    probs[np.arange(n), predicted] = 0.2          # ...that label smoothing keeps at 0.67 sure
    probs /= probs.sum(1, keepdims=True)
    temperature = fit_temperature(probs, targets)
    assert temperature < 0.7
    scaled = calibrated(probs, temperature)
    np.testing.assert_allclose(scaled.sum(1), 1, atol=1e-5)
    assert scaled.max(1).mean() == pytest.approx(0.9, abs=0.02)     # as sure as it is right
    assert (scaled.argmax(1) == probs.argmax(1)).all()              # the order of the classes never changes
    assert fit_temperature(probs[:5], targets[:5]) == 1.0             # too few images to fit: unchanged
    assert calibrated(probs, 1.0).dtype == np.float32
