"""`labeler train` and `labeler predict` on generated folders."""
import json
import subprocess
import sys

import numpy as np
import pytest

from labeler.cli import main
from _helpers import colour_folder


def test_train_from_folders_then_predict_with_true_labels(tmp_path, capsys):
    folder = colour_folder(tmp_path / "images", n=32, size=32)
    model = tmp_path / "model.pt"
    code = main(["train", str(folder), "--folders", "--backbone", "mobilenet_v2", "--size", "64", "--batch-size", "8",
                 "--freeze-epochs", "3", "--epochs", "1", "--lr", "1e-2", "--out", str(model), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["task"] == "classify" and model.exists()
    assert summary["metrics"]["accuracy"] >= 0.75
    truth = tmp_path / "truth.csv"
    truth.write_text("image_name,tags\n" + "".join(f"{p.name},{p.parent.name}\n" for p in folder.glob("*/*.png")))
    code = main(["predict", str(model), str(folder / "red"), "--labels", str(truth), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["predictions"]) == 16 and result["scored"] == 16
    assert result["accuracy"] >= 0.75


def test_train_without_any_labels_says_where_labels_come_from(tmp_path, capsys):
    folder = colour_folder(tmp_path / "images", n=4, size=32)
    code = main(["train", str(folder), "--size", "32", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "has no labels in its label store yet" in err and "--folders" in err


def test_train_points_with_l1_loss_reports_the_mean_point_baseline(tmp_path, capsys):
    folder = colour_folder(tmp_path / "images", n=16, size=32)
    rows = [f"{p.relative_to(folder).as_posix()},{3 + i},{5 + i},{7 + i},{9 + i}"
            for i, p in enumerate(sorted(folder.glob("*/*.png")))]
    points = tmp_path / "points.csv"
    points.write_text("image_name,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    model = tmp_path / "points.pt"
    code = main(["train", str(folder), "--points", str(points), "--points-mean", "--loss", "l1", "--size", "32",
                 "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-3", "--no-augment",
                 "--out", str(model), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["task"] == "regress"
    assert summary["baseline"]["point_error_px"] > 0
    assert "point_error_px" in summary["metrics_tta"]        # one point (the mean) mirrors back: TTA applies

    import torch
    assert torch.load(model, weights_only=True)["task_config"]["loss"] == "l1"


def test_the_same_seed_trains_the_same_model_and_label_smoothing_travels_with_the_export(tmp_path, capsys):
    import torch
    folder = colour_folder(tmp_path / "images", n=32, size=32)
    summaries = []
    for run in ("a", "b"):
        code = main(["train", str(folder), "--folders", "--backbone", "mobilenet_v2", "--size", "32", "--batch-size",
                     "8", "--freeze-epochs", "1", "--epochs", "2", "--lr", "1e-3", "--label-smoothing", "0.1",
                     "--workers", "1", "--seed", "3", "--out", str(tmp_path / f"{run}.pt"), "--json"])
        assert code == 0
        summaries.append(json.loads(capsys.readouterr().out))
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
    exported = [torch.load(tmp_path / f"{run}.pt", weights_only=True) for run in ("a", "b")]
    assert exported[0]["task_config"] == {"label_smoothing": 0.1}
    assert all(torch.equal(exported[0]["state_dict"][k], exported[1]["state_dict"][k]) for k in exported[0]["state_dict"])


def test_building_the_parser_imports_no_torch_and_task_choices_come_from_the_registry():
    code = ("import sys\nfrom labeler.cli import _parser\nparser = _parser()\n"
            "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
            "args = parser.parse_args(['train', 'x', '--task', 'segment', '--lr', 'auto', '--out', 'm.pt'])\n"
            "assert args.task == 'segment' and args.lr is None\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_rejects_an_unregistered_task_and_a_bad_lr_listing_what_is_allowed(tmp_path, capsys):
    for bad, expected in ((["--task", "detect"], "invalid choice: 'detect' (choose from 'classify', 'multilabel'"),
                          (["--lr", "fast"], "'fast' is neither a number nor 'auto'")):
        with pytest.raises(SystemExit):
            main(["train", str(tmp_path), "--out", str(tmp_path / "m.pt"), *bad])
        assert expected in capsys.readouterr().err



TINY = ["--backbone", "mobilenet_v2", "--size", "32", "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1",
        "--lr", "1e-3", "--no-augment"]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """(folder, model): 16 red and blue images and a classifier trained on their folder names in a second."""
    root = tmp_path_factory.mktemp("tiny")
    folder = colour_folder(root / "images", n=16, size=32)
    model = root / "model.pt"
    assert main(["train", str(folder), "--folders", *TINY, "--out", str(model)]) == 0
    return folder, model


def test_training_from_the_label_store_stores_its_predictions_for_every_image(tmp_path, capsys):
    from labeler._predictions import model_id_for_file
    from labeler.io import import_folders
    from labeler.project import Project
    folder = colour_folder(tmp_path / "images", n=20, size=32)
    workspace = tmp_path / "ws"
    with Project(folder, workspace) as project:
        import_folders(project, folder)
        project.store.unassign(project.ids_for(["red/001.png", "blue/002.png"]))   # unlabeled: predicted too
    model = tmp_path / "colours.pt"
    code = main(["train", str(folder), *TINY, "--workspace", str(workspace), "--out", str(model), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["stored"] == {"model_id": model_id_for_file(model), "items": 20}
    assert summary["stored"]["model_id"].startswith("colours-")
    with Project(folder, workspace) as project:
        model_id, classes, item_ids, probs = project.store.predictions()
        assert model_id == summary["stored"]["model_id"] and classes == ["blue", "red"]
        assert sorted(item_ids.tolist()) == [item.id for item in project.items]
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert not (folder / ".labeler").exists()           # --workspace was used, not FOLDER/.labeler


def test_predict_store_keeps_a_classifiers_probabilities_under_an_id_naming_the_model_file(tiny_classifier, tmp_path,
                                                                                            capsys):
    from labeler.project import Project
    folder, model = tiny_classifier
    workspace = tmp_path / "ws"
    for _ in range(2):                                   # storing the same model again replaces its predictions
        code = main(["predict", str(model), str(folder), "--store", "--workspace", str(workspace), "--json"])
        result = json.loads(capsys.readouterr().out)
        assert code == 0 and result["stored"]["items"] == 16 and len(result["predictions"]) == 16
    with Project(folder, workspace) as project:
        assert project.store.prediction_models() == [result["stored"]["model_id"]]
        _, classes, item_ids, probs = project.store.predictions()
        best = {project.paths_for([i])[0]: classes[int(row.argmax())] for i, row in zip(item_ids, probs)}
    assert best == {row["path"]: row["label"] for row in result["predictions"]}


def test_predict_store_refuses_a_model_that_gives_no_class_probabilities(tmp_path, capsys):
    folder = colour_folder(tmp_path / "images", n=8, size=32)
    points = tmp_path / "points.csv"
    points.write_text("image_name,x0,y0\n" + "".join(f"{p.relative_to(folder).as_posix()},3,4\n"
                                                     for p in sorted(folder.glob("*/*.png"))))
    model = tmp_path / "points.pt"
    assert main(["train", str(folder), "--points", str(points), "--size", "32", "--batch-size", "2", "--epochs", "1",
                 "--freeze-epochs", "0", "--lr", "1e-3", "--out", str(model)]) == 0
    capsys.readouterr()
    code = main(["predict", str(model), str(folder), "--store"])
    err = capsys.readouterr().err
    assert code == 2 and "is a regress model; only classifiers (classify, multilabel) give class probabilities" in err
    assert "without --store" in err and not (folder / ".labeler").exists()


def test_predict_takes_the_demo_when_no_folder_is_given(tiny_classifier, capsys, monkeypatch):
    folder, model = tiny_classifier
    monkeypatch.setattr("engine.demo.demo_folder", lambda: folder)
    assert main(["predict", str(model), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 16
