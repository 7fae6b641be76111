"""`labeler train` and `labeler predict` on generated folders."""
import json
import subprocess
import sys

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
