"""One training loop for every task: classify, multi-label, segment (U-Net) and point regression.

A task object (`engine.tasks`) supplies what differs (loss, activation, metrics, how to decode a
prediction); the `Learner` supplies what is shared: AdamW with `OneCycleLR`, `lr_find`,
freeze/unfreeze, discriminative learning rates, the fine-tune recipe, callbacks, validation,
save/load and export.
"""
from __future__ import annotations

import copy
import inspect
import logging
import math
from itertools import cycle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import LearnerError  # noqa: F401  (raised here; importable from here)
from .metrics import lower_is_better
from .plots import LearnerPlots
from .predictor import EXPORT_FORMAT, Predictor, load_exported  # noqa: F401  (importable from here too)
from .tasks import TASKS, Task, get_task  # noqa: F401  (TASKS: the registry, importable from here too)
from .tta import averaged

logger = logging.getLogger(__name__)


# --- the task of a TaskData ----------------------------------------------------------

def task_for(data, **options) -> Task:
    """The registered task for a TaskData (by `data.task`), configured by its `from_data` from the data and `options`.

    `options` may be any registered task's (`label_smoothing` for classifiers, `loss` for regression): one call
    serves every task, and each task gets the options its `from_data` takes.
    """
    known = set().union(*map(_options_of, TASKS.values()))
    if unknown := sorted(set(options) - known):
        raise LearnerError(f"Unknown task option(s) {unknown}. The registered tasks take: {', '.join(sorted(known))}.")
    task = get_task(data.task)
    return task.from_data(data, **{name: value for name, value in options.items() if name in _options_of(task)})


def _options_of(task: type[Task]) -> set[str]:
    """The keyword-only parameters of a task's `from_data`: the options it is configured by."""
    parameters = inspect.signature(task.from_data).parameters.values()
    return {parameter.name for parameter in parameters if parameter.kind is parameter.KEYWORD_ONLY}


# --- callbacks -------------------------------------------------------------------------

class Callback:
    """Hooks into the loop: `on_<fit|epoch|train_batch|validate>_<begin|end>(learner)`; override any."""

    def on_fit_begin(self, learner): ...
    def on_fit_end(self, learner): ...
    def on_epoch_begin(self, learner): ...
    def on_epoch_end(self, learner): ...
    def on_train_batch_begin(self, learner): ...
    def on_train_batch_end(self, learner): ...
    def on_validate_begin(self, learner): ...
    def on_validate_end(self, learner): ...


class _Monitor(Callback):
    """Tracks the best value of one entry of `learner.last_metrics` (lower is better for losses and errors)."""

    def __init__(self, monitor: str = "valid_loss", mode: str | None = None):
        self.monitor = monitor
        self.mode = mode or ("min" if lower_is_better(monitor) else "max")
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_fit_begin(self, learner):
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, learner) -> bool:
        if self.monitor not in learner.last_metrics:
            raise LearnerError(f"Cannot monitor {self.monitor!r}; the metrics are {sorted(learner.last_metrics)}.")
        value = learner.last_metrics[self.monitor]
        better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best = value
        return better


class EarlyStopping(_Monitor):
    """Stop training when `monitor` has not improved for `patience` epochs."""

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, mode: str | None = None):
        super().__init__(monitor, mode)
        self.patience, self.wait = patience, 0

    def on_epoch_end(self, learner):
        self.wait = 0 if self._improved(learner) else self.wait + 1
        if self.wait >= self.patience:
            logger.info("early stopping after epoch %d: %s did not improve for %d epochs",
                        learner.epoch, self.monitor, self.patience)
            learner.stop = True


class SaveBest(_Monitor):
    """Save the weights whenever `monitor` improves; load the best ones when fitting ends."""

    def __init__(self, path, monitor: str = "valid_loss", mode: str | None = None):
        super().__init__(monitor, mode)
        self.path = Path(path)

    def on_epoch_end(self, learner):
        if self._improved(learner):
            learner.save(self.path)

    def on_fit_end(self, learner):
        if self.path.exists():
            learner.load(self.path)


class ProgressCallback(Callback):
    """Reports progress to `report(dict)` (a CLI bar, the app): per batch a fraction, per epoch the metrics."""

    def __init__(self, report):
        self.report = report

    def on_train_batch_end(self, learner):
        self.report({"epoch": learner.epoch, "progress": learner.step / learner.total_steps, "loss": learner.loss})

    def on_epoch_end(self, learner):
        self.report({"epoch": learner.epoch, **learner.last_metrics})


# --- the learner -----------------------------------------------------------------------

def steepest_lr(lrs, losses) -> float:
    """The learning rate where the (smoothed) loss falls fastest against log(lr).

    The first tenth of the curve is skipped: the moving average is still warming up there.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs) < 3:
        raise LearnerError(f"lr_find recorded {len(lrs)} losses; at least 3 are needed. Use more steps or data.")
    skip = min(len(lrs) // 10, len(lrs) - 3)
    return float(lrs[skip + int(np.argmin(np.gradient(losses[skip:], np.log(lrs[skip:]))))])


class Learner(LearnerPlots):
    """Trains `model` on `data` (a TaskData) with the task chosen by `data.task` unless `task` is given.

    Plots and interpretation (`plot_lr_find`, `plot_losses`, `plot_confusion`, `plot_top_losses`, `interpret`)
    come from `engine.plots.LearnerPlots`.
    """

    def __init__(self, data, model: nn.Module, task: Task | None = None, wd: float = 0.01, callbacks=(), device=None):
        self.data, self.model, self.wd = data, model, wd
        self.task = task or task_for(data)
        self.callbacks = list(callbacks)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # channels-last memory: about 1.6x faster convolutions on CPU (mobilenet_v2 at 160 px), and on GPU
        self.model.to(self.device, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW([{"params": group} for group in model.layer_groups], lr=1e-3, weight_decay=wd)
        self.scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda")
        self.frozen, self.stop = False, False
        self.unlabeled = None  # engine.semi.SemiSupervised, set by use_unlabeled
        self.mixer = None      # engine.recipes.Mix while its epochs mix the training batches
        self.history: list[dict] = []
        self.last_metrics: dict[str, float] = {}
        self.epoch = self.step = self.total_steps = 0
        self.loss = math.nan

    def freeze(self) -> None:
        """Train only the last layer group (head or decoder); the body's batch norms stop updating too."""
        self._set_trainable(len(self.model.layer_groups) - 1)

    def unfreeze(self) -> None:
        self._set_trainable(0)

    def _set_trainable(self, first_group: int) -> None:
        for index, group in enumerate(self.model.layer_groups):
            for param in group:
                param.requires_grad_(index >= first_group)
        self.frozen = first_group > 0

    def _train_mode(self) -> None:
        self.model.train()
        for module in self.model.modules():  # a frozen batch norm keeps its running statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()

    def group_lrs(self, lr) -> list[float]:
        """One lr per layer group: a number for all, or `slice(lo, hi)` spread geometrically from lo to hi."""
        n_groups = len(self.opt.param_groups)
        if not isinstance(lr, slice):
            return [float(lr)] * n_groups
        if lr.start is None or lr.stop is None or not 0 < lr.start <= lr.stop:
            raise LearnerError(f"A learning-rate slice needs 0 < start <= stop, got {lr}; e.g. slice(1e-5, 1e-3).")
        return list(np.geomspace(lr.start, lr.stop, n_groups))

    def _callback(self, event: str) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self)

    def use_unlabeled(self, items, *, threshold: float = 0.95, ratio: int = 2, weight: float = 1.0,
                      folder=None) -> None:
        """Learn from unlabeled images too (`engine.semi`, FixMatch-style): each training step adds `ratio`
        unlabeled images per labeled one, trained towards the weak view's pseudo-label where it is at least
        `threshold` confident, with `weight` beside the labeled loss. `items` are paths under `folder` (the
        training images' folder by default); None turns it off. Each epoch's metrics gain `pseudo_labeled`,
        the share of pseudo-labels confident enough to be used."""
        from .semi import SemiSupervised
        self.unlabeled = None if items is None else SemiSupervised(
            self, items, threshold=threshold, ratio=ratio, weight=weight, folder=folder)

    def _forward_loss(self, x, y) -> torch.Tensor:
        """The loss of one labeled batch (mixed by `mixer`), plus the unlabeled images' consistency loss when they
        are used."""
        x, targets = self.mixer.mix(x, y) if self.mixer is not None else (x, [(1.0, y)])
        if self.unlabeled is None:
            pred = self.model(x)
            return sum(weight * self.task.loss(pred, target) for weight, target in targets)
        weak, strong = (_to_device(t, self.device) for t in self.unlabeled.next_batch())
        pred, weak_pred, strong_pred = self.model(torch.cat([x, weak, strong])).split([len(x), len(weak), len(strong)])
        return (sum(weight * self.task.loss(pred, target) for weight, target in targets)
                + self.unlabeled.consistency(weak_pred, strong_pred))

    def _train_batch(self, x, y) -> float:
        self._callback("on_train_batch_begin")
        x, y = _to_device(x, self.device), y.to(self.device)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = self._forward_loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.loss = loss.item()
        self._callback("on_train_batch_end")
        return self.loss

    def fit_one_cycle(self, epochs: int, lr_max=1e-3, pct_start: float = 0.25) -> list[dict]:
        """Train `epochs` epochs under the one-cycle policy (lr and AdamW beta1 cycled); returns the history."""
        self.total_steps, self.step, self.stop = epochs * len(self.data.train), 0, False
        if self.total_steps < 2:
            raise LearnerError(f"One cycle needs at least 2 steps; got {epochs} epochs of {len(self.data.train)} "
                               "batches. Train more epochs or label more images.")
        # OneCycleLR divides by zero when a phase is shorter than one step (short runs on tiny data)
        pct_start = min(max(pct_start, 1.5 / self.total_steps), 1 - 0.5 / self.total_steps)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=self.group_lrs(lr_max), total_steps=self.total_steps, pct_start=pct_start)
        self._callback("on_fit_begin")
        try:
            for self.epoch in range(epochs):
                self._callback("on_epoch_begin")
                self._train_mode()
                losses = []
                for x, y in self.data.train:
                    losses.append(self._train_batch(x, y))
                    scheduler.step()
                    self.step += 1
                    if self.stop:  # a callback asked to stop now: this epoch ends after the batch
                        break
                self.last_metrics = {"epoch": self.epoch, "train_loss": float(np.mean(losses)), **self.validate(),
                                     **(self.unlabeled.epoch_report() if self.unlabeled is not None else {})}
                self.history.append(self.last_metrics)
                logger.info("epoch %d: %s", self.epoch, self.last_metrics)
                self._callback("on_epoch_end")
                if self.stop:
                    break
        finally:
            self.model.eval()
        self._callback("on_fit_end")
        return self.history

    @torch.no_grad()
    def _outputs(self, loader, tta: bool | str = False) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Activated outputs and targets for every row of `loader`, and the mean loss.

        With `tta` (True or "flips", "zoom": `engine.tta`), the raw outputs are averaged over views of the
        image (the mirrored one where the task can map its output back), before the activation.
        """
        outputs, targets, losses, sizes = [], [], [], []
        for x, y in loader:
            x, y = _to_device(x, self.device), y.to(self.device)
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                pred = averaged(self.model, x, self.task, tta)
            losses.append(self.task.loss(pred.float(), y).item())
            sizes.append(len(x))
            outputs.append(self.task.activation(pred.float()).cpu())
            targets.append(y.cpu())
        return torch.cat(outputs), torch.cat(targets), float(np.average(losses, weights=sizes))

    def validate(self, loader=None, tta: bool | str = False) -> dict[str, float]:
        """Loss and the task's metrics on the validation set (or `loader`); the model's mode is restored.

        `tta=True` averages each prediction with the one for the mirrored image (test-time augmentation); "zoom"
        adds a zoomed centre crop and its mirror (`engine.tta`).
        """
        self._callback("on_validate_begin")
        was_training = self.model.training
        self.model.eval()
        try:
            outputs, targets, loss = self._outputs(loader or self.data.valid, tta)
        finally:
            self.model.train(was_training)
        result = {"valid_loss": loss, **self.task.metrics(outputs, targets)}
        self._callback("on_validate_end")
        return result

    def baseline(self) -> dict[str, float] | None:
        """Validation metrics of the task's image-blind predictor (most common class, every tag, mean point).

        A trained model's metrics mean something only beside these. None for segmentation.
        """
        targets = [_split_targets(loader.dataset) for loader in (self.data.train, self.data.valid)]
        if any(t is None or not len(t) for t in targets):
            return None
        return self.task.baseline(*targets)

    def fine_tune(self, epochs: int, lr: float | None = None, freeze_epochs: int = 1, pct_start: float = 0.25) -> float:
        """The transfer-learning recipe: one cycle of `freeze_epochs` epochs training the head alone at `lr`, then
        one of `epochs` epochs training everything at slice(lr / 200, lr / 2), so early layers change least
        (slice(lr / 100, lr) without a frozen stage).

        `lr=None` takes `suggest_lr()`. Returns the head's peak rate of the second stage (`lr / 2` after a frozen one).
        """
        lr = self.suggest_lr() if lr is None else float(lr)
        if freeze_epochs:
            self.freeze()
            self.fit_one_cycle(freeze_epochs, lr, pct_start)
            self.unfreeze()
            lr /= 2
        if epochs and not self.stop:
            self.fit_one_cycle(epochs, slice(lr / 100, lr), pct_start)
        return lr

    def suggest_lr(self, bounds: tuple[float, float] = (1e-4, 1e-2)) -> float:
        """`lr_find`'s suggestion (at most 100 steps, about 4 passes over small data), clamped to `bounds`:
        a guard against a noisy curve on little data."""
        _, _, suggestion = self.lr_find(steps=min(100, max(10, 4 * len(self.data.train))))
        low, high = bounds
        return float(min(max(suggestion, low), high))

    def lr_find(self, start: float = 1e-7, end: float = 10, steps: int = 100):
        """Train with exponentially growing lr; returns (lrs, smoothed losses, suggestion). Weights are restored."""
        saved = copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())
        callbacks, self.callbacks, was_training = self.callbacks, [], self.model.training
        unlabeled, self.unlabeled = self.unlabeled, None  # the curve is the labeled loss's
        lrs_tried, smoothed, average, best = [], [], 0.0, math.inf
        self._train_mode()
        try:
            for step, (lr, (x, y)) in enumerate(zip(np.geomspace(start, end, steps), cycle(self.data.train))):
                for group in self.opt.param_groups:
                    group["lr"] = lr
                loss = self._train_batch(x, y)
                average = 0.98 * average + 0.02 * loss
                value = average / (1 - 0.98 ** (step + 1))  # debiased exponential moving average
                if not math.isfinite(value) or value > 4 * best:
                    break
                best = min(best, value)
                lrs_tried.append(float(lr))
                smoothed.append(value)
        finally:
            self.model.load_state_dict(saved[0])
            self.opt.load_state_dict(saved[1])
            self.model.train(was_training)
            self.callbacks, self.unlabeled = callbacks, unlabeled
        self.lr_find_result = (lrs_tried, smoothed, steepest_lr(lrs_tried, smoothed))
        return self.lr_find_result

    def save(self, path) -> None:
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict()}, path)

    def load(self, path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def export(self, path) -> Path:
        """Save everything `load_exported` needs to predict on new images, in one file."""
        data = self.data
        torch.save({
            "format": EXPORT_FORMAT, "model_config": dict(self.model.config),
            "task": self.task.name, "task_config": self.task.config(),
            "classes": data.classes, "codes": data.codes, "size": data.size,
            "mean": list(data.mean), "std": list(data.std),
            "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()},
        }, path)
        return Path(path)

    def predict(self, image) -> dict:
        return Predictor.from_learner(self).predict(image)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device`; image batches in the channels-last layout the model uses."""
    return x.to(device, memory_format=torch.channels_last) if x.ndim == 4 else x.to(device)


def _split_targets(dataset) -> torch.Tensor | None:
    if hasattr(dataset, "label_targets"):
        return dataset.label_targets()
    tensors = getattr(dataset, "tensors", None)  # a TensorDataset of (x, y)
    return tensors[1] if tensors is not None and len(tensors) > 1 else None

