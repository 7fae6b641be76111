"""Notebook plots of training and of what a model got wrong, as matplotlib figures. No UI imports.

Each function returns a `matplotlib.figure.Figure`: the last expression of a Jupyter cell shows it inline,
and `figure.savefig(path)` writes it anywhere, headless included. Figures are made with pyplot (so Jupyter's
inline backend knows how to show them) and closed before they are returned: a cell shows its figure once,
not twice, and a script or a test leaves no figure open. The backend is never switched: matplotlib picks one
(inline in Jupyter, Agg without a display). matplotlib is imported on first use.

`LearnerPlots` makes them `Learner` methods: `learner.plot_losses()`, `learner.interpret()`, ...
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from .errors import InterpretError, LearnerError
from .interpret import Interpretation


def _subplots(rows: int = 1, cols: int = 1, **options):
    from matplotlib import pyplot as plt
    return plt.subplots(rows, cols, **options)


def _finished(figure):
    """`figure` laid out and released by pyplot (see the module docstring)."""
    from matplotlib import pyplot as plt
    figure.tight_layout()
    plt.close(figure)
    return figure


def _interpretation(source) -> Interpretation:
    return source if isinstance(source, Interpretation) else source.interpret()


def plot_lr_find(learner):
    """The last `learner.lr_find()` curve: smoothed loss against learning rate (log scale), the suggestion marked."""
    if getattr(learner, "lr_find_result", None) is None:
        raise LearnerError("There is no lr_find curve to plot yet. Run learner.lr_find() first.")
    lrs, losses, suggestion = learner.lr_find_result
    figure, axes = _subplots(figsize=(6, 4))
    axes.plot(lrs, losses)
    axes.axvline(suggestion, color="red", linestyle="--", label=f"steepest: {suggestion:.2e}")
    axes.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)")
    axes.legend()
    return _finished(figure)


def plot_losses(learner):
    """Training and validation loss per epoch of `learner.history`, numbered on across `fit_one_cycle` calls.

    Each cycle numbers its epochs from 0 again; a dotted line marks where one began (in `fine_tune`: where the
    frozen stage ended and the whole model trained).
    """
    history = learner.history
    if not history:
        raise LearnerError("There is no training history to plot yet. Train first: learner.fine_tune(...) or "
                           "learner.fit_one_cycle(...).")
    epochs = np.arange(1, len(history) + 1)
    figure, axes = _subplots(figsize=(6, 4))
    for key, name in (("train_loss", "train"), ("valid_loss", "valid")):
        axes.plot(epochs, [entry.get(key, math.nan) for entry in history], marker="o", label=name)
    starts = [i for i in range(1, len(history)) if history[i].get("epoch", i) <= history[i - 1].get("epoch", i - 1)]
    for n, start in enumerate(starts):
        axes.axvline(start + 0.5, color="grey", linestyle=":", label="next cycle (fine_tune: unfrozen)" if n == 0
                     else None)
    axes.set(xlabel="epoch", ylabel="loss", xticks=epochs)
    axes.legend()
    return _finished(figure)


def plot_confusion(source):
    """The confusion matrix (rows: given class, columns: predicted) of a single-label classifier.

    `source` is a `Learner` (its validation set is interpreted) or an `Interpretation`.
    """
    interpretation = _interpretation(source)
    matrix = interpretation.confusion()
    if matrix is None:
        raise InterpretError(f"A confusion matrix needs a single-label classifier; this is a "
                             f"{interpretation.task.name} model. Use plot_top_losses to see its worst predictions.")
    names = interpretation.class_names()
    side = min(12, max(4, 1 + 0.6 * len(names)))
    figure, axes = _subplots(figsize=(side, side))
    axes.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(names))
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="given", title="confusion matrix")
    axes.set_xticklabels(names, rotation=90)
    axes.set_yticklabels(names)
    if len(names) <= 30:
        for (given, predicted), count in np.ndenumerate(matrix):
            axes.text(predicted, given, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
    return _finished(figure)


def plot_top_losses(source, k: int = 9, heatmap: bool = True):
    """The `k` rows with the largest losses: each image as the model saw it with its prediction drawn and, with
    `heatmap`, the Grad-CAM of what it looked at; titled given / predicted / loss / probability.

    `source` is a `Learner` (its validation set is interpreted) or an `Interpretation`.
    """
    interpretation = _interpretation(source)
    table = interpretation.top_losses(k)
    if table.empty:
        raise InterpretError("There are no rows to show: the loader is empty. Check the validation split.")
    cols = math.ceil(math.sqrt(len(table)))
    rows = math.ceil(len(table) / cols)
    figure, grid = _subplots(rows, cols, figsize=(2.8 * cols, 3.2 * rows), squeeze=False)
    for axes, record in zip(grid.flat, table.itertuples()):
        axes.imshow(interpretation.picture(record.row, heatmap=heatmap))
        axes.set_title(_title(record), fontsize=8)
        axes.axis("off")
    for axes in grid.flat[len(table):]:
        axes.remove()
    figure.suptitle("given / predicted / loss / probability", fontsize=10)
    return _finished(figure)


def _title(record) -> str:
    given = textwrap.shorten(str(record.given), 30, placeholder="…")
    predicted = textwrap.shorten(str(record.predicted), 30, placeholder="…")
    numbers = f"{record.loss:.2f}" + ("" if math.isnan(record.probability) else f" / {record.probability:.2f}")
    return f"{given} / {predicted}\n{numbers}"


class LearnerPlots:
    """The plots and the interpretation as methods of `engine.learner.Learner`, which inherits them."""

    def interpret(self, loader=None) -> Interpretation:
        """What the model got wrong on `loader` (default: the validation set): `Interpretation.from_learner`."""
        return Interpretation.from_learner(self, loader)

    def plot_lr_find(self, path=None):
        """The last `lr_find` curve as a Figure; with `path` it is also saved there and the path is returned."""
        figure = plot_lr_find(self)
        if path is None:
            return figure
        figure.savefig(path)
        return Path(path)

    def plot_losses(self):
        """Training and validation loss per epoch (see `engine.plots.plot_losses`)."""
        return plot_losses(self)

    def plot_confusion(self):
        """The validation set's confusion matrix (single-label classifiers)."""
        return plot_confusion(self)

    def plot_top_losses(self, k: int = 9, heatmap: bool = True):
        """The `k` validation images with the largest losses, with Grad-CAM heatmaps unless `heatmap=False`."""
        return plot_top_losses(self, k, heatmap)
