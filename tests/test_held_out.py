"""The test split of `labeler train` (issue 20's protocol): held out before the validation split, fixed whatever
--seed is, groups kept whole, scored once at the end with a bootstrap interval, as `labeler predict` scores those
images, and nothing tuned on it (a multi-label model keeps its validation threshold)."""
import json
from types import SimpleNamespace

import pytest
import torch

from _helpers import colour_folder
from engine.errors import InputError
from engine.tasks import MultiLabelTask
from labeler.cli import main
from labeler.held_out import split_off_test

TINY = ["--backbone", "mobilenet_v2", "--size", "32", "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1",
        "--lr", "1e-3", "--no-augment"]


def _args(**given):
    return SimpleNamespace(**{"test_list": None, "test_pct": 0.0, "test_seed": 0, "group_regex": None, **given})


def test_the_test_split_is_fixed_by_its_own_seed_and_keeps_groups_whole(tmp_path):
    items = [f"person{p}_{k}.png" for p in range(10) for k in range(4)]
    rest, test = split_off_test(_args(test_pct=0.3), items)
    assert len(test) == 12 and sorted(rest + test) == sorted(items) and not set(rest) & set(test)
    assert split_off_test(_args(test_pct=0.3, seed=5), items)[1] == test        # --seed never moves it
    assert split_off_test(_args(test_pct=0.3, test_seed=1), items)[1] != test
    _, grouped = split_off_test(_args(test_pct=0.3, group_regex=r"^(.*)_\d+$"), items)
    people = {name.split("_")[0] for name in grouped}
    assert all(f"{person}_{k}.png" in grouped for person in people for k in range(4))
    listed = tmp_path / "test.txt"
    listed.write_text("person1_0.png\nperson2_3.png\n")
    assert split_off_test(_args(test_list=str(listed)), items)[1] == ["person1_0.png", "person2_3.png"]
    assert split_off_test(_args(), items) == (items, [])
    with pytest.raises(InputError, match="not both"):
        split_off_test(_args(test_list=str(listed), test_pct=0.2), items)
    with pytest.raises(InputError, match="between 0 and 1"):
        split_off_test(_args(test_pct=1.5), items)


def test_train_scores_the_held_out_images_once_as_predict_scores_them(tmp_path, capsys):
    folder = colour_folder(tmp_path / "images", n=40, size=32)
    model = tmp_path / "model.pt"
    assert main(["train", str(folder), "--folders", *TINY, "--test-pct", "0.25", "--out", str(model), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    test = summary["test"]
    assert test["images"] == 10 and summary["train"] + summary["valid"] == 30
    low, high = test["intervals"]["accuracy"]
    assert 0 <= low <= test["metrics"]["accuracy"] <= high <= 1
    # the test-time augmentations validation also scores (a classifier: flips, and zoom too)
    assert {"metrics_tta", "metrics_tta_zoom"} <= set(test) and {"metrics_tta", "metrics_tta_zoom"} <= set(summary)
    # the most common training class on the test images: red and blue alternate, so about half of them
    assert 0.3 <= test["baseline"]["accuracy"] <= 0.7
    # `labeler predict` on the same ten images gives the same accuracy
    from labeler.held_out import split_off_test as split
    from engine.data import discover_images
    _, held = split(_args(test_pct=0.25), discover_images(folder))
    names = tmp_path / "test.txt"
    names.write_text("\n".join(held))
    truth = tmp_path / "truth.csv"
    truth.write_text("image_name,tags\n" + "".join(f"{name},{name.split('/')[0]}\n" for name in held))
    assert main(["predict", str(model), str(folder), "--only", str(names), "--labels", str(truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(test["metrics"]["accuracy"], abs=1e-4)


def test_a_multi_label_model_keeps_its_validation_threshold_on_the_test_images():
    task = MultiLabelTask(threshold=0.3)
    outputs = torch.tensor([[0.9, 0.35], [0.2, 0.8], [0.6, 0.1]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = task.held_out_metrics(outputs, targets)
    assert scores["threshold"] == 0.3 and task.threshold == 0.3
    tuned = MultiLabelTask(threshold=0.3)
    assert tuned.metrics(outputs, targets)["threshold"] != 0.3          # validation tunes it; the test does not


def test_the_multi_label_baseline_ranks_by_tag_frequency_and_is_scored_three_ways():
    task = MultiLabelTask()
    train = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    held = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    base = task.baseline(train, held)
    assert {"mAP", "mAP_micro", "mAP_per_image", "f2"} <= set(base)
    assert base["mAP_per_image"] == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)   # tag 0 (3/4) ranked first
    scores = task.held_out_metrics(torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.7]]), held)
    assert scores["mAP"] == scores["mAP_micro"] == scores["mAP_per_image"] == 1.0
