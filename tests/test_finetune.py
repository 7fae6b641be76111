"""Fine-tuning from the app's side: settings, the models folder, and real trainings in a child process."""
from __future__ import annotations

import json
import time

import pytest

from _helpers import colour_folder
from labeler.finetune import TrainingError, TrainSpec, current_training, start_training
from labeler.io import import_folders
from labeler.model_store import ModelStore, ModelStoreError, write_record
from labeler.project import Project

TINY = dict(size=32, batch_size=8, freeze_epochs=1, epochs=1, lr=2e-3)


# -- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, words", [
    (dict(source="pictures"), "Choose one of: store, masks, points"),
    (dict(source="masks", masks="m"), "codes file"),
    (dict(source="points"), "points CSV"),
    (dict(size=8), "size must be a whole number of at least 32"),
    (dict(freeze_epochs=0, epochs=0), "at least one epoch"),
    (dict(valid_pct=1.5), "between 0 and 1"),
    (dict(lr=3.0), "learning rate must be between 0 and 1"),
    (dict(test_pct=0.95), "test share must be at least 0"),
    (dict(unlabeled=True, unlabeled_threshold=1.2), "pseudo-label confidence must be at least 0.5 and below 1"),
    (dict(source="masks", masks="m", codes="c", class_weights="inverse"), "Choose none, sqrt or median"),
])
def test_a_wrong_setting_is_refused_with_what_it_may_be(change, words):
    with pytest.raises(TrainingError, match=words):
        TrainSpec(**change).check()


def test_the_defaults_are_a_valid_recipe():
    spec = TrainSpec().check()
    assert (spec.size, spec.freeze_epochs, spec.epochs, spec.lr) == (160, 1, 5, 2e-3)


# -- the models folder ---------------------------------------------------------------------------
def test_models_are_numbered_listed_when_finished_and_one_is_current(tmp_path):
    store = ModelStore(tmp_path)
    assert store.records() == [] and store.current_id is None and store.current_model_path() is None
    first, second, unfinished = store.new_dir(), store.new_dir(), store.new_dir()
    assert [p.name for p in (first, second, unfinished)] == ["model-1", "model-2", "model-3"]
    write_record(first, {"task": "classify", "metrics": {"accuracy": 0.5}})
    write_record(second, {"task": "classify", "metrics": {"accuracy": 0.7}})
    assert [r["id"] for r in store.records()] == ["model-1", "model-2"]  # model-3 has no record yet
    assert store.current_id == "model-2"                                  # the newest, until one is chosen
    store.set_current("model-1")
    assert store.current_id == "model-1" and store.current_model_path() == first / "model.pt"
    store.discard_unfinished(unfinished)
    assert not unfinished.exists() and first.exists()
    store.discard_unfinished(first)                                       # a finished one is never removed
    assert first.exists()
    assert store.new_dir().name == "model-3"


def test_an_unknown_model_or_a_file_outside_its_folder_is_refused(tmp_path):
    store = ModelStore(tmp_path)
    write_record(store.new_dir(), {"task": "classify"})
    with pytest.raises(ModelStoreError, match="No finished model 'model-7'"):
        store.set_current("model-7")
    with pytest.raises(ModelStoreError, match="is not a model id"):
        store.record("../../etc")
    with pytest.raises(ModelStoreError, match="is not a file of model"):
        store.file("model-1", "../../labels.sqlite")


# -- real trainings ------------------------------------------------------------------------------
@pytest.fixture
def labeled(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=48)
    with Project(folder) as project:
        import_folders(project, folder)
    return folder


def _wait(run, timeout=300):
    deadline = time.monotonic() + timeout
    while run.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not run.running, f"the run did not end in {timeout} s (stage {run.stage})"
    return run


def test_nothing_to_train_on_says_so(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=8)
    with Project(folder) as project, pytest.raises(TrainingError, match="No labels yet"):
        start_training(project, TrainSpec(**TINY))


@pytest.mark.slow
@pytest.mark.weights
def test_a_fine_tune_reports_epochs_and_leaves_a_measured_exportable_model(labeled):
    from engine import load_exported
    with Project(labeled) as project:
        run = start_training(project, TrainSpec(**TINY))
        assert current_training(project) is run
        with pytest.raises(TrainingError, match="already fine-tuning"):   # one training per project
            start_training(project, TrainSpec(**TINY), "lr_find")
        _wait(run)
        assert run.error is None, run.error
        assert [row["epoch"] for row in run.history] == [0, 1]
        assert [row["frozen"] for row in run.history] == [True, False]
        assert run.step == run.steps > 0
        record = run.record
        store = ModelStore(project.workspace.root)
        assert store.current_id == record["id"] == "model-1"
        saved = json.loads((store.dir / "model-1" / "record.json").read_text())
        assert saved == record
        # then every image went through the fine-tuned network: the map's new layer and the store's predictions
        assert {k: record["layer"][k] for k in ("images", "predictions")} == {"images": 48, "predictions": 48}
        assert record["layer"]["temperature"] > 0 and run.mapped == (48, 48)
        assert project.store.predictions()[0] == "model-1"
    assert record["task"] == "classify" and record["labels"] == 48
    assert record["train"] + record["valid"] == 48
    low, high = record["intervals"]["accuracy"]
    assert 0 <= low <= record["metrics"]["accuracy"] <= high <= 1
    assert record["baseline"]["accuracy"] * record["valid"] == pytest.approx(round(record["baseline"]["accuracy"]
                                                                                 * record["valid"]))
    assert sum(map(sum, record["confusion"])) == record["valid"]
    assert len(record["top_losses"]) == min(16, record["valid"])
    losses = [row["loss"] for row in record["top_losses"]]
    assert losses == sorted(losses, reverse=True)
    for row in record["top_losses"][:2]:
        plain, heat = (store.file("model-1", row[kind]).read_bytes() for kind in ("picture", "heatmap"))
        assert plain != heat
    predictor = load_exported(store.model_path("model-1"))
    assert predictor.predict(labeled / "red" / "001.png")["label"] in ("red", "blue")


@pytest.mark.slow
@pytest.mark.weights
def test_stop_ends_after_the_batch_and_keeps_the_best_epoch(labeled):
    with Project(labeled) as project:
        run = start_training(project, TrainSpec(**{**TINY, "epochs": 50}))
        deadline = time.monotonic() + 300
        while not run.history and run.running and time.monotonic() < deadline:
            time.sleep(0.1)
        run.stop()
        _wait(run)
    assert run.error is None, run.error
    assert run.stopped and run.record["stopped"]
    assert len(run.history) < 51
    best = min(range(len(run.history)), key=lambda i: run.history[i]["valid_loss"])
    assert run.record["best_epoch"] == best


@pytest.mark.slow
@pytest.mark.weights
def test_lr_find_gives_a_curve_and_a_clamped_suggestion(labeled):
    with Project(labeled) as project:
        run = _wait(start_training(project, TrainSpec(**TINY), "lr_find"))
        assert run.error is None, run.error
        assert ModelStore(project.workspace.root).records() == []  # lr_find makes no model
    found = run.lr_find
    assert len(found["lrs"]) == len(found["losses"]) >= 3
    assert 1e-4 <= found["suggestion"] <= 1e-2
    assert found["lrs"] == sorted(found["lrs"])


@pytest.mark.slow
@pytest.mark.weights
def test_a_stopped_lr_find_ends_at_once_and_says_stopped(labeled):
    with Project(labeled) as project:
        run = start_training(project, TrainSpec(**TINY), "lr_find")
        run.stop()
        _wait(run, timeout=60)
        assert run.stage == "stopped" and run.error is None and run.lr_find is None
        again = _wait(start_training(project, TrainSpec(**TINY), "lr_find"))  # the project is free again
        assert again.error is None and again.lr_find is not None
