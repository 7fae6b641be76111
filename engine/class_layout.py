"""The Predicted view's map: each class owns a point on a circle, images sit between them by a model's
probabilities. No scikit-learn here: the app draws it from stored predictions at once.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ProjectionError

CLASS_LAYOUT_EXTENT = 1.5   # class_layout positions stay within [-1.5, 1.5] on both axes (at the default sizes)


def class_anchors(k: int) -> np.ndarray:
    """(k, 2) points on the unit circle where class_layout puts each class: the first at the top, clockwise."""
    angles = np.pi / 2 - 2 * np.pi * np.arange(k) / k
    return np.column_stack([np.cos(angles), np.sin(angles)])


def class_layout(probs: Any, local_xy: Any, labeled: Any = None, *, spread: float = 0.06,
                 done_radius: float = 1.3) -> np.ndarray:
    """A map of what a classifier predicts: each class owns a point on a circle (its anchor).

    An unlabeled item sits at ``sum_c probs[c] * anchor_c``: confident predictions gather at their
    class's anchor, doubtful ones lie between the classes they are torn between, near the centre
    when the model has no idea. Items with a label (``labeled[i] = class index``, -1 for none) are
    set aside just outside the circle beyond their label's anchor, so what is left to do stays
    inside. ``local_xy`` (e.g. PCA 1-2 of a layer) spreads items that share a position by what
    they look like, scaled to ``spread`` (standard deviation) in the circle's units. With two
    classes the anchors sit at the top and bottom and the positions would be one line, so the
    horizontal axis spreads the images wider (8 x ``spread``), by what they look like.

    probs: (n, k) rows summing to 1; local_xy: (n, 2). Returns float32 (n, 2).
    """
    p = np.asarray(probs, dtype=np.float64)
    xy = np.asarray(local_xy, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ProjectionError(f"class_layout needs (n, k >= 2) probabilities; got shape {p.shape}.")
    if xy.shape != (len(p), 2):
        raise ProjectionError(f"class_layout needs one local (x, y) per item: {xy.shape} against {len(p)} items.")
    if not np.isfinite(p).all() or not np.isfinite(xy).all():
        raise ProjectionError("class_layout got NaN or inf probabilities or positions.")
    k = p.shape[1]
    anchors = class_anchors(k)
    total = p.sum(1, keepdims=True)
    position = (p / np.where(total > 0, total, 1)) @ anchors
    if labeled is not None:
        label = np.asarray(labeled)
        done = (label >= 0) & (label < k)
        position[done] = done_radius * anchors[label[done]]
    centred = xy - xy.mean(0)
    scale = centred.std() or 1.0
    offset = spread * centred / scale
    if k == 2:
        offset[:, 0] *= 8
    limit = CLASS_LAYOUT_EXTENT
    return np.clip(position + offset, -limit, limit).astype(np.float32)
