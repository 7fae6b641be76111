"""One training loop for every task: classify, multi-label, segment (U-Net) and point regression.

A `Task` object supplies what differs (loss, activation, metrics, how to decode a prediction);
the `Learner` supplies what is shared: AdamW with `OneCycleLR`, `lr_find`, freeze/unfreeze,
discriminative learning rates, callbacks, validation, save/load and export.
"""
from __future__ import annotations

import copy
import logging
import math
from itertools import cycle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import metrics
from .models import create_model
from .errors import LearnerError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "labeler-model/1"


# --- tasks -----------------------------------------------------------------------------

class Task:
    """What one kind of problem needs from the shared loop. Subclasses override the methods."""

    name = ""

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def activation(self, pred: torch.Tensor) -> torch.Tensor:
        """Model output -> what predictions are (probabilities, masks, coordinates)."""
        return pred

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Scores over the whole validation set; `outputs` are `activation(pred)` for every row."""
        return {}

    def decode(self, output: torch.Tensor, image_size: tuple[int, int], labels: list | None) -> dict:
        """One image's activated output -> a result for a person (label, mask, points in pixels)."""
        raise NotImplementedError

    def config(self) -> dict:
        """Keyword arguments that rebuild this task (saved in exported files)."""
        return {}

    def baseline(self, train_targets: torch.Tensor, valid_targets: torch.Tensor) -> dict[str, float] | None:
        """The metrics of a predictor that ignores the image, fitted on the training targets; None: no baseline."""
        return None

    def unflip(self, pred: torch.Tensor) -> torch.Tensor | None:
        """The model's output on a mirrored image, mapped back to the original; None: no flip TTA."""
        return pred

    @property
    def can_unflip(self) -> bool:
        """Whether flip test-time augmentation applies (`unflip` maps a mirrored output back)."""
        return True


class ClassifyTask(Task):
    """Cross-entropy, optionally with label smoothing (the target keeps 1 - eps, the rest is spread)."""

    name = "classify"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise LearnerError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = label_smoothing

    def loss(self, pred, target):
        return F.cross_entropy(pred, target, label_smoothing=self.label_smoothing)

    def activation(self, pred):
        return pred.softmax(dim=1)

    def baseline(self, train_targets, valid_targets):
        """Always the most common training class."""
        counts = torch.bincount(train_targets.long())
        outputs = F.one_hot(counts.argmax().expand(len(valid_targets)), len(counts)).float()
        return self.metrics(outputs, valid_targets)

    def metrics(self, outputs, targets):
        return {"accuracy": metrics.accuracy(outputs, targets), "error_rate": metrics.error_rate(outputs, targets)}

    def decode(self, output, image_size, labels):
        probs = output.tolist()
        best = int(np.argmax(probs))
        return {"label": labels[best] if labels else best,
                "probabilities": dict(zip(labels or range(len(probs)), probs))}

    def config(self):
        return {"label_smoothing": self.label_smoothing}


class MultiLabelTask(Task):
    """Independent sigmoid per tag; the decision threshold is tuned on validation for F-beta."""

    name = "multilabel"

    def __init__(self, threshold: float = 0.5, beta: float = 2.0):
        self.threshold, self.beta = threshold, beta

    def loss(self, pred, target):
        return F.binary_cross_entropy_with_logits(pred, target.float())

    def activation(self, pred):
        return pred.sigmoid()

    def baseline(self, train_targets, valid_targets):
        """Every tag on every image (the all-positive predictor); its own threshold, this task's stays."""
        return MultiLabelTask(beta=self.beta).metrics(torch.ones_like(valid_targets.float()), valid_targets)

    def metrics(self, outputs, targets):
        self.threshold, fbeta = metrics.best_threshold(outputs, targets, self.beta)
        scores = {"accuracy": metrics.accuracy_multi(outputs, targets, self.threshold),
                  f"f{self.beta:g}": fbeta, "threshold": self.threshold}
        if (targets > 0.5).any():
            scores["mAP"] = metrics.mean_average_precision(outputs, targets)
        return scores

    def decode(self, output, image_size, labels):
        probs = output.tolist()
        names = labels or list(range(len(probs)))
        return {"labels": [name for name, p in zip(names, probs) if p > self.threshold],
                "probabilities": dict(zip(names, probs))}

    def config(self):
        return {"threshold": self.threshold, "beta": self.beta}


class SegmentTask(Task):
    """Per-pixel cross-entropy; void pixels count neither in the loss nor in the metrics."""

    name = "segment"

    def __init__(self, void_code: int | None = None, n_classes: int | None = None):
        self.void_code, self.n_classes = void_code, n_classes

    def loss(self, pred, target):
        return F.cross_entropy(pred, target, ignore_index=-100 if self.void_code is None else self.void_code)

    def activation(self, pred):
        # argmax rather than probabilities: whole validation sets of masks stay small
        return pred.argmax(dim=1)

    def unflip(self, pred):
        return pred.flip(-1)

    def metrics(self, outputs, targets):
        n_classes = self.n_classes or int(max(outputs.max(), targets.max())) + 1
        return {"pixel_accuracy": metrics.pixel_accuracy(outputs, targets, self.void_code),
                "mean_iou": metrics.mean_iou(outputs, targets, n_classes, self.void_code)}

    def decode(self, output, image_size, labels):
        width, height = image_size
        mask = F.interpolate(output[None, None].float(), size=(height, width), mode="nearest")[0, 0]
        return {"mask": mask.to(torch.int64).numpy(), "codes": labels}

    def config(self):
        return {"void_code": self.void_code, "n_classes": self.n_classes}


class RegressTask(Task):
    """Points as (x, y) pairs in [-1, 1]; metrics and predictions in pixels."""

    name = "regress"
    LOSSES: ClassVar[dict] = {"mse": F.mse_loss, "l1": F.l1_loss}

    def __init__(self, size: int = 224, loss: str = "mse", points: int = 0):
        if loss not in self.LOSSES:
            raise LearnerError(f"Unknown regression loss {loss!r}. Choose one of: {', '.join(self.LOSSES)}.")
        self.size, self.loss_name, self.points = size, loss, points

    def loss(self, pred, target):
        return self.LOSSES[self.loss_name](pred, target)

    def unflip(self, pred):
        """One point mirrors back by negating x; several points would also swap left and right (not known)."""
        if self.points != 1:
            return None
        return pred * torch.tensor([-1.0, 1.0], dtype=pred.dtype, device=pred.device)

    @property
    def can_unflip(self) -> bool:
        return self.points == 1

    def baseline(self, train_targets, valid_targets):
        """Always the training mean of every coordinate."""
        return self.metrics(train_targets.float().mean(0).expand(len(valid_targets), -1), valid_targets)

    def metrics(self, outputs, targets):
        return {"point_error_px": metrics.mean_point_error(outputs, targets, self.size),
                "point_error_rel": metrics.relative_point_error(outputs, targets, self.size)}

    def decode(self, output, image_size, labels):
        scale = torch.tensor(image_size, dtype=torch.float32)
        return {"points": ((output.reshape(-1, 2) + 1) / 2 * scale).numpy()}

    def config(self):
        return {"size": self.size, "loss": self.loss_name, "points": self.points}


TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassifyTask, MultiLabelTask, SegmentTask, RegressTask)}


def task_for(data, label_smoothing: float = 0.0, loss: str = "mse") -> Task:
    """The task object for a TaskData (by `data.task`), configured from its attributes.

    `label_smoothing` applies to single-label classifiers, `loss` ("mse" or "l1") to regression.
    """
    factories = {
        "classify": lambda: ClassifyTask(label_smoothing),
        "multilabel": lambda: MultiLabelTask(),
        "segment": lambda: SegmentTask(data.void_code, data.n_out),
        "regress": lambda: RegressTask(data.size, loss=loss, points=getattr(data, "points", 0)),
    }
    if data.task not in factories:
        raise LearnerError(f"Unknown task {data.task!r}. Choose one of: {', '.join(factories)}.")
    return factories[data.task]()


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
        self.mode = mode or ("min" if "loss" in monitor or "error" in monitor else "max")
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


class Learner:
    """Trains `model` on `data` (a TaskData) with the task chosen by `data.task` unless `task` is given."""

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

    def _train_batch(self, x, y) -> float:
        self._callback("on_train_batch_begin")
        x, y = _to_device(x, self.device), y.to(self.device)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = self.task.loss(self.model(x), y)
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
                self.last_metrics = {"epoch": self.epoch, "train_loss": float(np.mean(losses)), **self.validate()}
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
    def _outputs(self, loader, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Activated outputs and targets for every row of `loader`, and the mean loss.

        With `tta`, the raw outputs are averaged with those of the mirrored image (where the
        task can map a mirrored output back), before the activation.
        """
        outputs, targets, losses, sizes = [], [], [], []
        for x, y in loader:
            x, y = _to_device(x, self.device), y.to(self.device)
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                pred = self.model(x)
                if tta and (mirrored := self.task.unflip(self.model(x.flip(-1)))) is not None:
                    pred = (pred + mirrored) / 2
            losses.append(self.task.loss(pred.float(), y).item())
            sizes.append(len(x))
            outputs.append(self.task.activation(pred.float()).cpu())
            targets.append(y.cpu())
        return torch.cat(outputs), torch.cat(targets), float(np.average(losses, weights=sizes))

    def validate(self, loader=None, tta: bool = False) -> dict[str, float]:
        """Loss and the task's metrics on the validation set (or `loader`); the model's mode is restored.

        `tta=True` averages each prediction with the one for the mirrored image (test-time augmentation).
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

    def lr_find(self, start: float = 1e-7, end: float = 10, steps: int = 100):
        """Train with exponentially growing lr; returns (lrs, smoothed losses, suggestion). Weights are restored."""
        saved = copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())
        callbacks, self.callbacks, was_training = self.callbacks, [], self.model.training
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
            self.callbacks = callbacks
        self.lr_find_result = (lrs_tried, smoothed, steepest_lr(lrs_tried, smoothed))
        return self.lr_find_result

    def plot_lr_find(self, path) -> Path:
        """Save the last `lr_find` curve as an image (matplotlib, Agg backend)."""
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        lrs, losses, suggestion = self.lr_find_result
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(lrs, losses)
        axes.axvline(suggestion, color="red", linestyle="--", label=f"steepest: {suggestion:.2e}")
        axes.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)")
        axes.legend()
        figure.savefig(path)
        plt.close(figure)
        return Path(path)

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


class Predictor:
    """An exported model ready to predict on PIL images or image paths."""

    def __init__(self, model: nn.Module, task: Task, labels, size: int, mean, std):
        self.model, self.task, self.labels = model.eval(), task, labels
        self.size, self.mean, self.std = size, list(mean), list(std)

    @classmethod
    def from_learner(cls, learner: Learner) -> Predictor:
        data = learner.data
        return cls(learner.model, learner.task, data.classes or data.codes, data.size, data.mean, data.std)

    def _tensor(self, image) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF
        pixels = TF.to_dtype(TF.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
        pixels = TF.resize(pixels, [self.size, self.size], antialias=True)  # square, as the data block feeds it
        return TF.normalize(pixels, self.mean, self.std)[None]

    @torch.no_grad()
    def predict(self, image) -> dict:
        """Label and probabilities, tags, a mask at the image's size, or points in the image's pixels."""
        from PIL import Image
        image = image if isinstance(image, Image.Image) else Image.open(image)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.task.activation(self.model(self._tensor(image).to(device)))[0].cpu()
        finally:
            self.model.train(was_training)
        return self.task.decode(output, image.size, self.labels)


def load_exported(path, device="cpu") -> Predictor:
    """Rebuild an exported model (no pretrained weights needed) as a `Predictor`."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT:
        raise LearnerError(f"{path} is not a model exported by Learner.export (expected format {EXPORT_FORMAT}).")
    config = dict(state["model_config"])
    model = create_model(config.pop("task"), config.pop("backbone"), config.pop("n_out"), pretrained=False, **config)
    model.load_state_dict(state["state_dict"])
    task = TASKS[state["task"]](**state["task_config"])
    return Predictor(model.to(device), task, state["classes"] or state["codes"], state["size"], state["mean"], state["std"])
