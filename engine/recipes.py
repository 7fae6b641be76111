"""Recipe steps as `Learner` callbacks (issue 20 item 3): a moving average of the weights, and progressive resizing.

`WeightAverage`: an exponential moving average of the weights; validation scores the average, and the model keeps
it when fitting ends. The average follows every training step, `average = d * average + (1 - d) * weights`,
with `d` ramping up as min(decay, (1 + t) / (10 + t)) so the first steps are not dominated by the start.
Batch norm's running statistics are averaged like the weights (they belong to the weights they were measured
under); integer counters are copied. Each `fit_one_cycle` starts a new average from the weights it starts with, so a fine-tune's
head-only stage and its whole-network stage each end on their own average.
"""
from __future__ import annotations

import torch

from .errors import LearnerError
from .learner import Callback


class WeightAverage(Callback):
    """`Learner(..., callbacks=[WeightAverage(0.99)])`: validate and finish on the moving average of the weights."""

    def __init__(self, decay: float = 0.99):
        if not 0 < decay < 1:
            raise LearnerError(f"The weight-average decay must be between 0 and 1 (e.g. 0.99), not {decay}.")
        self.decay, self.steps = float(decay), 0
        self.average: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] | None = None

    def on_fit_begin(self, learner):
        self.steps = 0
        self.average = {name: value.detach().clone() for name, value in learner.model.state_dict().items()}

    @torch.no_grad()
    def on_train_batch_end(self, learner):
        if self.average is None:     # a step outside a fit (lr_find restores the weights it changed)
            return
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for name, value in learner.model.state_dict().items():
            if value.is_floating_point():
                self.average[name].mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                self.average[name].copy_(value)

    def on_validate_begin(self, learner):
        if self.average is not None and self.steps:
            self._live = {name: value.detach().clone() for name, value in learner.model.state_dict().items()}
            learner.model.load_state_dict(self.average)

    def on_validate_end(self, learner):
        if self._live is not None:
            learner.model.load_state_dict(self._live)
            self._live = None

    def on_fit_end(self, learner):
        if self.average is not None and self.steps:
            learner.model.load_state_dict(self.average)
        self.average = None


class ProgressiveResize(Callback):
    """Train the first `share` of `epochs` (counted over every fit: a fine-tune's head-only epochs too) at `start`
    pixels, the rest at the data's own size: early epochs cost (start / size)^2 as much, and the last ones adapt
    the network, batch norm included, to the size it will predict at (fastai's progressive resizing)."""

    def __init__(self, start: int, epochs: int, share: float = 0.5):
        if not isinstance(start, int) or start < 32:
            raise LearnerError(f"The starting size must be a whole number of pixels, at least 32, not {start!r}.")
        if not 0 < share < 1:
            raise LearnerError(f"The share of epochs at the starting size must be between 0 and 1, not {share}.")
        self.start, self.small_epochs, self.seen, self.size = start, round(epochs * share), 0, None

    def on_epoch_begin(self, learner):
        if self.size is None:
            self.size = learner.data.size
        learner.data.set_size(self.start if self.seen < self.small_epochs else self.size)
        self.seen += 1

    def on_fit_end(self, learner):    # the next fit's epochs set their size again; after the last, the full one
        if self.size is not None:
            learner.data.set_size(self.size)
