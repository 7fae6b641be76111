"""Models and the shared training loop on tiny synthetic problems (CPU, random init)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.learner import (
    Callback,
    EarlyStopping,
    Learner,
    LearnerError,
    SaveBest,
    load_exported,
    steepest_lr,
)
from engine.models import ModelError, create_model
from engine.tasks import ClassifyTask, MultiLabelTask, RegressTask, SegmentTask

SIZE = 32
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def task_data(task, x, y, n_out, classes=None, codes=None, void_code=None, batch_size=16):
    """A stand-in for datablock.TaskData built from tensors (first 3/4 train, rest valid)."""
    cut = len(x) * 3 // 4
    train = DataLoader(TensorDataset(x[:cut], y[:cut]), batch_size=batch_size, shuffle=True, drop_last=True)
    valid = DataLoader(TensorDataset(x[cut:], y[cut:]), batch_size=batch_size)
    return SimpleNamespace(task=task, classes=classes, codes=codes, void_code=void_code, n_out=n_out,
                           train=train, valid=valid, size=SIZE, mean=MEAN, std=STD)


def red_blue(n=96):
    """Images whose class is their colour: 0 reddish, 1 bluish, with noise; normalized."""
    y = torch.arange(n) % 2
    x = torch.rand(n, 3, SIZE, SIZE) * 0.5
    x[y == 0, 0] += 0.5
    x[y == 1, 2] += 0.5
    return (x - 0.5) / 0.25, y


def square_masks(n=32):
    """Images with a bright square; the mask is 1 inside the square, 0 outside, void (255) on its border."""
    x, masks = torch.rand(n, 3, SIZE, SIZE) * 0.3, torch.zeros(n, SIZE, SIZE, dtype=torch.int64)
    rng = np.random.default_rng(0)
    for i in range(n):
        top, left = rng.integers(0, SIZE // 2, size=2)
        x[i, :, top:top + 12, left:left + 12] += 0.7
        masks[i, top:top + 12, left:left + 12] = 1
        masks[i, top, left:left + 12] = 255
    return (x - 0.5) / 0.25, masks


def bright_spot(n=48):
    """Images with one bright 6-px spot; the target is its centre in [-1, 1]."""
    x, coords = torch.rand(n, 3, SIZE, SIZE) * 0.2, torch.zeros(n, 2)
    rng = np.random.default_rng(0)
    for i in range(n):
        cx, cy = rng.integers(3, SIZE - 3, size=2)
        x[i, :, cy - 3:cy + 3, cx - 3:cx + 3] = 1.0
        coords[i] = torch.tensor([cx, cy]) / SIZE * 2 - 1
    return (x - 0.5) / 0.25, coords


@pytest.fixture
def classify_data():
    x, y = red_blue()
    return task_data("classify", x, y, 2, classes=["red", "blue"])


@pytest.fixture
def classifier_learner(classify_data):
    return Learner(classify_data, create_model("classify", "resnet18", 2, pretrained=False))


# --- models ----------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("task, n_out, shape", [
    ("classify", 3, (2, 3)), ("multilabel", 5, (2, 5)), ("segment", 4, (2, 4, 48, 40)), ("regress", 6, (2, 6)),
])
def test_each_task_model_outputs_the_expected_shape(backbone, task, n_out, shape):
    model = create_model(task, backbone, n_out, pretrained=False).eval()
    assert model(torch.randn(2, 3, 48, 40)).shape == shape
    groups = model.layer_groups
    assert len(groups) == 3 and sum(map(len, groups)) == len(list(model.parameters()))


def test_regression_head_stays_inside_its_y_range():
    model = create_model("regress", "mobilenet_v2", 4, pretrained=False, y_range=(-1, 1)).eval()
    out = model(torch.randn(3, 3, 32, 32) * 100)
    assert out.min() >= -1 and out.max() <= 1


def test_unknown_task_raises_a_model_error_listing_the_tasks():
    with pytest.raises(ModelError, match="Unknown task 'detect'. Choose one of: classify"):
        create_model("detect", "resnet18", 2, pretrained=False)


# --- training --------------------------------------------------------------------------

def test_classifier_learns_red_versus_blue_above_90_percent(classifier_learner):
    history = classifier_learner.fit_one_cycle(3, 1e-2)
    assert history[-1]["accuracy"] > 0.9
    assert classifier_learner.validate()["accuracy"] > 0.9


def test_unet_loss_decreases_on_squares_with_void_borders():
    x, masks = square_masks()
    data = task_data("segment", x, masks, 2, codes=["background", "square"], void_code=255, batch_size=8)
    learner = Learner(data, create_model("segment", "mobilenet_v2", 2, pretrained=False))
    before = learner.validate()["valid_loss"]
    history = learner.fit_one_cycle(3, 1e-2)
    assert history[-1]["valid_loss"] < before
    assert {"pixel_accuracy", "mean_iou"} <= set(history[-1])


def test_regression_loss_decreases_on_spot_centres():
    x, coords = bright_spot()
    data = task_data("regress", x, coords, 2, batch_size=8)
    learner = Learner(data, create_model("regress", "resnet18", 2, pretrained=False))
    history = learner.fit_one_cycle(6, 1e-3)  # from scratch, lr 1e-2 is too high to fall reliably
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["point_error_px"] == pytest.approx(history[-1]["point_error_rel"] * SIZE)


def test_multilabel_training_reports_threshold_f2_and_map():
    x, y = red_blue(64)
    tags = torch.stack([(y == 0).float(), (y == 1).float()], dim=1)
    learner = Learner(task_data("multilabel", x, tags, 2, classes=["red", "blue"]),
                      create_model("multilabel", "mobilenet_v2", 2, pretrained=False))
    result = learner.fit_one_cycle(1, 1e-2)[-1]
    assert {"accuracy", "f2", "mAP", "threshold"} <= set(result)


# --- lr_find ---------------------------------------------------------------------------

def test_lr_find_restores_weights_and_optimizer_exactly(classifier_learner):
    before = {k: v.clone() for k, v in classifier_learner.model.state_dict().items()}
    opt_before = classifier_learner.opt.state_dict()
    lrs, losses, suggestion = classifier_learner.lr_find(steps=20)
    assert len(lrs) == len(losses) >= 3 and lrs[0] <= suggestion <= lrs[-1]
    for key, value in classifier_learner.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert classifier_learner.opt.state_dict()["state"] == opt_before["state"]


def test_steepest_lr_is_where_the_loss_falls_fastest():
    lrs = np.geomspace(1e-6, 1, 61)
    losses = 2 - np.tanh(np.log10(lrs) + 3)  # falls fastest at lr = 1e-3
    assert steepest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.3)


class TinyNet(nn.Module):
    """A pooled linear model: fast enough for a 100-step lr_find, flat loss at tiny lrs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)
        self.config = {}

    def forward(self, x):
        return self.head(self.body(x))

    @property
    def layer_groups(self):
        return [list(self.body.parameters()), list(self.head.parameters())]


def test_lr_find_suggests_the_steepest_fall_and_training_there_converges(classify_data, tmp_path):
    learner = Learner(classify_data, TinyNet())
    lrs, losses, suggestion = learner.lr_find()
    slopes = np.gradient(losses, np.log(lrs))
    warm = len(lrs) // 10
    assert slopes[lrs.index(suggestion)] == pytest.approx(slopes[warm:].min())
    assert 1e-3 < suggestion < 1e-1  # the loss is flat below ~2e-4 on this problem
    assert learner.plot_lr_find(tmp_path / "lr.png").stat().st_size > 0
    assert learner.fit_one_cycle(3, suggestion)[-1]["accuracy"] > 0.9


# --- freezing and discriminative learning rates ----------------------------------------

def test_freeze_trains_only_the_head_and_keeps_body_batchnorm_statistics(classifier_learner):
    model = classifier_learner.model
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    classifier_learner.freeze()
    classifier_learner.fit_one_cycle(1, 1e-2)
    for key, value in model.body.state_dict().items():  # running means included
        assert torch.equal(value, body_before[key]), key
    assert any(not torch.equal(p, q) for p, q in zip(model.head.parameters(), head_before))
    classifier_learner.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_slice_spreads_learning_rates_geometrically_across_groups(classifier_learner):
    assert classifier_learner.group_lrs(slice(1e-5, 1e-3)) == pytest.approx([1e-5, 1e-4, 1e-3])
    classifier_learner.fit_one_cycle(1, slice(1e-5, 1e-3))
    peaks = [group["max_lr"] for group in classifier_learner.opt.param_groups]
    assert peaks == pytest.approx([1e-5, 1e-4, 1e-3])


def test_bad_lr_slice_raises_a_learner_error(classifier_learner):
    with pytest.raises(LearnerError, match="0 < start <= stop"):
        classifier_learner.group_lrs(slice(1e-3, 1e-5))


class StageRecorder(Callback):
    """What each `fit_one_cycle` of a recipe trained: frozen or not, and the peak lr of each layer group."""

    def __init__(self):
        self.stages = []

    def on_fit_begin(self, learner):
        self.stages.append((learner.frozen, [group["max_lr"] for group in learner.opt.param_groups]))


def test_fine_tune_trains_the_head_then_everything_at_discriminative_rates(classify_data):
    stages = StageRecorder()
    learner = Learner(classify_data, TinyNet(), callbacks=[stages])
    assert learner.fine_tune(1, 1e-2, freeze_epochs=2) == pytest.approx(5e-3)
    assert [frozen for frozen, _ in stages.stages] == [True, False] and len(learner.history) == 3
    assert stages.stages[0][1] == pytest.approx([1e-2, 1e-2])
    assert stages.stages[1][1] == pytest.approx([5e-5, 5e-3])        # slice(lr / 200, lr / 2) over two groups


def test_fine_tune_is_the_recipe_written_out_number_for_number(classify_data):
    def written_out():
        learner = Learner(classify_data, create_model("classify", "resnet18", 2, pretrained=False))
        learner.freeze()
        learner.fit_one_cycle(1, 1e-3)
        learner.unfreeze()
        learner.fit_one_cycle(1, slice(5e-6, 5e-4))
        return learner

    def fine_tuned():
        learner = Learner(classify_data, create_model("classify", "resnet18", 2, pretrained=False))
        learner.fine_tune(1, 1e-3)
        return learner

    results = []
    for recipe in (written_out, fine_tuned):
        torch.manual_seed(0)
        results.append(recipe())
    assert results[0].history == results[1].history
    for key, value in results[0].model.state_dict().items():
        assert torch.equal(value, results[1].model.state_dict()[key]), key


def test_fine_tune_without_a_rate_takes_the_clamped_lr_find_suggestion(classify_data, monkeypatch):
    learner = Learner(classify_data, TinyNet())
    monkeypatch.setattr(learner, "lr_find", lambda steps: ([], [], 3.0))      # a noisy curve's wild suggestion
    assert learner.suggest_lr() == 1e-2
    monkeypatch.setattr(learner, "lr_find", lambda steps: ([], [], 1e-3))
    assert learner.fine_tune(0, freeze_epochs=1) == pytest.approx(5e-4)


# --- callbacks -------------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda learner: self.events.append(name)
        return super().__getattribute__(name)


def test_callbacks_are_called_in_loop_order(classify_data):
    recorder = Recorder()
    model = create_model("classify", "mobilenet_v2", 2, pretrained=False)
    Learner(classify_data, model, callbacks=[recorder]).fit_one_cycle(1, 1e-3)
    batches = len(classify_data.train)
    assert recorder.events == (["on_fit_begin", "on_epoch_begin"]
                               + ["on_train_batch_begin", "on_train_batch_end"] * batches
                               + ["on_validate_begin", "on_validate_end", "on_epoch_end", "on_fit_end"])


def test_early_stopping_stops_when_the_monitor_stops_improving(classify_data):
    model = create_model("classify", "mobilenet_v2", 2, pretrained=False)
    learner = Learner(classify_data, model, callbacks=[EarlyStopping("valid_loss", patience=1)])
    learner.fit_one_cycle(6, 0.0)  # lr 0: nothing improves after the first epoch
    assert len(learner.history) == 2


def test_save_best_writes_the_best_weights(classify_data, tmp_path):
    path = tmp_path / "best.pt"
    model = create_model("classify", "mobilenet_v2", 2, pretrained=False)
    Learner(classify_data, model, callbacks=[SaveBest(path, monitor="accuracy")]).fit_one_cycle(1, 1e-3)
    assert path.stat().st_size > 0


# --- export ----------------------------------------------------------------------------

def test_export_load_predict_round_trip_on_a_pil_image(classifier_learner, tmp_path):
    classifier_learner.fit_one_cycle(2, 1e-2)
    predictor = load_exported(classifier_learner.export(tmp_path / "model.pt"))
    noise = np.random.default_rng(0).random((40, 50, 3)) * 0.5
    noise[..., 0] += 0.5                          # reddish noise, like the training images
    red = Image.fromarray((noise * 255).astype(np.uint8))
    result = predictor.predict(red)
    in_memory = classifier_learner.predict(red)
    assert result["label"] == in_memory["label"] == "red"
    for name, p in result["probabilities"].items():
        assert p == pytest.approx(in_memory["probabilities"][name], abs=1e-5)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0)


def test_exported_segmenter_predicts_a_mask_at_the_image_size(tmp_path):
    x, masks = square_masks(8)
    data = task_data("segment", x, masks, 2, codes=["background", "square"], void_code=255, batch_size=4)
    learner = Learner(data, create_model("segment", "mobilenet_v2", 2, pretrained=False))
    result = load_exported(learner.export(tmp_path / "unet.pt")).predict(Image.new("RGB", (50, 40)))
    assert result["mask"].shape == (40, 50) and result["codes"] == ["background", "square"]


def test_loading_a_file_that_is_not_an_export_raises_a_learner_error(tmp_path):
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(LearnerError, match="not a model exported by Learner.export"):
        load_exported(tmp_path / "other.pt")


class _PixelClassifier(nn.Module):
    """A per-pixel model (1x1 convolution): mirroring the input mirrors its output exactly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.layer_groups = [list(self.conv.parameters())]

    def forward(self, x):
        return self.conv(x)


def test_flip_tta_maps_mirrored_masks_back_onto_the_image():
    x, masks = square_masks()
    data = task_data("segment", x, masks, 2, codes=["background", "square"], void_code=255, batch_size=8)
    learner = Learner(data, _PixelClassifier())
    learner.fit_one_cycle(2, 1e-2)
    plain, outputs_plain = learner.validate(), learner._outputs(data.valid)[0]
    # a per-pixel model gives the same mask with and without TTA only if the mirrored mask is flipped back
    assert torch.equal(learner._outputs(data.valid, tta=True)[0], outputs_plain)
    assert learner.validate(tta=True)["pixel_accuracy"] == pytest.approx(plain["pixel_accuracy"])
    learner.task.unflip = lambda pred: pred  # forgetting to flip back misplaces the squares
    assert not torch.equal(learner._outputs(data.valid, tta=True)[0], outputs_plain)


def test_zoom_tta_averages_a_zoomed_centre_crop_in_only_where_the_output_is_about_the_whole_image():
    from engine import tta
    x = torch.arange(2 * 3 * 20 * 20, dtype=torch.float32).reshape(2, 3, 20, 20)
    closer = tta.zoomed(x)
    assert closer.shape == x.shape
    assert torch.allclose(tta.zoomed(torch.ones(1, 3, 20, 20)), torch.ones(1, 3, 20, 20))   # a centre crop, resized
    assert closer[..., 0, 0].gt(x[..., 0, 0]).all() and closer[..., -1, -1].lt(x[..., -1, -1]).all()
    seen = []

    def forward(batch):
        seen.append(batch)
        return batch.mean((2, 3))                 # a "classifier": one score per channel for the whole image

    out = tta.averaged(forward, x, ClassifyTask(), "zoom")
    assert len(seen) == 4 and torch.equal(seen[1], x.flip(-1)) and torch.allclose(seen[2], closer)
    assert torch.allclose(out, torch.stack([forward(v) for v in (x, x.flip(-1), closer, closer.flip(-1))]).mean(0))
    seen.clear()
    tta.averaged(forward, x, SegmentTask(), "zoom")           # a mask on a crop is not where it is: flips only
    assert len(seen) == 2
    assert tta.applies(MultiLabelTask(), "zoom") and not tta.applies(SegmentTask(), "zoom")
    assert not tta.applies(RegressTask(32, points=1), "zoom") and tta.applies(RegressTask(32, points=1), True)
    assert not tta.applies(ClassifyTask(), None) and tta.mode_of(True) == "flips"
    with pytest.raises(LearnerError, match="not one of flips, zoom"):
        tta.mode_of("rotate")


def test_one_point_mirrors_back_by_negating_x():
    task = RegressTask(32, points=1)
    assert torch.equal(task.unflip(torch.tensor([[0.25, -0.5]])), torch.tensor([[-0.25, -0.5]]))
    assert RegressTask(32, points=2).unflip(torch.zeros(1, 4)) is None   # left/right would swap
    assert RegressTask(32).unflip(torch.zeros(1, 2)) is None             # plain values: nothing to mirror


def test_regression_has_no_flip_tta_and_validates_without_it():
    x, coords = bright_spot(16)
    learner = Learner(task_data("regress", x, coords, 2), create_model("regress", "mobilenet_v2", 2, pretrained=False))
    assert learner.task.unflip(torch.zeros(2, 2)) is None
    assert learner.validate(tta=True)["point_error_px"] == pytest.approx(learner.validate()["point_error_px"])


def test_baselines_are_the_image_blind_predictors():
    x, y = red_blue(40)
    y[:30] = 1                                   # training split (first 30) mostly class 1
    learner = Learner(task_data("classify", x, y, 2), create_model("classify", "mobilenet_v2", 2, pretrained=False))
    valid = y[30:]
    assert learner.baseline()["accuracy"] == pytest.approx(float((valid == 1).float().mean()))

    tags = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).repeat(8, 1)
    multi = Learner(task_data("multilabel", x[:16], tags, 2), create_model("multilabel", "mobilenet_v2", 2,
                                                                           pretrained=False))
    multi.task.threshold = 0.3
    f2 = multi.baseline()["f2"]                  # all positive: F2 5/6 on one-tag rows, 1 on two-tag rows
    assert f2 == pytest.approx((5 / 6 + 1) / 2, abs=1e-4)
    assert multi.task.threshold == 0.3           # the model's own threshold is untouched

    x, coords = bright_spot(16)
    reg = Learner(task_data("regress", x, coords, 2), create_model("regress", "mobilenet_v2", 2, pretrained=False))
    mean = coords[:12].mean(0)
    expected = ((coords[12:] - mean) / 2 * SIZE).norm(dim=1).mean()
    assert reg.baseline()["point_error_px"] == pytest.approx(float(expected), rel=1e-4)
    assert Learner(task_data("segment", *square_masks(8), 2, void_code=255),
                   create_model("segment", "mobilenet_v2", 2, pretrained=False)).baseline() is None


# --- regularisation: label smoothing --------------------------------------------

def test_label_smoothing_keeps_a_floor_under_the_loss_of_a_perfect_prediction():
    perfect = torch.tensor([[30.0, -30.0], [-30.0, 30.0]])
    target = torch.tensor([0, 1])
    assert ClassifyTask().loss(perfect, target).item() < 1e-6
    smoothed = ClassifyTask(label_smoothing=0.2)
    # the target keeps 0.9 and the other class 0.1: confident logits now cost about 0.1 * 60
    assert smoothed.loss(perfect, target).item() == pytest.approx(0.1 * 60, rel=0.01)
    assert smoothed.config() == {"label_smoothing": 0.2}
    with pytest.raises(LearnerError, match="label_smoothing"):
        ClassifyTask(label_smoothing=1.0)


def test_tasks_say_whether_flip_tta_applies():
    assert ClassifyTask().can_unflip and MultiLabelTask().can_unflip and SegmentTask().can_unflip
    assert RegressTask(32, points=1).can_unflip
    assert not RegressTask(32, points=2).can_unflip and not RegressTask(32).can_unflip
