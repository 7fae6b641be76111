"""The Model tab without a browser: settings read from the widgets, a finished model's report, the model list."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from labeler.finetune import TrainSpec
from labeler.model_store import ModelStore, write_record
from labeler.project import Project
from labeler.ui._panel import html_table
from labeler.ui.model_view import ModelView

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def project(image_folder):
    with Project(image_folder, actor="me") as opened:
        yield opened


def finished_model(project, *, classes=("a", HOSTILE), accuracy=0.75, **more) -> str:
    """A model folder as a fine-tune leaves it: record, pictures, confusion picture, a model file."""
    store = ModelStore(project.workspace.root)
    folder = store.new_dir()
    (folder / "top").mkdir()
    rows = []
    for rank in range(3):
        for kind, value in (("picture", 40), ("heatmap", 200)):
            Image.fromarray(np.full((32, 32, 3), value + rank, np.uint8)).save(folder / "top" / f"{rank}-{kind}.jpg")
        rows.append({"item": f"a/{HOSTILE}{rank}.png", "given": classes[1], "predicted": classes[0],
                     "loss": 2.0 - rank / 2, "probability": 0.6, "picture": f"top/{rank}-picture.jpg",
                     "heatmap": f"top/{rank}-heatmap.jpg"})
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "confusion.png")
    (folder / "model.pt").write_bytes(b"weights")
    write_record(folder, {
        "task": "classify", "backbone": "mobilenet_v2", "size": 64, "labels": 12, "train": 9, "valid": 3,
        "lr": 2e-3, "stopped": False, "best_epoch": 1, "spec": {}, "classes": list(classes),
        "history": [{"epoch": 0, "frozen": True, "train_loss": 1.2, "valid_loss": 1.0, "accuracy": 0.5},
                    {"epoch": 1, "frozen": False, "train_loss": 0.9, "valid_loss": 0.8, "accuracy": accuracy}],
        "metrics": {"valid_loss": 0.8, "accuracy": accuracy}, "intervals": {"accuracy": [0.5, 0.9]},
        "metrics_tta": {"valid_loss": 0.7, "accuracy": 0.8}, "baseline": {"accuracy": 0.5},
        "top_losses": rows, "confusion": [[1, 1], [0, 1]], "most_confused": [[classes[1], classes[0], 1]],
        "confusion_picture": "confusion.png", **more})
    return folder.name


def html_of(viewable) -> str:
    """Every HTML object inside a Panel layout, joined."""
    found = []
    for pane in viewable.select(lambda obj: hasattr(obj, "object") and isinstance(getattr(obj, "object"), str)):
        found.append(pane.object)
    return "\n".join(found)


def test_without_a_model_it_says_how_to_make_one(project):
    view = ModelView(project)
    assert "No model yet" in html_of(view._models)
    assert "0 labeled images" in view._about.object


def test_the_settings_are_read_from_the_widgets_and_a_wrong_one_is_said(project):
    view = ModelView(project)
    view._size.value, view._epochs.value, view._lr.value = 96, 2, "auto"
    view._split.value, view._valid_list.value = "list", "valid.txt"
    spec = view.spec()
    assert isinstance(spec, TrainSpec)
    assert (spec.size, spec.epochs, spec.lr) == (96, 2, None)
    assert spec.valid_list == str((project.folder / "valid.txt").resolve())  # relative to the image folder
    # class weights are a choice for masks only: once chosen there, they do not follow the labels back
    assert not view._class_weights.visible
    view._source.value, view._masks.value, view._codes.value = "masks", "labels", "codes.txt"
    assert view._class_weights.visible
    view._class_weights.value = "sqrt"
    assert view.spec().class_weights == "sqrt"
    view._source.value = "store"
    assert view.spec().class_weights is None and not view._class_weights.visible
    view._lr.value = "fast"
    view._fine_tune.clicks += 1
    assert "not a number" in view._message.text and view._message.kind == "warning"


def test_fine_tune_without_labels_says_so_and_starts_nothing(project):
    view = ModelView(project)
    view._fine_tune.clicks += 1
    assert "No labels yet" in view._message.text
    assert ModelStore(project.workspace.root).records() == []


def test_a_finished_model_shows_its_metrics_confusion_and_top_losses_as_text(project):
    model_id = finished_model(project)
    view = ModelView(project)
    report = html_of(view._results)
    assert "0.7500" in report and "0.5000 – 0.9000" in report and "image-blind baseline" in report
    assert HOSTILE not in report and "&lt;img src=x" in report            # names are text, never HTML
    assert list(view._loss_source.data["epoch"]) == [1, 2]                  # its loss history is drawn
    assert view._loss_plot.visible and not view._lr_plot.visible            # and only a plot with a curve shows
    assert "head only" in view._epoch_table.object
    models = html_of(view._models)
    assert model_id in models and "current" in models and "accuracy 0.7500 (95%: 0.5000–0.9000)" in models


def test_the_test_column_reports_the_views_validation_chose(project):
    finished_model(project, metrics_tta_zoom={"valid_loss": 0.6, "accuracy": 0.85}, test={
        "images": 20, "metrics": {"accuracy": 0.7}, "intervals": {"accuracy": [0.5, 0.9]},
        "metrics_tta": {"accuracy": 0.72}, "metrics_tta_zoom": {"accuracy": 0.74}})
    report = html_of(ModelView(project)._results)
    heads = ["metric", "validation", "95% interval", "with flips", "with flips and zoom",
             "test, 20 held-out images (95% interval)", "test, with the views best on validation",
             "image-blind baseline"]
    rows = [["valid loss", "0.8000", "", "0.7000", "0.6000", "", "", ""],     # the test scores have no loss
            ["accuracy", "0.7500", "0.5000 – 0.9000", "0.8000", "0.8500", "0.7000 (0.5000 – 0.9000)",
             "0.7400 (flips and zoom)", "0.5000"]]
    assert html_table(heads, rows, **{"class": "labeler-metrics"}) in report


def test_a_tile_toggles_its_heatmap(project):
    finished_model(project)
    view = ModelView(project)
    tiles = view._results.select(lambda obj: "labeler-top-loss" in getattr(obj, "css_classes", []))
    assert len(tiles) == 3
    image, toggle = tiles[0][0], tiles[0][2]
    plain = image.object
    toggle.value = True
    assert image.object != plain and "data:image/jpeg;base64," in image.object
    toggle.value = False
    assert image.object == plain


def test_any_finished_model_can_be_made_current(project):
    first = finished_model(project, accuracy=0.6)
    second = finished_model(project, accuracy=0.9)
    view = ModelView(project)
    store = ModelStore(project.workspace.root)
    assert store.current_id == second
    choose = view._models[1][0]
    choose.value = first
    assert store.current_id == first
    assert "0.6000" in html_of(view._results)
    assert view._message.text == f"{first} is the current model."


class _Running:
    """A training as another tab started it, still running (what `current_training` returns)."""

    kind, running, finished, stopped, stage = "fine_tune", True, False, False, "training"
    epoch, epochs, step, steps, loss, eta, elapsed = 0, 2, 3, 10, 1.5, 12.0, 4.0
    history = [{"epoch": 0, "frozen": True, "train_loss": 1.2, "valid_loss": 1.0, "accuracy": 0.5}]
    lr_find = record = error = mapped = None


def test_the_plots_show_once_they_have_a_curve(project):
    """An empty plot is hidden (BokehJS warns at every layout of a plot with no data to range over)."""
    view = ModelView(project)
    assert not view._lr_plot.visible and not view._loss_plot.visible
    found = _Running()
    found.kind, found.running, found.stage = "lr_find", False, "done"
    found.lr_find = {"lrs": [1e-5, 1e-4, 1e-3], "losses": [2.0, 1.5, 1.9], "suggestion": 1e-4}
    view._finished(found)
    assert view._lr_plot.visible and list(view._lr_source.data["lr"]) == [1e-5, 1e-4, 1e-3]
    view._follow(_Running())                     # a fine-tune: its first epoch's losses
    assert view._loss_plot.visible and list(view._loss_source.data["epoch"]) == [1]


def test_a_tab_coming_into_sight_follows_a_training_another_tab_started(project, monkeypatch):
    view = ModelView(project)
    run = _Running()
    monkeypatch.setattr("labeler.ui.model_view.current_training", lambda project: run)
    view.show()
    assert view._shown_run is run
    assert view._stop.disabled is False and view._fine_tune.disabled is True
    assert "epoch 1 of 2" in view._progress_text.object and list(view._loss_source.data["epoch"]) == [1]


def test_after_training_it_shows_how_many_images_the_fine_tuned_network_has_mapped(project, monkeypatch):
    view = ModelView(project)
    run = _Running()
    run.stage, run.mapped = "mapping every image with the fine-tuned network", (32, 128)
    monkeypatch.setattr("labeler.ui.model_view.current_training", lambda project: run)
    view.show()
    assert "32 of 128 images (the map's new layer and the predictions)" in view._progress_text.object
    assert view._progress.value == 250


def test_keeping_the_map_fresh_fine_tunes_again_once_the_labels_have_grown_by_half(project, monkeypatch):
    import json
    started = []
    monkeypatch.setattr("labeler.ui.model_view.start_training",
                        lambda project, spec, kind: started.append((spec, kind)) or _Running())
    view = ModelView(project)
    ids = [item.id for item in project.items]
    project.store.assign(ids[:8], "a")
    assert view.keep_fresh() is None                   # off by default
    view._keep_fresh.value = True
    assert view.keep_fresh() is None                   # no model yet: the first fine-tune is the person's
    record_file = ModelStore(project.workspace.root).dir / finished_model(project) / "record.json"
    record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "labels": 6}))   # trained on 6
    assert view.keep_fresh() is None and not started   # 8 < 1.5 x 6
    project.store.assign(ids[8:9], "b")
    said = view.keep_fresh()
    assert said == ("Keeping the map fresh: fine-tuning again on 9 labels (model-1 had 6); its layer and "
                    "predictions follow when it ends.")
    assert len(started) == 1 and started[0][1] == "fine_tune" and started[0][0].source == "store"
    monkeypatch.setattr("labeler.ui.model_view.current_training", lambda project: _Running())
    assert view.keep_fresh() is None and len(started) == 1  # one training at a time
