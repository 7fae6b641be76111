"""Target encodings the task classes (engine/tasks.py) share: `Targets` (what a task encoded), multi-hot tags, mask
files, pixel points.

Plain functions of arrays and files, kept apart so each task class stays short; a new task may use them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image

from .errors import ImageReadError


@dataclasses.dataclass
class Targets:
    """Targets as a task encoded them (picklable: no user callables), and what the loop needs to know."""

    values: object  # one entry per item: int64 (N,) | float32 (N, C) | mask paths | float32 (N, k, 2) or (N, m)
    classes: list[str] | None = None
    codes: list[str] | None = None
    void_code: int | None = None
    n_out: int = 0  # outputs the model head needs
    points: bool = False  # values are (k, 2) pixel points that follow the augmentation


def multi_hot(targets: list, classes: list) -> np.ndarray:
    """One multi-hot row per list of tags; tags not in `classes` are left out."""
    lookup = {str(name): i for i, name in enumerate(classes)}
    hot = np.zeros((len(targets), len(lookup)), np.float32)
    for row, tags in enumerate(targets):
        hot[row, [lookup[str(tag)] for tag in tags if str(tag) in lookup]] = 1.0
    return hot


def load_mask(path, image_size: tuple[int, int], n_codes: int, void_code: int | None) -> np.ndarray:
    """A mask file as (H, W) int64 code indices at `image_size`; values outside the codes become void."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                raise ImageReadError(path, f"mask mode {mask.mode} is not single-channel; save code indices "
                                           f"as a grayscale or palette PNG")
            if mask.size != image_size:
                mask = mask.resize(image_size, Image.NEAREST)
            values = np.asarray(mask, dtype=np.int64)
    except OSError as err:
        raise ImageReadError(path, f"cannot read mask ({err})") from None
    outside = (values >= n_codes) & (values != (void_code if void_code is not None else -1))
    if outside.any():
        if void_code is None:
            raise ImageReadError(path, f"mask value {int(values[outside].max())} is not a code index "
                                       f"0..{n_codes - 1}; pass void_code= to ignore such pixels")
        values[outside] = void_code
    return values


def normalized_points(points, width: int, height: int) -> torch.Tensor:
    """Pixel (x, y) points -> the flat [-1, 1] layout of a regression batch (image corners at +-1)."""
    scale = torch.tensor([width, height], dtype=torch.float32)
    return (torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2) / scale * 2 - 1).reshape(-1)
