"""`labeler train` and `labeler predict` on generated folders."""
import json

import numpy as np
from PIL import Image

from labeler.cli import main


def _colours(root, n=32):
    rng = np.random.default_rng(0)
    for i in range(n):
        colour = "red" if i % 2 else "blue"
        pixels = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
        pixels[..., 0 if colour == "red" else 2] += 180
        (root / colour).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / colour / f"{i:03d}.png")
    return root


def test_train_from_folders_then_predict_with_true_labels(tmp_path, capsys):
    folder = _colours(tmp_path / "images")
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
    folder = _colours(tmp_path / "images", n=4)
    code = main(["train", str(folder), "--size", "32", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "has no labels in its label store yet" in err and "--folders" in err
