"""Notebook plots: each returns one matplotlib Figure with what it promises, closed, the backend left alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InterpretError, LearnerError
from engine.learner import Learner
from engine.models import ClassifierHead
from engine.plots import plot_confusion, plot_losses, plot_top_losses
from test_explain import _seg_head, tiny_model
from test_learner import red_blue, square_masks, task_data

plt = pytest.importorskip("matplotlib.pyplot")
from matplotlib.figure import Figure  # noqa: E402  (after the skip)


@pytest.fixture(scope="module")
def learner() -> Learner:
    """A tiny classifier fine-tuned with two frozen epochs, then one: epochs numbered 0, 1, 0."""
    torch.manual_seed(0)
    x, y = red_blue(48)
    learner = Learner(task_data("classify", x, y, 2, classes=["red", "blue"]), tiny_model(ClassifierHead(16, 2)),
                      device="cpu")
    learner.lr_find(steps=20)
    learner.fine_tune(1, 1e-2, freeze_epochs=2)
    return learner


def _data_lines(axes):
    return [line for line in axes.get_lines() if len(line.get_xdata()) > 2]


def test_plot_losses_numbers_epochs_on_across_the_fine_tune_stages_and_marks_the_second(learner):
    assert [entry["epoch"] for entry in learner.history] == [0, 1, 0]
    figure = learner.plot_losses()
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    axes = figure.axes[0]
    train, valid = _data_lines(axes)
    assert list(train.get_xdata()) == list(valid.get_xdata()) == [1, 2, 3]
    assert list(train.get_ydata()) == [entry["train_loss"] for entry in learner.history]
    marks = [line for line in axes.get_lines() if line not in (train, valid)]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == 2.5  # between the frozen stage and the next


def test_plot_lr_find_shows_the_curve_and_the_suggestion_and_saves_given_a_path(learner, tmp_path):
    figure = learner.plot_lr_find()
    (axes,) = figure.axes
    curve, mark = axes.get_lines()
    assert list(curve.get_xdata()) == learner.lr_find_result[0]
    assert mark.get_xdata()[0] == learner.lr_find_result[2] and axes.get_xscale() == "log"
    assert learner.plot_lr_find(tmp_path / "lr.png").stat().st_size > 0


def test_plots_before_training_say_what_to_run_first():
    x, y = red_blue(16)
    fresh = Learner(task_data("classify", x, y, 2), tiny_model(ClassifierHead(16, 2)), device="cpu")
    with pytest.raises(LearnerError, match=r"Run learner.lr_find\(\) first"):
        fresh.plot_lr_find()
    with pytest.raises(LearnerError, match="Train first"):
        plot_losses(fresh)


def test_plot_confusion_shows_every_count_of_a_classifier(learner):
    interpretation = learner.interpret()
    for figure in (learner.plot_confusion(), plot_confusion(interpretation)):
        (axes,) = figure.axes
        assert len(axes.images) == 1
        assert (axes.images[0].get_array() == interpretation.confusion()).all()
        assert sorted(int(text.get_text()) for text in axes.texts) == sorted(interpretation.confusion().ravel())


def test_plot_confusion_of_a_segmenter_says_it_needs_a_classifier():
    x, masks = square_masks(8)
    segmenter = Learner(task_data("segment", x, masks, 2, codes=["bg", "square"], void_code=255, batch_size=4),
                        tiny_model(_seg_head(2)), device="cpu")
    with pytest.raises(InterpretError, match="needs a single-label classifier; this is a segment model"):
        segmenter.plot_confusion()
    assert len(plot_top_losses(segmenter, k=2).axes) == 2  # top losses work for every task


def test_plot_top_losses_shows_k_pictures_with_heatmaps_unless_asked_not_to(learner):
    with_heat = learner.plot_top_losses(4)
    without = plot_top_losses(learner.interpret(), k=4, heatmap=False)
    assert len(with_heat.axes) == len(without.axes) == 4
    assert all(len(axes.images) == 1 for axes in with_heat.axes)
    first = [np.asarray(figure.axes[0].images[0].get_array()) for figure in (with_heat, without)]
    assert first[0].shape == first[1].shape and (first[0] != first[1]).any()
    top = learner.interpret().top_losses(1).iloc[0]
    assert with_heat.axes[0].get_title() == f"{top.given} / {top.predicted}\n{top.loss:.2f} / {top.probability:.2f}"
    assert with_heat.get_suptitle() == "given / predicted / loss / probability"


def test_figures_are_handed_over_closed_and_the_backend_is_left_alone(learner):
    backend = plt.get_backend()
    plt.close("all")
    learner.plot_losses()
    learner.plot_top_losses(2)
    assert plt.get_fignums() == [] and plt.get_backend() == backend
