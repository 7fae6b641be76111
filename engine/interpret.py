"""What a trained model got wrong and what it looked at: top losses, confusion, Grad-CAM.

Grad-CAM weighs a layer's feature maps by the gradient of a target (a class score, the
score of a class over a region of a segmentation, a predicted coordinate) and keeps the
positive part: where in the image the evidence for that target was. Targets are tiny
callables (`ClassTarget`, `RegionTarget`, `CoordinateTarget`); the hooks live in a context
manager and are always removed.

For a person: `explain` (heatmaps of a batch, the task choosing what to explain), `picture`
(one prediction drawn on its image), `Interpretation` (a learner's validation set: top losses,
confusion, pictures) and `explain_image` / `explain_images` (an exported model on images).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import denormalize
from .errors import InterpretError  # noqa: F401  (raised here; importable from here)


# -- targets: model output -> one scalar per image -------------------------------------------
@dataclass(frozen=True)
class ClassTarget:
    """The logit of class `index` (classifiers, single- or multi-label)."""

    index: int

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[:, self.index]


@dataclass(frozen=True)
class RegionTarget:
    """A segmentation class's logits summed over a region (`mask`: (H, W) bool; None = everywhere)."""

    index: int
    mask: np.ndarray | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        scores = output[:, self.index]
        if self.mask is not None:
            scores = scores * torch.as_tensor(self.mask, dtype=scores.dtype, device=scores.device)
        return scores.flatten(1).sum(1)


@dataclass(frozen=True)
class CoordinateTarget:
    """One predicted regression output (e.g. the x of point 0 is index 0, its y index 1)."""

    index: int

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[:, self.index]


class GradCAM:
    """`with GradCAM(model, "layer4") as cam: heat = cam(x, ClassTarget(3))` -> (B, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, layer: str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise InterpretError(f"{type(model).__name__} has no layer {layer!r}; use one of its module names, "
                                 f"e.g. {', '.join(list(modules)[1:6])}")
        self.model = model
        self._activation: torch.Tensor | None = None
        self._handle = modules[layer].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        if output.requires_grad:  # forward passes without gradients (inference) just go through
            output.retain_grad()
            self._activation = output

    def __call__(self, images: torch.Tensor, target: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x = images.detach().requires_grad_(True)  # gradients flow even through a frozen body
                output = self.model(x)
                self.model.zero_grad(set_to_none=True)
                target(output).sum().backward()
            activation = self._activation
            weights = activation.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * activation).sum(1, keepdim=True)).detach()
        finally:
            self.model.train(was_training)
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
        return cam / peak

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> GradCAM:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An RGB uint8 image with a heatmap (H, W in [0, 1]) laid over it in red-to-yellow."""
    heat = np.clip(heat, 0, 1)
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1) * 255
    mixed = image.astype(np.float32) * (1 - alpha * heat[..., None]) + colour * alpha * heat[..., None]
    return mixed.clip(0, 255).astype(np.uint8)


# -- what went wrong ---------------------------------------------------------------------------
def top_losses(losses: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the k largest per-item losses, largest first."""
    losses = np.asarray(losses)
    k = min(k, len(losses))
    top = np.argpartition(-losses, k - 1)[:k] if k else np.array([], dtype=np.int64)
    return top[np.argsort(-losses[top], kind="stable")]


def confusion_matrix(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = given label, column = prediction."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets), np.asarray(predicted)), 1)
    return matrix


def most_confused(matrix: np.ndarray, classes: list[str], min_count: int = 1) -> list[tuple[str, str, int]]:
    """(given, predicted, count) pairs off the diagonal, most frequent first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.nonzero(off >= min_count))]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))


# -- what the model looked at, for a person --------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


MIN_CAM_SIDE = 4  # the default layer's map is at least this many cells on a side, where the encoder has one


def cam_layer(model: nn.Module, size: int | None = None) -> str:
    """The layer Grad-CAM uses by default for a model of `engine.models.create_model`: its encoder's last block.

    For a classifier or regressor that is the last block of the body the head pools; for a U-Net the deepest
    block of its encoder. A U-Net's last decoder block would give a sharper map, but only a 1x1 classifier
    follows it, so its Grad-CAM is little more than the predicted mask again; the deepest encoder block
    shows which context the evidence for the region came from.

    Given the `size` of (square) input images, it is the deepest block whose map still has `MIN_CAM_SIDE`
    cells on a side: at 32 px the last block of a 32x-downsampling encoder is one cell, a map that says nothing.
    """
    body = getattr(model, "body", None)
    blocks = [name for name, _ in body.named_children()] if isinstance(body, nn.Module) else []
    if not blocks:
        raise InterpretError(f"{type(model).__name__} has no `body` of blocks, so there is no default Grad-CAM "
                             "layer; pass layer= one of its module names (e.g. the last convolution's).")
    if size is not None:
        sides = _block_sides(body, size)
        blocks = [name for name, side in zip(blocks, sides) if side >= MIN_CAM_SIDE] or blocks[:1]
    return f"body.{blocks[-1]}"


@torch.no_grad()
def _block_sides(body: nn.Module, size: int) -> list[int]:
    """The smaller side of each child's output for a `size` x `size` image (one pass on zeros, mode restored)."""
    was_training, sides = body.training, []
    body.eval()
    try:
        x = torch.zeros(1, 3, size, size, device=_device(body))
        for child in body.children():
            x = child(x)
            sides.append(min(x.shape[-2:]))
    finally:
        body.train(was_training)
    return sides


@dataclass(frozen=True)
class _Predicted:
    """Each image's own default target (`task.cam_target` of its output), chosen in the same forward pass."""

    task: object

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        rows = output.detach().float()
        return torch.cat([self.task.cam_target(row)(output[i:i + 1]) for i, row in enumerate(rows)])


def explain(model: nn.Module, task, x: torch.Tensor, target=None, *, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heatmaps, (B, H, W) float32 in [0, 1], of a preprocessed batch `x` on the model's device.

    `target=None` explains what the model predicted, as the task chooses (`Task.cam_target`): the predicted
    class, the most common predicted class over its region, the first coordinate. `layer=None` is
    `cam_layer(model, size)` for the batch's image size. The model's training mode is restored and no hook
    is left on it.
    """
    with GradCAM(model, layer or cam_layer(model, min(x.shape[-2:]))) as cam:
        heat = cam(x, _Predicted(task) if target is None else target)
    return heat.cpu().numpy().astype(np.float32)


def picture(image: np.ndarray, task, output: torch.Tensor, labels: list | None, *, truth=None,
            heat: np.ndarray | None = None) -> np.ndarray:
    """One prediction for a person, HxWx3 uint8: `image` (HxWx3 uint8) with the task's drawing of one activated
    `output` at the image's size (a mask blended in, points in red and `truth`'s in green, a class as is) and,
    given `heat` (H, W), the Grad-CAM overlay on top."""
    drawn = task.draw(np.asarray(image, np.uint8), output, labels, truth=truth)
    return drawn if heat is None else overlay(drawn, np.asarray(heat))


def explain_image(predictor, image, *, heatmap: bool = True) -> tuple[np.ndarray, dict]:
    """An exported model (`engine.learner.Predictor`) on one PIL image: the picture of its prediction at
    `predictor.size` as the model saw it (Grad-CAM overlaid with `heatmap`), and the decoded result as
    `predictor.predict` gives it (label and probabilities, a mask at the image's size, points in its pixels)."""
    return explain_images(predictor, [image], heatmap=heatmap)[0]


def explain_images(predictor, images, *, heatmap: bool = True) -> list[tuple[np.ndarray, dict]]:
    """`explain_image` for several PIL images at once: one inference and one Grad-CAM pass, results in order."""
    task, labels = predictor.task, predictor.labels
    x = torch.cat([predictor.preprocess(image) for image in images])
    outputs = task.activation(predictor.raw_outputs(x))
    heat = explain(predictor.model, task, x.to(_device(predictor.model))) if heatmap else [None] * len(images)
    return [(picture(denormalize(x[i], predictor.mean, predictor.std), task, outputs[i], labels, heat=heat[i]),
             task.decode(outputs[i], image.size, labels)) for i, image in enumerate(images)]


# -- a learner's validation set, interpreted -------------------------------------------------
@torch.no_grad()
def _predict_all(model: nn.Module, task, loader, device: torch.device):
    """Activated outputs, targets and per-item losses (of the raw outputs) for every row of `loader`."""
    outputs, targets, losses = [], [], []
    was_training = model.training
    model.eval()
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                raw = model(x).float()
            losses.append(task.item_losses(raw, y).float().cpu())
            outputs.append(task.activation(raw).cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(targets), torch.cat(losses)


def _text(summary: dict) -> str:
    """A task's `summary` of a result as one line: a label, tags, the largest classes of a mask, rounded points."""
    parts = []
    for value in summary.values():
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            parts.append(str(value))
        elif isinstance(value, dict):  # class -> fraction of the mask
            parts += [str(name) for name in sorted(value, key=value.get, reverse=True)[:3]]
        elif isinstance(value, (list, tuple)):
            parts += [v if isinstance(v, str) else str(np.round(v, 1).tolist()) for v in value]
    return " ".join(parts)


class Interpretation:
    """What a trained model got wrong on a loader (by default the validation set), computed once.

    `outputs` are activated (probabilities, masks, coordinates), `targets` in the batch layout, `losses` one per
    row (NaN where a task has none: a segmentation image with only void pixels), `items` the rows' image paths.
    """

    def __init__(self, learner, loader, outputs: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor):
        self.learner, self.loader, self.task = learner, loader, learner.task
        self.outputs, self.targets, self.losses = outputs, targets, losses
        data = learner.data
        self.labels = data.classes or data.codes
        self.items = [str(item) for item in getattr(loader.dataset, "items", None) or range(len(losses))]

    @classmethod
    def from_learner(cls, learner, loader=None) -> Interpretation:
        """Predict every row of `loader` (default: the learner's validation loader) once, in order."""
        loader = learner.data.valid if loader is None else loader
        if not isinstance(getattr(loader, "sampler", None), torch.utils.data.SequentialSampler):
            raise InterpretError("The loader shuffles its rows, so a row could not be found again for its picture. "
                                 "Pass a loader built with shuffle=False (e.g. learner.data.valid).")
        return cls(learner, loader, *_predict_all(learner.model, learner.task, loader, learner.device))

    def _row(self, row: int) -> int:
        if not 0 <= row < len(self.losses):
            raise InterpretError(f"row={row} is outside 0..{len(self.losses) - 1} (the rows of this loader).")
        return int(row)

    def _describe(self, value: torch.Tensor) -> str:
        size = self.learner.data.size
        return _text(self.task.summary(self.task.decode(value, (size, size), self.labels)))

    def _given(self, row: int) -> torch.Tensor:
        """Row `row`'s target in the layout of an activated output (a class index as its one-hot probabilities)."""
        target, output = self.targets[row], self.outputs[row]
        return F.one_hot(target, len(output)).float() if target.ndim < output.ndim else target

    def top_losses(self, k: int = 16):
        """The `k` rows with the largest losses, largest first, as a pandas DataFrame: row (in the loader), item,
        given, predicted (as text: a class, tags, a mask's largest classes, points), loss and probability (of
        the predicted class for classifiers, NaN otherwise). Rows without a loss come last."""
        import pandas as pd
        rows = top_losses(self.losses.numpy(), k)
        scored = self.task.per_label_scores  # one probability per label: a classifier
        return pd.DataFrame({
            "row": rows.astype(np.int64),
            "item": [self.items[row] for row in rows],
            "given": [self._describe(self._given(row)) for row in rows],
            "predicted": [self._describe(self.outputs[row]) for row in rows],
            "loss": self.losses.numpy()[rows].astype(np.float64),
            "probability": [float(self.outputs[row].max()) if scored else math.nan for row in rows],
        }, columns=["row", "item", "given", "predicted", "loss", "probability"])

    def confusion(self) -> np.ndarray | None:
        """(classes, classes) counts, row = given class, column = predicted; None unless single-label classes."""
        if not (self.targets.ndim == 1 and not self.targets.is_floating_point() and self.outputs.ndim == 2):
            return None
        return confusion_matrix(self.targets.numpy(), self.outputs.argmax(1).numpy(), self.outputs.shape[1])

    def class_names(self) -> list[str]:
        """The names of the confusion matrix's rows and columns."""
        return [str(name) for name in self.labels] if self.labels else [str(i) for i in range(self.outputs.shape[1])]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(given, predicted, count) off the diagonal of `confusion()`, most frequent first; [] without one."""
        matrix = self.confusion()
        return [] if matrix is None else most_confused(matrix, self.class_names(), min_count)

    def picture(self, row: int, heatmap: bool = False) -> np.ndarray:
        """Row `row`'s image as the model saw it (HxWx3 uint8 at the data size) with its prediction drawn (a mask,
        points over the true ones) and, with `heatmap`, the Grad-CAM overlay of `explain`."""
        row = self._row(row)
        x = self.loader.dataset[row][0]
        data, model = self.learner.data, self.learner.model
        heat = explain(model, self.task, x[None].to(_device(model)))[0] if heatmap else None
        return picture(denormalize(x, data.mean, data.std), self.task, self.outputs[row], self.labels,
                       truth=self.targets[row], heat=heat)  # the module's `picture`, not this method
