"""What a trained model got wrong and what it looked at: top losses, confusion, Grad-CAM.

Grad-CAM weighs a layer's feature maps by the gradient of a target (a class score, the
score of a class over a region of a segmentation, a predicted coordinate) and keeps the
positive part: where in the image the evidence for that target was. Targets are tiny
callables (`ClassTarget`, `RegionTarget`, `CoordinateTarget`); the hooks live in a context
manager and are always removed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
