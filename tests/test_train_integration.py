"""The data blocks and the learner together, on generated image folders (the path users take)."""
from pathlib import Path

import numpy as np
from PIL import Image

from engine import (Learner, MaskLabel, PointsLabel, RandomSplit, build_data, create_model,
                    label_from_folder, load_exported)
from engine.data import discover_images
from _helpers import colour_folder


def test_a_classifier_trained_from_folders_exports_and_predicts(tmp_path):
    folder = colour_folder(tmp_path / "images")
    data = build_data(folder, discover_images(folder), RandomSplit(0.25, seed=0), label_from_folder,
                      size=32, batch_size=8, backbone="resnet18")
    assert data.task == "classify" and data.classes == ["blue", "red"]
    learner = Learner(data, create_model("classify", "resnet18", data.n_out, pretrained=False))
    learner.fit_one_cycle(3, 3e-3)
    assert learner.validate()["accuracy"] > 0.9
    learner.export(tmp_path / "model.pt")
    predicted = load_exported(tmp_path / "model.pt").predict(folder / "red" / "001.png")
    assert predicted["label"] == "red"


def test_segmentation_and_point_regression_train_on_real_task_data(tmp_path):
    folder = tmp_path / "scenes"
    (folder / "masks").mkdir(parents=True)
    rng = np.random.default_rng(1)
    points = {}
    for i in range(24):
        pixels = rng.integers(0, 40, size=(32, 32, 3), dtype=np.uint8)
        top, left = rng.integers(0, 20, size=2)
        pixels[top:top + 12, left:left + 12] = 230
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[top:top + 12, left:left + 12] = 1
        Image.fromarray(pixels).save(folder / f"img_{i:02d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"img_{i:02d}.png")
        points[f"img_{i:02d}.png"] = np.array([[left + 6.0, top + 6.0]])
    items = [p for p in discover_images(folder) if not p.startswith("masks/")]
    seg = build_data(folder, items, RandomSplit(0.25), MaskLabel(lambda p: Path("masks") / p.name, ["ground", "square"]),
                     size=32, batch_size=6, backbone="resnet18", augment=False)
    learner = Learner(seg, create_model("segment", "resnet18", seg.n_out, pretrained=False))
    before = learner.validate()["valid_loss"]
    learner.fit_one_cycle(3, 3e-3)
    after = learner.validate()
    assert seg.task == "segment" and after["valid_loss"] < before
    reg = build_data(folder, items, RandomSplit(0.25), PointsLabel(lambda p: points[p]), size=32, batch_size=6,
                     backbone="resnet18", augment=False)
    assert reg.task == "regress" and reg.n_out == 2
    learner = Learner(reg, create_model("regress", "resnet18", reg.n_out, pretrained=False))
    history = learner.fit_one_cycle(8, 1e-3)  # from scratch on 18 images: a higher lr does not fall reliably
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"point_error_px", "point_error_rel"} <= set(history[-1])



