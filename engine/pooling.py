"""How a layer's feature map becomes one vector per image: the single place that decides it.

Global average pooling alone is blind to layout (a face looking left and its mirror image
pool to nearly the same vector), so each layer is stored as its global average *beside*
a GRID x GRID grid of averages. Consumers pick columns with `select`.
Stored column layout for a layer with C channels: [avg (C) | grid (C * GRID * GRID)], the
grid flattened channel-major (channel c, cell r*GRID + col at column C + c*GRID*GRID + cell).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import PoolingError

if TYPE_CHECKING:  # torch is imported only where pooling runs, so reading a cache stays light
    import torch

GRID = 2
CELLS = GRID * GRID
POOLINGS = ("avg", "grid", "both")
# What projections and find-similar use unless told otherwise. The grid keeps layout (pose,
# where things are) and its cells average to the global mean, so it loses nothing `avg` has.
DEFAULT_POOLING = "grid"


def pool(fmap: "torch.Tensor") -> "torch.Tensor":
    """(B, C, H, W) feature map -> (B, C * (1 + CELLS)) pooled vector, in the stored layout."""
    import torch
    import torch.nn.functional as F

    if fmap.ndim != 4:
        raise PoolingError(f"expected a (batch, channels, height, width) feature map, got shape {tuple(fmap.shape)}")
    avg = fmap.mean(dim=(2, 3))
    grid = F.adaptive_avg_pool2d(fmap, GRID).flatten(1)
    return torch.cat([avg, grid], dim=1)


def stored_dim(channels: int) -> int:
    return channels * (1 + CELLS)


def select(features: np.ndarray, pooling: str = DEFAULT_POOLING) -> np.ndarray:
    """Columns of a stored feature array for one pooling ("avg", "grid" or "both"); a view, no copy."""
    if pooling not in POOLINGS:
        raise PoolingError(f"Unknown pooling {pooling!r}. Choose one of: {', '.join(POOLINGS)}.")
    channels, rest = divmod(features.shape[1], 1 + CELLS)
    if rest:
        raise PoolingError(f"a stored feature array has a multiple of {1 + CELLS} columns, not {features.shape[1]}")
    if pooling == "avg":
        return features[:, :channels]
    if pooling == "grid":
        return features[:, channels:]
    return features
