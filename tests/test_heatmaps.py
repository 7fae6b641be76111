"""Heatmaps of the current model: computed per item and in batches, cached, reloaded when the model changes;
and the Label tab's toggle and key (headless: keys pressed and hovers sent as the page sends them)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _helpers import write_image
from torch.utils.data import DataLoader, TensorDataset

from engine.errors import ImageReadError
from engine.interpret import explain_image, explain_images
from engine.learner import Learner
from engine.models import create_model
from labeler.errors import LabelerError, SessionError
from labeler.heatmaps import HeatmapCache, HeatmapWork, NoModelError
from labeler.model_store import ModelStore, write_record
from labeler.project import Project

SIZE = 32
CLASSES = ["<b>bold</b>", "plain"]   # a label name with HTML in it: shown as text, never as markup
NO_MODEL = "No model yet: fine-tune one in the Model tab"


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "images"
    for i in range(6):
        write_image(folder / f"img_{i}.png", seed=i, size=(48, 40))
    with Project(folder, tmp_path / "workspace") as opened:
        yield opened


def export_model(project, seed: int) -> str:
    """A tiny classifier (random weights: explaining needs no training) as the Model tab saves one."""
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(torch.randn(4, 3, SIZE, SIZE), torch.arange(4) % 2), batch_size=4)
    data = SimpleNamespace(task="classify", classes=CLASSES, codes=None, void_code=None, n_out=2, train=loader,
                           valid=loader, size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    learner = Learner(data, create_model("classify", "resnet18", 2, pretrained=False), device="cpu")
    folder = ModelStore(project.workspace.root).new_dir()
    learner.export(folder / "model.pt")
    write_record(folder, {"task": "classify", "metrics": {}, "labels": 4})
    return folder.name


def image(project, item_id):
    from engine.data import load_image
    return load_image(project.workspace.abspath(project.items[item_id].path))


def test_a_heatmap_is_the_image_as_the_model_saw_it_with_the_overlay_and_the_predicted_label(project):
    export_model(project, seed=0)
    cache = HeatmapCache(project)
    shown = cache.get(1)
    plain, result = explain_image(cache.predictor(), image(project, 1), heatmap=False)
    assert shown.model_id == "model-1" and shown.picture.shape == plain.shape == (SIZE, SIZE, 3)
    assert np.abs(shown.picture.astype(int) - plain).mean() > 2          # the overlay is there
    assert shown.caption.startswith(f"label {result['label']}, confidence ")
    assert shown.image_size == (48, 40) and shown.fitted(240).size == (240, 200)  # the image's aspect again
    assert shown.tile(64).shape == (64, 64, 3)
    assert cache.get(1) is shown                                          # cached


def test_a_batch_gives_the_pictures_of_one_image_at_a_time(project):
    export_model(project, seed=0)
    predictor = HeatmapCache(project).predictor()
    images = [image(project, i) for i in range(3)]
    for (batched, result), one in zip(explain_images(predictor, images), images):
        alone, alone_result = explain_image(predictor, one)
        assert np.abs(batched.astype(int) - alone).max() <= 2 and result["label"] == alone_result["label"]


def test_get_many_computes_the_missing_in_batches_and_reports_each(project):
    export_model(project, seed=0)
    cache = HeatmapCache(project)
    first = cache.get(0)
    reports = []
    found = cache.get_many(range(6), batch_size=2, progress=lambda done, total: reports.append((done, total)))
    assert sorted(found) == list(range(6)) and found[0] is first
    assert reports == [(2, 5), (4, 5), (5, 5)]
    stopped = HeatmapCache(project).get_many(range(6), batch_size=2, stop=lambda: True)
    assert stopped == {}


def test_the_cache_follows_the_current_model(project):
    export_model(project, seed=0)
    cache = HeatmapCache(project)
    one = cache.get(2)
    export_model(project, seed=1)                                         # the newest is current
    assert cache.cached([2]) == {}                                        # model-1's picture is not model-2's
    two = cache.get(2)
    assert two.model_id == "model-2" and not np.array_equal(one.picture, two.picture)
    ModelStore(project.workspace.root).set_current("model-1")
    again = cache.get(2)
    assert again.model_id == "model-1" and np.array_equal(again.picture, one.picture)


def test_without_a_model_heatmaps_say_to_fine_tune_one(project):
    cache = HeatmapCache(project)
    assert cache.cached([0]) == {} and cache.model_id is None
    with pytest.raises(NoModelError, match=NO_MODEL) as raised:
        cache.get(0)
    assert isinstance(raised.value, SessionError) and isinstance(raised.value, LabelerError)


def test_the_cache_keeps_a_bounded_number_dropping_the_least_recently_used(project):
    export_model(project, seed=0)
    cache = HeatmapCache(project, capacity=2)
    cache.get(0)
    cache.get(1)
    cache.cached([0])                                                     # 0 used again: 1 is the oldest now
    cache.get(2)
    assert sorted(cache.cached([0, 1, 2])) == [0, 2]


def test_an_unreadable_image_is_left_out_of_a_batch_and_named_alone(project, caplog):
    export_model(project, seed=0)
    project.workspace.abspath(project.items[3].path).write_bytes(b"not an image")
    cache = HeatmapCache(project)
    with caplog.at_level(logging.WARNING, logger="labeler.heatmaps"):
        found = cache.get_many(range(6))
    assert sorted(found) == [0, 1, 2, 4, 5] and "no heatmap for item 3" in caplog.text
    with pytest.raises(ImageReadError):
        cache.get(3)


def test_work_computes_the_hovered_image_then_the_grid_and_nothing_when_nothing_is_asked(project):
    export_model(project, seed=0)
    cache = HeatmapCache(project)
    work = HeatmapWork(cache, batch_size=2)
    order = []
    get_many = cache.get_many
    cache.get_many = lambda items, **kw: order.append(list(items)) or get_many(items, **kw)
    job = work.ask(hover=5, grid=[0, 1, 2], wait=True)
    assert job.error is None and job.result == 4 and order == [[0, 1], [2]]   # the hovered one by `get`
    assert sorted(cache.cached(range(6))) == [0, 1, 2, 5]
    assert work.ask(grid=[], wait=True) is None


# -- the Label tab ---------------------------------------------------------------------------------
@pytest.fixture
def app(project):
    from engine.embedding import embed
    from labeler.ui.app import LabelApp
    project.thumbs.build(workers=0)
    embed(project.workspace, backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)
    app = LabelApp(project.folder, workspace=project.workspace.root, backbone="resnet18", size=32)
    app._heat.wait = True                  # heatmaps computed in place, not in a polled background job
    return app


def test_the_toggle_without_a_model_says_to_fine_tune_one_and_stays_off(app):
    app._shortcuts.press("g")
    assert NO_MODEL in app.status and app.heatmaps is False and app._heat.on is False
    app._on_hover(0)                       # the preview works as before
    assert "img_0.png" in app._preview.object and "predicts" not in app._preview.object


def test_the_key_shows_heatmaps_in_the_preview_and_the_grid_and_hides_them_again(app, project):
    app._on_hover(0)
    plain_preview = app._preview.object
    app._set_selection([0, 1, 2])
    plain_grid = app.grid._image.data["url"][0]
    export_model(project, seed=0)

    app._shortcuts.press("g")
    assert app.heatmaps is True and app.status.startswith("Heatmaps of model-1")
    preview = app._preview.object
    assert preview != plain_preview and "<b>model-1</b> predicts label " in preview
    assert "&lt;b&gt;bold&lt;/b&gt;" in preview or "label plain" in preview
    assert "<b>bold</b>" not in preview                                   # a label name is text, never markup
    assert sorted(app.grid.overlays) == [0, 1, 2] and app.grid._image.data["url"][0] != plain_grid
    app._set_selection([3, 4])                                            # a new review gets heatmaps too
    assert sorted(app.grid.overlays) == [3, 4]

    app._shortcuts.press("g")
    assert app.heatmaps is False and app.grid.overlays == {}
    assert "predicts" not in app._preview.object
    from labeler.ui.app import KEYS
    assert "g" in app._shortcuts.keys and "where the current model looked" in KEYS.help_html()   # the Shortcuts card
