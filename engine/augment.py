"""Data augmentation applied consistently to an image, its mask and its points. No UI imports.

Everything geometric goes through ``torchvision.transforms.v2`` on a sample dict
``{"image": tv_tensors.Image, "mask": tv_tensors.Mask, "points": tv_tensors.KeyPoints}``
(``mask`` and ``points`` optional), so one random draw moves all of them together.
Every pipeline first squashes the image to ``size`` x ``size`` (no cropping), like the
rest of the engine does.

The training pipeline follows fastai's ``aug_transforms`` defaults: flip, optional
dihedral group (for overhead imagery), small rotation, zoom in, perspective warp and
lighting. Geometry that would leave empty borders works on a reflection-padded canvas
which is cropped back to ``size`` afterwards, so the borders hold mirrored content
instead of black (mask pixels that still end up outside the image get ``mask_fill``).
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .errors import AugmentError  # noqa: F401  (raised here; importable from here)

__all__ = ["DEFAULT_AUGMENT", "AugmentError", "build_transforms", "denormalize", "draw_sample", "tile"]

# the parameters `build_transforms` takes for a training pipeline, with their defaults
DEFAULT_AUGMENT = {"flip": True, "dihedral": False, "max_rotate": 10.0, "max_zoom": 1.1, "max_warp": 0.2,
                   "max_lighting": 0.2}


class _ReflectPad(v2.Pad):
    """Reflection padding for images and masks that also shifts key points.

    torchvision refuses ``padding_mode="reflect"`` for KeyPoints, although for points every
    padding mode is the same shift; this subclass pads points with the constant mode.
    """

    def __init__(self, padding: int):
        super().__init__(padding, padding_mode="reflect")

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.KeyPoints):
            return F.pad(inpt, padding=self.padding)
        return super().transform(inpt, params)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise AugmentError(f"{name}={value!r} is outside [{low}, {high}]. "
                           f"Give a value in that range (0 turns it off where 0 is allowed).")


def _dihedral() -> v2.Transform:
    """One of the 8 symmetries of the square: vertical flip (with the horizontal one) and 90° turns."""
    turns = [v2.Identity()] + [v2.RandomRotation((angle, angle)) for angle in (90, 180, 270)]
    return v2.Compose([v2.RandomVerticalFlip(), v2.RandomChoice(turns)])


def _geometry(size: int, max_rotate: float, max_zoom: float, max_warp: float, fill: dict) -> list:
    """Rotate, zoom and warp on a reflection-padded canvas, then crop back to ``size``."""
    steps = []
    if max_rotate > 0 or max_zoom > 1:
        steps.append(v2.RandomApply([v2.RandomAffine(degrees=max_rotate, scale=(1.0, max_zoom), fill=fill)],
                                    p=0.75))
    if max_warp > 0:
        steps.append(v2.RandomPerspective(distortion_scale=max_warp, p=0.75, fill=fill))
    if not steps:
        return []
    pad = max(1, size // 4)  # covers the corners a 10-20° turn or a 0.2 warp would leave empty
    return [_ReflectPad(pad), *steps, v2.CenterCrop(size)]


def build_transforms(size: int, *, train: bool = True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     flip: bool = True, dihedral: bool = False, max_rotate: float = 10.0,
                     max_zoom: float = 1.1, max_warp: float = 0.2, max_lighting: float = 0.2,
                     mask_fill: int = 0) -> v2.Compose:
    """The transform for one sample dict: squash to ``size``, augment (``train`` only), normalize.

    Args:
        size: output height and width in pixels.
        train: False gives the validation pipeline (resize and normalize only).
        flip: random horizontal flip.
        dihedral: also vertical flips and 90° turns (aerial, satellite and microscope images).
        max_rotate: largest rotation in degrees, either way.
        max_zoom: largest zoom-in factor (1 turns zoom off).
        max_warp: perspective distortion scale in [0, 1).
        max_lighting: brightness and contrast change, as a fraction.
        mask_fill: mask value for pixels the geometry brings in from outside the image
            (use the void code, so the loss ignores them).

    The image comes out float32, normalized with ``mean`` / ``std``; masks and points keep
    their types (points in pixels of the ``size`` x ``size`` output).
    """
    if not isinstance(size, int) or size < 8:
        raise AugmentError(f"size={size!r} is not an int >= 8. Give the side of the square images in pixels.")
    _check_range("max_rotate", max_rotate, 0, 180)
    _check_range("max_zoom", max_zoom, 1, 4)
    _check_range("max_warp", max_warp, 0, 0.99)
    _check_range("max_lighting", max_lighting, 0, 0.99)
    steps: list = [v2.Resize((size, size), antialias=True)]
    if train:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}
        if flip or dihedral:
            steps.append(v2.RandomHorizontalFlip())
        if dihedral:
            steps.append(_dihedral())
        steps += _geometry(size, max_rotate, max_zoom, max_warp, fill)
        if max_lighting > 0:
            jitter = v2.ColorJitter(brightness=max_lighting, contrast=max_lighting)
            steps.append(v2.RandomApply([jitter], p=0.75))
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
              v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


# ---------------------------------------------------------------- pictures for previews

def denormalize(x: torch.Tensor, mean, std) -> np.ndarray:
    """HWC uint8 of a normalized CHW float image."""
    mean, std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return ((x * std + mean).clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def _palette(n: int) -> np.ndarray:
    """n clearly different RGB colours (golden-ratio hues)."""
    return np.array([colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.8, 1.0) for i in range(n)]) * 255


def draw_sample(image: np.ndarray, *, mask=None, points=None, n_codes: int = 0, void_code=None) -> np.ndarray:
    """``image`` (HWC uint8) with a mask of code indices blended in, or (k, 2) pixel points as red dots."""
    picture = image.astype(np.float64)
    if mask is not None:
        colours = _palette(max(n_codes, 1))
        shown = (mask < len(colours)) & (mask != (void_code if void_code is not None else -1))
        picture[shown] = 0.5 * picture[shown] + 0.5 * colours[mask[shown]]
    if points is not None:
        height, width = picture.shape[:2]
        radius = max(1, width // 64)
        for px, py in np.round(points).astype(int):
            if 0 <= px < width and 0 <= py < height:
                picture[max(py - radius, 0):py + radius + 1, max(px - radius, 0):px + radius + 1] = (255, 0, 0)
    return picture.round().astype(np.uint8)


def tile(pictures: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Pictures of one size tiled into a near-square uint8 grid with white gaps."""
    cols = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / cols)
    height, width = pictures[0].shape[:2]
    grid = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    for k, picture in enumerate(pictures):
        top, left = (k // cols) * (height + gap), (k % cols) * (width + gap)
        grid[top:top + height, left:left + width] = picture
    return grid
