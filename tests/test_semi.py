"""Learning from unlabeled images (engine.semi, FixMatch-style): the pseudo-label losses per task, the two views,
the Learner's steps, `labeler train --unlabeled` and the app's fine-tune option."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import colour_folder
from engine import Learner, RandomSplit, build_data, create_model, label_from_folder
from engine.errors import InputError, LearnerError
from engine.semi import UnlabeledImages, pseudo_label_loss
from engine.tasks import ClassifyTask, MultiLabelTask, RegressTask, SegmentTask
from labeler.cli import main


def _logits(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).log()


# -- the losses ----------------------------------------------------------------------------------
def test_classify_keeps_only_confident_pseudo_labels_and_trains_the_strong_view_only():
    weak = _logits([[0.97, 0.02, 0.01], [0.4, 0.3, 0.3], [0.01, 0.01, 0.98], [0.5, 0.49, 0.01]])
    strong = torch.zeros(4, 3, requires_grad=True)
    loss, kept = pseudo_label_loss(ClassifyTask(), weak, strong, 0.95)
    assert kept == 0.5
    loss.backward()
    # rows 1 and 3 are unsure: no push; rows 0 and 2 pushed towards classes 0 and 2; averaged over all 4 rows
    assert torch.all(strong.grad[[1, 3]] == 0)
    assert strong.grad[0].argmin() == 0 and strong.grad[2].argmin() == 2
    assert loss.item() == pytest.approx(2 * np.log(3) / 4, rel=1e-5)
    nothing, none_kept = pseudo_label_loss(ClassifyTask(), weak, strong, 0.99)
    assert none_kept == 0 and nothing.item() == 0


def test_multilabel_keeps_sure_tags_on_and_off_and_leaves_unsure_ones_out():
    probs = torch.tensor([[0.99, 0.02, 0.5], [0.6, 0.97, 0.03]])
    strong = torch.zeros(2, 3, requires_grad=True)
    loss, kept = pseudo_label_loss(MultiLabelTask(), probs.logit(), strong, 0.95)
    assert kept == pytest.approx(4 / 6)
    loss.backward()
    grad = strong.grad
    assert grad[0, 2] == 0 and grad[1, 0] == 0                     # unsure: left out
    assert grad[0, 0] < 0 and grad[1, 1] < 0                       # sure on: pushed up
    assert grad[0, 1] > 0 and grad[1, 2] > 0                       # sure off: pushed down


def test_segmentation_works_per_pixel_and_never_pseudo_labels_void():
    weak = torch.full((1, 3, 2, 2), -5.0)
    weak[0, 0, 0, 0] = weak[0, 1, 0, 1] = weak[0, 2, 1, 0] = 5.0   # confident: class 0, 1 and 2 (void)
    strong = torch.zeros(1, 3, 2, 2, requires_grad=True)            # pixel (1, 1) unsure
    loss, kept = pseudo_label_loss(SegmentTask(void_code=2, n_classes=3), weak, strong, 0.9)
    assert kept == 0.5
    loss.backward()
    assert torch.all(strong.grad[0, :, 1, :] == 0)                  # void and unsure pixels: no push
    assert strong.grad[0, 0, 0, 0] < 0 and strong.grad[0, 1, 0, 1] < 0


def test_regression_is_refused_with_the_reason():
    with pytest.raises(LearnerError, match="no probability to tell a confident prediction"):
        pseudo_label_loss(RegressTask(), torch.zeros(2, 2), torch.zeros(2, 2), 0.9)


# -- the views ------------------------------------------------------------------------------------
class _Labeled:
    size, mean, std = 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_views_are_normalized_at_the_training_size_and_pixel_tasks_keep_geometry(tmp_path):
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = 200                                            # bright left half
    Image.fromarray(pixels).save(tmp_path / "half.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for pixels_task in (False, True):
        views = UnlabeledImages(tmp_path, ["broken.png", "half.png"], _Labeled(), pixels=pixels_task)
        for _ in range(20):
            weak, strong = views[0]                                 # the unreadable image is skipped
            assert weak.shape == strong.shape == (3, 32, 32) and weak.dtype == torch.float32
            if pixels_task:   # colours change, places do not: the bright half stays where the weak view has it
                bright = weak.mean(0).mean(0) > 0
                assert (strong.mean(0).mean(0)[bright].mean() > strong.mean(0).mean(0)[~bright].mean())
    with pytest.raises(InputError, match="no unlabeled images"):
        UnlabeledImages(tmp_path, [], _Labeled())


# -- the learner ----------------------------------------------------------------------------------
@pytest.mark.weights
def test_the_learner_trains_on_unlabeled_images_and_reports_how_many_were_pseudo_labeled(colours):
    folder, labeled, unlabeled = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=2)
    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out))
    learner.use_unlabeled(unlabeled, threshold=0.6, ratio=2)
    drawn = []
    original = learner.unlabeled.next_batch
    learner.unlabeled.next_batch = lambda: drawn.append(1) or original()
    learner.lr_find(steps=5)
    assert not drawn                                               # lr_find's curve is the labeled loss's
    history = learner.fit_one_cycle(3, 1e-2)
    assert len(drawn) == 3 * len(data.train)                       # one unlabeled batch per labeled batch
    assert all(0 <= row["pseudo_labeled"] <= 1 for row in history)
    assert history[-1]["pseudo_labeled"] > 0                       # red against blue: soon confident
    learner.use_unlabeled(None)
    assert "pseudo_labeled" not in learner.fit_one_cycle(1, 1e-3)[-1]


@pytest.mark.weights
def test_settings_that_cannot_work_are_refused(colours):
    from engine.learner import task_for
    folder, labeled, unlabeled = colours
    data = build_data(folder, labeled, RandomSplit(0.25, seed=0), label_from_folder, size=32, batch_size=4)
    learner = Learner(data, create_model(data.task, "mobilenet_v2", data.n_out),
                      task=task_for(data, label_smoothing=0.1))
    with pytest.raises(LearnerError, match="below 0.950, so a confidence threshold of 0.95 would keep no"):
        learner.use_unlabeled(unlabeled, threshold=0.95)
    learner.use_unlabeled(unlabeled, threshold=0.9)                # 2 classes: 0.9 is below the 0.95 ceiling
    for bad, words in ((dict(threshold=1.0), "between 0 and 1"), (dict(ratio=0), "whole number"),
                       (dict(weight=0), "above 0")):
        with pytest.raises(LearnerError, match=words):
            learner.use_unlabeled(unlabeled, **{"threshold": 0.9, **bad})


# -- labeler train --unlabeled --------------------------------------------------------------------
@pytest.mark.weights
def test_train_learns_from_the_images_a_csv_leaves_without_a_row(colours, tmp_path, capsys):
    folder, labeled, unlabeled = colours
    labels = tmp_path / "labels.csv"
    labels.write_text("image_name,tags\n" + "".join(f"{p},{p.split('/')[0]}\n" for p in labeled))
    common = ["train", str(folder), "--csv", str(labels), "--size", "32", "--batch-size", "2", "--freeze-epochs", "1",
              "--epochs", "1", "--lr", "1e-2", "--json", "--workspace", str(tmp_path / "ws")]
    assert main([*common, "--out", str(tmp_path / "a.pt")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["train"] + json.loads(out)["valid"] == 8 and "unlabeled" not in json.loads(out)
    assert "32 of the 40 images have no row" in err and "left out" in err
    assert main([*common, "--unlabeled", "--unlabeled-threshold", "0.6", "--out", str(tmp_path / "b.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unlabeled"]["images"] == 32 and summary["unlabeled"]["threshold"] == 0.6
    assert 0 <= summary["unlabeled"]["pseudo_labeled"] <= 1
    # --unlabeled TXT sets the labels of the images it names aside, whatever the source
    hidden = tmp_path / "hidden.txt"
    hidden.write_text("\n".join(unlabeled[:30]) + "\n")
    assert main(["train", str(folder), "--folders", "--unlabeled", str(hidden), "--size", "32", "--batch-size", "2",
                 "--freeze-epochs", "1", "--epochs", "0", "--lr", "1e-2", "--json", "--unlabeled-threshold", "0.6",
                 "--workspace", str(tmp_path / "ws"), "--out", str(tmp_path / "c.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unlabeled"]["images"] == 30 and summary["train"] + summary["valid"] == 10


def test_train_unlabeled_refusals_name_the_reason(colours, tmp_path, capsys):
    folder, labeled, unlabeled = colours
    common = ["train", str(folder), "--size", "32", "--out", str(tmp_path / "m.pt"), "--workspace", str(tmp_path)]
    assert main([*common, "--folders", "--unlabeled"]) == 2
    assert "every image in the folder has a label" in capsys.readouterr().err
    assert main([*common, "--folders", "--unlabeled", str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    points = tmp_path / "points.csv"
    points.write_text("image_name,x0,y0\n" + "".join(f"{p},3,4\n" for p in labeled))
    assert main([*common, "--points", str(points), "--unlabeled", "--epochs", "0"]) == 2
    assert "not offered for the 'regress' task" in capsys.readouterr().err


# -- the app's fine-tune ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.weights
def test_the_apps_fine_tune_uses_the_unlabeled_images_and_a_test_split_when_asked(tmp_path):
    from labeler.finetune import TrainSpec, start_training
    from labeler.io import import_labels_csv
    from labeler.project import Project
    folder = colour_folder(tmp_path / "colours", n=40, size=32)
    images = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text("image_name,tags\n" + "".join(f"{p},{p.split('/')[0]}\n" for p in images[:6] + images[-6:]))
    with Project(folder) as project:
        import_labels_csv(project, labels)
        spec = TrainSpec(size=32, batch_size=2, freeze_epochs=1, epochs=1, lr=1e-2, unlabeled=True,
                         unlabeled_threshold=0.6, test_pct=0.25)
        run = start_training(project, spec)
        deadline = time.monotonic() + 300
        while run.running and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not run.running and run.error is None, run.error
        assert all("pseudo_labeled" in row for row in run.history)
        assert run.record["spec"]["unlabeled"] is True
        # the test split: 3 of the 12 labels held out before validation, scored once, never pseudo-labeled
        test = run.record["test"]
        assert test["images"] == 3 and run.record["train"] + run.record["valid"] == 9
        assert 0 <= test["metrics"]["accuracy"] <= 1 and "baseline" in test
