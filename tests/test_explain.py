"""What a model got wrong and what it looked at, for every task: Interpretation, explain, picture, explain_image.

Tiny convolutional models with a `body` of blocks (as `create_model` builds them) learn a few seconds on
generated images, so the outputs depend on the image and Grad-CAM has evidence to show.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from _helpers import colour_folder, shared_data
from engine.datablock import (FuncSplit, MaskLabel, PointsLabel, RandomSplit, build_data,
                              label_from_folder)
from engine.interpret import (InterpretError, Interpretation, cam_layer, explain, explain_image, overlay,
                              picture)
from engine.learner import Learner, load_exported
from engine.models import BodyHeadModel, ClassifierHead, RegressionHead, create_model
from engine.tasks import ClassifyTask, MultiLabelTask, RegressTask, SegmentTask
from test_learner import SIZE, bright_spot, red_blue, square_masks, task_data

COLUMNS = ["row", "item", "given", "predicted", "loss", "probability"]


def _body() -> nn.Sequential:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
    return nn.Sequential(OrderedDict([("stem", block(3, 8)), ("mid", block(8, 16)), ("last", block(16, 16))]))


def tiny_model(head: nn.Module) -> BodyHeadModel:
    """A body of three stride-2 blocks (32 px -> 4x4 cells) and `head`, like `create_model`'s models."""
    return BodyHeadModel(_body(), head, split_after="mid")


def _seg_head(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(16, n_classes, 1), nn.Upsample(scale_factor=8, mode="bilinear"))


def _datasets():
    x, y = red_blue(48)
    masks_x, masks = square_masks(24)
    masks[-1] = 255  # the last valid image has only void pixels: no loss
    spots = task_data("regress", *bright_spot(32), 2, batch_size=8)
    spots.points = 1
    return {
        "classify": (task_data("classify", x, y, 2, classes=["red", "blue"]), ClassifierHead(16, 2)),
        "multilabel": (task_data("multilabel", x, torch.stack([y == 0, y == 1], 1).float(), 2,
                                 classes=["red", "blue"]), ClassifierHead(16, 2)),
        "segment": (task_data("segment", masks_x, masks, 2, codes=["background", "square"], void_code=255,
                              batch_size=8), _seg_head(2)),
        "regress": (spots, RegressionHead(16, 2, (-1.1, 1.1))),
    }


@pytest.fixture(scope="module")
def learners() -> dict[str, Learner]:
    """One briefly trained tiny learner per task."""
    torch.manual_seed(0)
    trained = {}
    for name, (data, head) in _datasets().items():
        learner = Learner(data, tiny_model(head), device="cpu")
        learner.fit_one_cycle(3, 1e-2)
        trained[name] = learner
    return trained


TASKS = ["classify", "multilabel", "segment", "regress"]


# --- the default layer and explain ---------------------------------------------------------

@pytest.mark.parametrize("task, backbone, last", [("classify", "resnet18", "layer4"), ("segment", "mobilenet_v2", "18"),
                                                  ("regress", "mobilenet_v2", "18")])
def test_cam_layer_is_the_encoders_last_block_or_the_deepest_one_that_keeps_a_map(task, backbone, last):
    model = create_model(task, backbone, 2, pretrained=False)
    assert cam_layer(model) == f"body.{last}"
    assert cam_layer(model, 224) == f"body.{last}"                   # 7x7 cells
    shallower = cam_layer(model, 32)                                  # the last block would be one cell
    assert shallower != f"body.{last}" and shallower in dict(model.named_modules())


def test_cam_layer_of_a_model_without_a_body_says_to_pass_a_layer():
    with pytest.raises(InterpretError, match="pass layer="):
        cam_layer(nn.Sequential(nn.Conv2d(3, 2, 1)))


@pytest.mark.parametrize("task", TASKS)
def test_explain_gives_one_heatmap_in_0_1_per_image_with_the_tasks_default_target(learners, task):
    learner = learners[task]
    x = next(iter(learner.data.valid))[0][:3]
    heat = explain(learner.model, learner.task, x)
    assert heat.shape == (3, SIZE, SIZE) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() == pytest.approx(1.0)  # some evidence found


def test_explain_releases_its_hooks_after_100_calls_and_restores_the_mode(learners):
    learner = learners["segment"]
    x = next(iter(learner.data.valid))[0][:2]
    learner.model.train()
    for _ in range(100):
        explain(learner.model, learner.task, x)
    assert sum(len(module._forward_hooks) for module in learner.model.modules()) == 0
    assert learner.model.training
    learner.model.eval()


def test_default_targets_are_the_predicted_class_its_region_and_the_first_coordinate():
    seg = SegmentTask(void_code=2)
    output = torch.zeros(3, 4, 4)
    output[1, :, :3] = 5      # class 1 on 12 pixels
    output[2, :, 3] = 5       # void on 4
    target = seg.cam_target(output)
    assert target.index == 1 and target.mask.sum() == 12
    output[2] = 9             # everything void: the region is the void class after all, not an error
    assert seg.cam_target(output).index == 2
    assert ClassifyTask().cam_target(torch.tensor([0.1, 2.0])).index == 1
    assert MultiLabelTask().cam_target(torch.tensor([0.1, 2.0, 0.3])).index == 1
    assert RegressTask(SIZE, points=1).cam_target(torch.tensor([0.3, -0.2])).index == 0


# --- Interpretation ----------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_top_losses_are_the_largest_losses_first_with_text_for_a_person(learners, task):
    interpretation = learners[task].interpret()
    table = interpretation.top_losses(5)
    assert list(table.columns) == COLUMNS and len(table) == 5
    finite = table["loss"].dropna().to_numpy()
    assert (np.diff(finite) <= 0).all()
    assert finite[0] == pytest.approx(np.nanmax(interpretation.losses.numpy()))
    assert table["predicted"].map(lambda text: isinstance(text, str) and text != "").all()
    assert table["probability"].notna().all() == (task in ("classify", "multilabel"))
    assert interpretation.task is learners[task].task and len(interpretation.items) == len(interpretation.losses)


def test_classifier_rows_name_the_given_and_predicted_class_and_its_probability(learners):
    interpretation = learners["classify"].interpret()
    row = interpretation.top_losses(1).iloc[0]
    assert row["given"] == ["red", "blue"][int(interpretation.targets[row["row"]])]
    assert row["predicted"] in ("red", "blue") and 0.5 <= row["probability"] <= 1


def test_regression_rows_give_points_in_pixels(learners):
    interpretation = learners["regress"].interpret()
    row = interpretation.top_losses(1).iloc[0]
    x, y = ((interpretation.targets[row["row"]] + 1) / 2 * SIZE).tolist()
    assert row["given"] == str([round(x, 1), round(y, 1)])


def test_a_segmentation_image_with_only_void_pixels_has_no_loss_but_a_picture(learners):
    interpretation = learners["segment"].interpret()
    last = len(interpretation.losses) - 1
    assert math.isnan(interpretation.losses[last])
    table = interpretation.top_losses(len(interpretation.losses))
    assert table["row"].iloc[-1] == last and math.isnan(table["loss"].iloc[-1])
    assert interpretation.picture(last, heatmap=True).shape == (SIZE, SIZE, 3)


def test_confusion_counts_every_valid_item_once_for_single_label_classifiers_only(learners):
    interpretation = learners["classify"].interpret()
    matrix = interpretation.confusion()
    assert matrix.shape == (2, 2) and matrix.sum() == len(learners["classify"].data.valid.dataset)
    off = [(given, predicted, count) for given, predicted, count in interpretation.most_confused()]
    assert sum(count for *_, count in off) == matrix.sum() - np.trace(matrix)
    for task in ("multilabel", "segment", "regress"):
        assert learners[task].interpret().confusion() is None and learners[task].interpret().most_confused() == []


@pytest.mark.parametrize("task", TASKS)
def test_picture_is_the_image_as_seen_and_the_heatmap_changes_it(learners, task):
    interpretation = learners[task].interpret()
    plain, heated = interpretation.picture(0), interpretation.picture(0, heatmap=True)
    assert plain.shape == heated.shape == (SIZE, SIZE, 3) and plain.dtype == heated.dtype == np.uint8
    assert (plain != heated).any()


def test_interpreting_a_built_data_block_names_the_image_files(tmp_path):
    folder = colour_folder(tmp_path / "colours", n=24, size=40)
    items = sorted(str(path.relative_to(folder)) for path in folder.rglob("*.png"))
    data = build_data(folder, items, RandomSplit(0.25, seed=0), label_from_folder, size=SIZE, batch_size=8)
    learner = Learner(data, tiny_model(ClassifierHead(16, 2)), device="cpu")
    interpretation = learner.interpret()
    assert interpretation.items == data.items_valid
    assert set(interpretation.top_losses(3)["item"]) <= set(data.items_valid)
    assert interpretation.picture(0).shape == (SIZE, SIZE, 3)
    with pytest.raises(InterpretError, match="row=99 is outside 0..5"):
        interpretation.picture(99)
    with pytest.raises(InterpretError, match="shuffle=False"):
        Interpretation.from_learner(learner, data.train)


# --- picture for one prediction --------------------------------------------------------------

def test_regression_pictures_show_predicted_points_red_and_true_points_green():
    task, image = RegressTask(SIZE, points=1), np.zeros((SIZE, SIZE, 3), np.uint8)
    drawn = picture(image, task, torch.tensor([-0.5, -0.5]), None, truth=torch.tensor([0.5, 0.5]))
    assert drawn[8, 8].tolist() == [255, 0, 0] and drawn[24, 24].tolist() == [0, 200, 0]
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:4, :4] = 1
    assert picture(image, task, torch.tensor([-0.5, -0.5]), None, heat=heat)[:4, :4].any(-1).all()
    assert (picture(image, RegressTask(SIZE), torch.tensor([0.1]), None) == image).all()  # plain values: as is


# --- an exported model ---------------------------------------------------------------------

@pytest.mark.parametrize("task, n_out, labels", [("classify", 2, ["red", "blue"]),
                                                 ("segment", 2, ["background", "square"])])
def test_explain_image_pictures_an_exported_models_prediction(tmp_path, task, n_out, labels):
    torch.manual_seed(1)  # an untrained model: a seed whose Grad-CAM is not all zero, so the overlay is seen
    x, y = red_blue(16) if task == "classify" else square_masks(16)
    data = task_data(task, x, y, n_out, classes=labels if task == "classify" else None,
                     codes=labels if task == "segment" else None, void_code=255, batch_size=4)
    learner = Learner(data, create_model(task, "mobilenet_v2", n_out, pretrained=False), device="cpu")
    predictor = load_exported(learner.export(tmp_path / "model.pt"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    shown, result = explain_image(predictor, image)
    plain, same = explain_image(predictor, image, heatmap=False)
    assert shown.shape == plain.shape == (SIZE, SIZE, 3) and shown.dtype == np.uint8
    heat = explain(predictor.model, predictor.task, predictor.preprocess(image))[0]
    # the same Grad-CAM up to float rounding, which the map's normalization by its maximum can magnify by a level
    assert np.abs(shown.astype(int) - overlay(plain, heat).astype(int)).max() <= 2
    assert np.abs(shown.astype(int) - plain.astype(int)).mean() > 5
    expected = predictor.predict(image)
    assert result.keys() == same.keys() == expected.keys()
    if task == "segment":
        assert result["mask"].shape == (40, 50) and (result["mask"] == expected["mask"]).all()
    else:
        assert result["label"] == expected["label"]


# --- real data: the data block's valid transform, masks with void, face key points -------------

@pytest.mark.slow
@pytest.mark.data
def test_real_camvid_and_faces_interpret_with_pictures_as_the_model_saw_them():
    camvid, faces = shared_data("camvid"), shared_data("faces")
    valid = (camvid / "valid.txt").read_text().split()[:3]
    names = valid + sorted(p.name for p in (camvid / "images").glob("*.jpg") if p.name not in valid)[:5]
    masks = MaskLabel(lambda item: camvid / "labels" / f"{item.stem}_P.png", camvid / "codes.txt", void_code=11)
    table = pd.read_csv(faces / "keypoints.csv").head(8)
    points = {row.image_name: np.asarray(row.iloc[3:], np.float32).reshape(-1, 2) for _, row in table.iterrows()}
    runs = [(camvid / "images", names, FuncSplit(lambda item: item in valid), masks),
            (faces / "images", list(points), RandomSplit(0.25, seed=0), PointsLabel(points.__getitem__))]
    for folder, items, splitter, labeler in runs:
        data = build_data(folder, items, splitter, labeler, size=64, batch_size=4)
        learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out, pretrained=False), device="cpu")
        interpretation = learner.interpret()
        rows = interpretation.top_losses(3)
        assert list(rows.columns) == COLUMNS and set(rows["item"]) <= set(data.items_valid)
        assert rows["given"].map(len).gt(0).all() and rows["predicted"].map(len).gt(0).all()
        for row in rows["row"]:
            assert interpretation.picture(row, heatmap=True).shape == (64, 64, 3)
