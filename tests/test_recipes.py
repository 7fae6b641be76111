"""Recipe steps (engine.recipes, issue 20 item 3): the weight average, progressive resizing, and a head started
from a linear probe."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from engine import Learner, RandomSplit, build_data, create_model, label_from_folder
from engine.errors import LearnerError
from labeler.cli import main


@pytest.mark.weights
def test_the_weight_average_is_what_validation_scores_and_what_the_model_keeps(colours):
    from engine.recipes import WeightAverage
    from engine.learner import Callback
    folder, labeled, _ = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=2)

    def weights(learner):
        return {k: v.clone() for k, v in learner.model.state_dict().items() if v.is_floating_point()}

    class Peek(Callback):        # after the average in the list: sees what the average left
        live, validated = None, None

        def on_train_batch_end(self, learner):
            self.live = weights(learner)

        def on_validate_begin(self, learner):
            self.validated = weights(learner)

    peek = Peek()
    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out),
                      callbacks=[WeightAverage(0.9), peek])
    learner.fit_one_cycle(3, 1e-2)
    kept = weights(learner)
    moved = [k for k in kept if not torch.equal(peek.live[k], kept[k])]
    assert moved                                                    # the average is not the last step's weights
    assert all(torch.equal(peek.validated[k], kept[k]) for k in kept)   # it is what validation scored, and kept
    with pytest.raises(LearnerError, match="between 0 and 1"):
        WeightAverage(1.0)


@pytest.mark.weights
def test_progressive_resizing_trains_small_first_and_ends_at_the_full_size(colours, tmp_path, capsys):
    from engine.learner import Callback
    from engine.recipes import ProgressiveResize
    folder, labeled, _ = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=48, batch_size=2)
    sizes = []

    class Sizes(Callback):
        def on_train_batch_begin(self, learner):
            sizes.append(learner.data.size)

    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out),
                      callbacks=[ProgressiveResize(32, epochs=4), Sizes()])
    learner.fine_tune(3, 1e-2, freeze_epochs=1)                      # 1 + 3 epochs: two at 32, two at 48
    per_epoch = len(data.train)
    assert sizes == [32] * 2 * per_epoch + [48] * 2 * per_epoch and data.size == 48
    x, _ = next(iter(data.train))
    assert x.shape[-1] == 48
    with pytest.raises(LearnerError, match="at least 32"):
        ProgressiveResize(16, epochs=4)
    # from the command line, with --ema: the model is exported at the full size
    assert main(["train", str(folder), "--folders", "--size", "48", "--progressive", "32", "--ema", "0.9",
                 "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-2", "--json",
                 "--workspace", str(tmp_path / "ws"), "--out", str(tmp_path / "p.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] >= 0
    assert torch.load(tmp_path / "p.pt", weights_only=False)["size"] == 48


# -- a head started from a linear probe ------------------------------------------------------------
@pytest.mark.weights
def test_the_probed_head_separates_the_classes_before_any_training_step(colours):
    from engine.recipes import ProbeHead
    folder, labeled, rest = colours
    data = build_data(folder, labeled + rest, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=4)
    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out))
    before = {k: v.clone() for k, v in learner.model.body.state_dict().items()}
    probe = ProbeHead()
    probe.on_fit_begin(learner)
    assert learner.validate()["accuracy"] == 1.0                   # red against blue, from the probe alone
    assert probe.report["C"] in ProbeHead.C_GRID and probe.report["train_accuracy"] == 1.0
    # the body is untouched; the head's batch norm standardizes the features it was fitted on
    assert all(torch.equal(v, before[k]) for k, v in learner.model.body.state_dict().items())
    norm = learner.model.head[1]
    assert norm.running_var.max() > 0 and norm.running_mean.abs().max() > 0 and torch.all(norm.weight == 1)
    weight = learner.model.head[3].weight.detach().clone()
    probe.on_fit_begin(learner)                                    # only before the first fit
    assert torch.equal(learner.model.head[3].weight, weight)


def test_the_probe_fits_a_softmax_for_classes_and_a_logistic_regression_per_tag():
    from engine.recipes import _fit_probe
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    # two of three classes present: the two rows give scikit-learn's probabilities, the absent class next to none
    y = (x[:, 0] > 0).astype(int) * 2
    weight, bias, _ = _fit_probe(x, y, 3, (1.0,))
    logits = x @ weight.T + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert probs[:, 1].max() < 1e-3 and ((probs[:, 2] > 0.5) == (y == 2)).mean() > 0.9
    weight, bias, _ = _fit_probe(x, np.full(60, 1), 3, (1.0,))     # one class alone: it, whatever the features
    assert not weight.any() and np.argmax(bias) == 1
    # multi-hot: a tag on everywhere keeps only its frequency's logit; the others are fitted on their own
    tags = np.stack([x[:, 1] > 0, np.ones(60, bool), x[:, 2] > 0.5], axis=1).astype(np.float32)
    weight, bias, report = _fit_probe(x, tags, 3, (0.1, 1.0))
    assert not weight[1].any() and bias[1] > 5 and set(report["C"]) == {0, 2}
    assert np.argmax(np.abs(weight[0])) == 1 and np.argmax(np.abs(weight[2])) == 2


@pytest.mark.weights
def test_a_probe_head_needs_a_classifier_head_and_runs_from_the_command_line(colours, tmp_path, capsys, caplog):
    from engine.recipes import ProbeHead
    folder, labeled, _ = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=2)
    regressor = Learner(data, create_model("regress", "mobilenet_v2", 2))
    with pytest.raises(LearnerError, match="classifier's pooled head"):
        ProbeHead().on_fit_begin(regressor)
    with caplog.at_level(logging.INFO, logger="engine.recipes"):
        assert main(["train", str(folder), "--folders", "--size", "48", "--progressive", "32", "--ema", "0.9",
                     "--probe-head", "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "0", "--lr", "1e-3",
                     "--json", "--workspace", str(tmp_path / "ws"), "--out", str(tmp_path / "p.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 1.0      # one head-only epoch after it
    assert "head started from a linear probe" in caplog.text


# -- mixup and cutmix ------------------------------------------------------------------------------
def _distinct_batch(n=6, size=16):
    """Images each of one constant value (its index + 1), and labels equal to the index."""
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return x, torch.arange(n)


def test_mixup_blends_two_images_and_weighs_their_losses_alike():
    from engine.recipes import Mix
    x, y = _distinct_batch()
    mix = Mix("mixup", 0.4, epochs=3, seed=1)
    for _ in range(5):
        mixed, targets = mix.mix(x, y)
        (lam, first), (rest, other) = targets
        assert torch.equal(first, y) and lam >= 0.5 and abs(lam + rest - 1) < 1e-9
        assert torch.allclose(mixed, lam * x + rest * x[other]) and (other != y).any()
    with pytest.raises(LearnerError, match="mixup, cutmix"):
        Mix("blend", 0.4, epochs=3)
    with pytest.raises(LearnerError, match="above 0"):
        Mix("mixup", 0, epochs=3)
    with pytest.raises(LearnerError, match="leaves none mixed"):
        Mix("cutmix", 1.0, epochs=1)


def test_cutmix_pastes_a_box_weighed_by_its_area_and_the_masks_box_with_it():
    from engine.recipes import Mix
    x, y = _distinct_batch()
    mix = Mix("cutmix", 1.0, epochs=3, seed=2)
    for _ in range(5):
        mixed, ((lam, first), (rest, other)) = mix.mix(x, y)
        changed = (mixed != x).any(1)                              # (N, H, W): where another image was pasted
        pasted = changed & (other != y).view(-1, 1, 1)
        box = changed.any(0)
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) if box.any() else 0
        assert abs(rest - float(area) / 256) < 1e-9 and abs(lam + rest - 1) < 1e-9
        for i in range(len(x)):                                    # inside the box: the other image's value
            assert torch.all(mixed[i][:, pasted[i]] == other[i] + 1)
    # masks: the other mask's box goes with the other image's box, one target of weight 1
    masks = y.view(-1, 1, 1).expand(-1, 16, 16).clone()
    mixed, targets = Mix("cutmix", 1.0, epochs=3, seed=3).mix(x, masks)
    assert len(targets) == 1 and targets[0][0] == 1.0
    assert torch.equal(mixed[:, 0].long() - 1, targets[0][1])      # each pixel's class is its image's


@pytest.mark.weights
def test_a_mixed_fit_trains_its_last_epoch_clean_and_measures_batch_norm_on_clean_images(colours):
    from engine.learner import Callback
    from engine.recipes import Mix, WeightAverage
    from engine.tasks import RegressTask
    folder, labeled, _ = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=2,
                      augment=False)
    mixed, averaged = [], {}

    class Spy(Callback):
        def on_train_batch_begin(self, learner):
            mixed.append(learner.mixer is not None)

        def on_fit_end(self, learner):                             # between the average and the mix
            averaged["mean"] = learner.model.head[1].running_mean.clone()

    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out),
                      callbacks=[WeightAverage(0.9), Spy(), Mix("cutmix", 1.0, epochs=3)])
    learner.freeze()                                               # the head's batch norm alone is measured again
    learner.fit_one_cycle(3, 1e-2)
    per_epoch = len(data.train)
    assert mixed == [True] * 2 * per_epoch + [False] * per_epoch and learner.mixer is None
    # the head's running mean is the clean training images' pooled features' mean, not the average's
    with torch.no_grad():
        features = torch.cat([learner.model.head[0](learner.model.body(x)) for x, _ in data.train])
    kept = learner.model.head[1].running_mean
    assert torch.allclose(kept, features.mean(0), atol=1e-4) and not torch.allclose(kept, averaged["mean"])
    with pytest.raises(LearnerError, match="no single set of points"):
        Mix("mixup", 0.4, epochs=3).on_fit_begin(Learner(data, create_model("regress", "mobilenet_v2", 2),
                                                         task=RegressTask(32, points=1)))


@pytest.mark.weights
def test_cutmix_runs_from_the_command_line_and_not_with_mixup(colours, tmp_path, capsys):
    folder, _, _ = colours
    assert main(["train", str(folder), "--folders", "--size", "32", "--cutmix", "1.0", "--batch-size", "8",
                 "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-3", "--json",
                 "--workspace", str(tmp_path / "ws"), "--out", str(tmp_path / "m.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] >= 0.5
    with pytest.raises(SystemExit):
        main(["train", str(folder), "--folders", "--mixup", "0.4", "--cutmix", "1.0", "--out", str(tmp_path / "m.pt")])
    assert "not allowed with argument" in capsys.readouterr().err
