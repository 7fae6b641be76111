"""Recipe steps as `Learner` callbacks (issue 20 item 3): a moving average of the weights, progressive resizing,
a classifier head started from a linear probe, and mixup / cutmix with batch norm re-measured on clean images.

`WeightAverage`: an exponential moving average of the weights; validation scores the average, and the model keeps
it when fitting ends. The average follows every training step, `average = d * average + (1 - d) * weights`,
with `d` ramping up as min(decay, (1 + t) / (10 + t)) so the first steps are not dominated by the start.
Batch norm's running statistics are averaged like the weights (they belong to the weights they were measured
under); integer counters are copied. Each `fit_one_cycle` starts a new average from the weights it starts with,
so a fine-tune's head-only stage and its whole-network stage each end on their own average.

`Mix` (mixup, cutmix) and `recalibrate_batch_norm`: see their docstrings.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from .errors import LearnerError
from .learner import Callback

logger = logging.getLogger(__name__)


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


class ProbeHead(Callback):
    """Start a classifier head from a linear probe (LP-FT: Kumar et al., 2022) before the first fit.

    The frozen pretrained body's pooled features of the training images (one pass, in eval mode, as the training
    loader gives them) fit a logistic regression (one softmax over classes, or one per tag for multi-label
    targets), with its regularization chosen by 3-fold cross-validation on those training images alone. The
    head's batch norm takes the features' mean and variance (so it standardizes them), and its last linear layer
    takes the regression's weights. Fine-tuning then starts from a head that already separates the classes, so the
    first updates to the body follow a useful gradient instead of a random head's, which distorts the pretrained
    features less. Needs a head of pooling, batch norm, dropout and a linear layer (`ClassifierHead`).

    `size`: the pixels the features are computed at, when the first epoch trains at another than the data's
    (progressive resizing). Put it before `WeightAverage`, whose average starts from the weights a fit begins with.
    """

    C_GRID = (0.01, 0.1, 1.0)

    def __init__(self, size: int | None = None):
        self.size, self.done, self.report = size, False, {}

    def on_fit_begin(self, learner):
        if self.done:
            return
        head = getattr(learner.model, "head", None)
        if not (isinstance(head, nn.Sequential) and len(head) == 4 and isinstance(head[1], nn.BatchNorm1d)
                and isinstance(head[3], nn.Linear)):
            raise LearnerError("A head started from a linear probe needs a classifier's pooled head (single- or "
                               "multi-label); this model has none.")
        size = learner.data.size
        if self.size is not None:
            learner.data.set_size(self.size)
        try:
            features, targets = _pooled_features(learner, head[0])
        finally:
            learner.data.set_size(size)
        mean, var = features.mean(0), features.var(0)
        standard = (features - mean) / np.sqrt(var + head[1].eps)
        weight, bias, self.report = _fit_probe(standard, targets, head[3].out_features, self.C_GRID)
        with torch.no_grad():
            head[1].running_mean.copy_(torch.from_numpy(mean))
            head[1].running_var.copy_(torch.from_numpy(var))
            head[1].weight.fill_(1.0)
            head[1].bias.zero_()
            head[3].weight.copy_(torch.from_numpy(weight))
            head[3].bias.copy_(torch.from_numpy(bias))
        self.done = True
        logger.info("head started from a linear probe: %s", self.report)


@torch.no_grad()
def _pooled_features(learner, pool) -> tuple[np.ndarray, np.ndarray]:
    """The body's pooled features and the targets of every training batch (body in eval mode)."""
    was_training, features, targets = learner.model.training, [], []
    learner.model.eval()
    try:
        for x, y in learner.data.train:
            x = x.to(learner.device, memory_format=torch.channels_last)
            features.append(pool(learner.model.body(x)).float().cpu().numpy())
            targets.append(y.cpu().numpy())
    finally:
        learner.model.train(was_training)
    return np.concatenate(features).astype(np.float32), np.concatenate(targets)


def _fit_probe(x: np.ndarray, y: np.ndarray, n_out: int, c_grid) -> tuple[np.ndarray, np.ndarray, dict]:
    """(weight (n_out, features), bias (n_out,), what was chosen) of a logistic regression on standardized `x`:
    softmax over `n_out` classes for integer targets, one per tag for multi-hot ones; C by 3-fold CV."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    def best_c(x, y) -> float:
        folds = min(3, int(np.bincount(y)[np.unique(y)].min()))       # the rarest class present
        if folds < 2:
            return c_grid[len(c_grid) // 2]
        scores = [cross_val_score(LogisticRegression(C=c, max_iter=300), x, y, cv=folds).mean() for c in c_grid]
        return c_grid[int(np.argmax(scores))]

    weight, bias = np.zeros((n_out, x.shape[1]), np.float32), np.zeros(n_out, np.float32)
    if y.ndim == 1:                                   # one label per image: a softmax over the classes
        y = y.astype(int)
        present = np.unique(y)
        if len(present) == 1:                         # one class only: nothing to separate, it is the likely one
            bias[np.setdiff1d(np.arange(n_out), present)] = -10.0
            return weight, bias, {"C": None, "train_accuracy": 1.0}
        c = best_c(x, y)
        fitted = LogisticRegression(C=c, max_iter=500).fit(x, y)
        coef, intercept = fitted.coef_, fitted.intercept_
        if len(present) == 2:                         # scikit-learn gives one row for two classes
            coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        weight[present], bias[present] = coef, intercept
        bias[np.setdiff1d(np.arange(n_out), present)] = intercept.min() - 10    # classes never seen: unlikely
        return weight, bias, {"C": c, "train_accuracy": round(float(fitted.score(x, y)), 4)}
    chosen = {}
    for tag in range(y.shape[1]):                     # multi-hot: one logistic regression per tag
        column = (y[:, tag] > 0.5).astype(int)
        share = float(np.clip(column.mean(), 1e-3, 1 - 1e-3))
        if column.min() == column.max():              # always or never present: its frequency's logit
            bias[tag] = np.log(share / (1 - share))
            continue
        chosen[tag] = c = best_c(x, column)
        fitted = LogisticRegression(C=c, max_iter=500).fit(x, column)
        weight[tag], bias[tag] = fitted.coef_[0], fitted.intercept_[0]
    return weight, bias, {"C": chosen}


class Mix(Callback):
    """Train on mixed images: `"mixup"` blends each image with another of the batch (weight lam ~ Beta(alpha,
    alpha), the larger share kept on the first), `"cutmix"` pastes a box of another image over it (the box's share
    of the area is 1 - lam). The loss is the mix of the two targets' losses, `lam * L(y) + (1 - lam) * L(y')`; a
    segmentation mask under cutmix takes the pasted box of the other mask instead, so each pixel keeps its own
    class. A multi-label image under cutmix counts the other image's tags by the box's area, an approximation: a
    tag may lie wholly inside or outside the box. Points (regression) are refused: a blend has no single set.

    Batch norm, handled: mixed images have other statistics than the clean ones the model predicts on, so the
    last `clean_epochs` of `epochs` (counted over every fit, as `ProgressiveResize`) train unmixed, and when a fit
    ends the running statistics of every batch norm that was training are measured again on up to
    `recalibrate_batches` clean training batches, with the weights the model keeps (after `WeightAverage`, whose
    average also averaged the statistics of mixed batches). Put it after `WeightAverage` and `ProgressiveResize`.
    """

    KINDS = ("mixup", "cutmix")

    def __init__(self, kind: str, alpha: float, epochs: int, clean_epochs: int = 1, recalibrate_batches: int = 100,
                 seed: int = 0):
        if kind not in self.KINDS:
            raise LearnerError(f"The mix must be one of {', '.join(self.KINDS)}, not {kind!r}.")
        if not alpha > 0:
            raise LearnerError(f"The {kind} alpha must be above 0 (e.g. 0.4 for mixup, 1.0 for cutmix), not {alpha}.")
        if not 0 <= clean_epochs < epochs:
            raise LearnerError(f"{kind} trains its last {clean_epochs} epoch(s) unmixed, which leaves none mixed "
                               f"of {epochs}: train more epochs.")
        self.kind, self.alpha, self.mixed_epochs = kind, float(alpha), epochs - clean_epochs
        self.recalibrate_batches, self.rng, self.seen = recalibrate_batches, np.random.default_rng(seed), 0

    def on_fit_begin(self, learner):
        from .tasks import RegressTask
        if isinstance(learner.task, RegressTask):
            raise LearnerError(f"{self.kind} blends two images, and a blend has no single set of points or values "
                               "to regress: train without it.")

    def on_epoch_begin(self, learner):
        learner.mixer = self if self.seen < self.mixed_epochs else None
        self.seen += 1

    def on_fit_end(self, learner):
        learner.mixer = None
        recalibrate_batch_norm(learner, self.recalibrate_batches)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor]]]:
        """(the mixed batch, [(weight, targets), ...] whose weighted losses add up to the batch's loss)."""
        lam = float(self.rng.beta(self.alpha, self.alpha))
        other = torch.from_numpy(self.rng.permutation(len(x))).to(x.device)
        if self.kind == "mixup":
            lam = max(lam, 1 - lam)
            return lam * x + (1 - lam) * x[other], [(lam, y), (1 - lam, y[other])]
        height, width = x.shape[-2:]
        box_h, box_w = round(height * np.sqrt(1 - lam)), round(width * np.sqrt(1 - lam))
        top, left = int(self.rng.integers(0, height - box_h + 1)), int(self.rng.integers(0, width - box_w + 1))
        box = (..., slice(top, top + box_h), slice(left, left + box_w))
        x = x.clone()
        x[box] = x[other][box]
        if y.ndim >= 3:                               # masks (N, H, W): the other mask's box, each pixel its own
            y = y.clone()
            y[box] = y[other][box]
            return x, [(1.0, y)]
        lam = 1 - box_h * box_w / (height * width)
        return x, [(lam, y), (1 - lam, y[other])]


@torch.no_grad()
def recalibrate_batch_norm(learner, max_batches: int = 100) -> int:
    """Measure again the running statistics of every batch norm with trainable weights (frozen ones keep theirs),
    as the plain average over up to `max_batches` training batches, unmixed, in training mode with the rest of
    the model in eval mode; returns the batches used."""
    norms = [m for m in learner.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and any(p.requires_grad for p in m.parameters(recurse=False))]
    if not norms:
        return 0
    was_training, momenta, used = learner.model.training, [m.momentum for m in norms], 0
    learner.model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                             # a cumulative average over the batches seen
        m.train()
    try:
        for x, _ in learner.data.train:
            learner.model(x.to(learner.device, memory_format=torch.channels_last))
            used += 1
            if used >= max_batches:
                break
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        learner.model.train(was_training)
    logger.info("batch norm re-measured on %d clean training batches", used)
    return used
