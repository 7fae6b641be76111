"""Losses beside the tasks' own: soft Dice and class weights for segmentation."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageReadError, LearnerError

logger = logging.getLogger(__name__)
CLASS_WEIGHTS = ("median", "sqrt")   # the ways `class_weights` weighs classes by their pixels


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, eps: float = 1.0
                   ) -> torch.Tensor:
    """1 - the mean over classes of the soft Dice coefficient 2|P.T| / (|P| + |T|), where P are the softmax
    probabilities of `logits` (N, C, H, W) and T the one-hot `target` (N, H, W), summed over the batch's pixels
    that are not `ignore_index`. Only classes present in the batch's targets are averaged, so each weighs as
    much as any other whatever its share of the pixels (cross-entropy weighs them by their pixels); probability
    put on absent classes costs through the present ones' |P|. `eps` smooths classes with few pixels."""
    n_classes = logits.shape[1]
    counted = target != ignore_index
    onehot = F.one_hot(torch.where(counted, target, 0), n_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * counted[:, None]
    probs = logits.float().softmax(1) * counted[:, None]
    intersection, pixels = (probs * onehot).sum((0, 2, 3)), onehot.sum((0, 2, 3))
    dice = (2 * intersection + eps) / (probs.sum((0, 2, 3)) + pixels + eps)
    present = pixels > 0
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def segment_loss(pred: torch.Tensor, target: torch.Tensor, ignore_index: int, dice: float = 0.0,
                 reduction: str = "mean", weight: list[float] | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy (`reduction` as in torch; each class's pixels weighted by `weight`, see
    `class_weights`), plus `dice` x `soft_dice_loss` in the mean: Dice is one figure for the whole batch, so the
    per-item losses (top losses) are cross-entropy alone."""
    if weight is not None:      # float32 both: under mixed precision the outputs may be half, and torch wants one
        weight, pred = torch.as_tensor(weight, dtype=torch.float32, device=pred.device), pred.float()
    loss = F.cross_entropy(pred, target, weight=weight,
                           ignore_index=ignore_index, reduction=reduction)
    if dice and reduction == "mean":
        loss = loss + dice * soft_dice_loss(pred, target, ignore_index)
    return loss


def segment_item_losses(per_pixel: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The mean of per-pixel losses over each image's non-void pixels (NaN for an image with only void pixels)."""
    counted = (target != ignore_index).float().flatten(1)
    return (per_pixel.flatten(1) * counted).sum(1) / counted.sum(1)


def dice_weight(dice: float) -> float:
    """`dice` checked: a weight of 0 or more."""
    if not dice >= 0:
        raise LearnerError(f"The Dice loss's weight must be 0 or more (e.g. 1.0), not {dice}.")
    return float(dice)


def class_weights(masks: Iterable[np.ndarray], n_classes: int, void_code: int | None, mode: str) -> list[float]:
    """A cross-entropy weight per class from the training masks' pixels, so rare classes are not given up:
    "median" is median frequency balancing (SegNet's): the median of the classes' pixel shares over each class's
    share (the classes under the median weigh more than 1, those above less); "sqrt" is its square root, a gentler
    push. Only pixels of the `n_classes` codes but void count; a class without pixels, and void, weigh 1."""
    if mode not in CLASS_WEIGHTS:
        raise LearnerError(f"The class weights must be one of {', '.join(CLASS_WEIGHTS)}, not {mode!r}.")
    counts = np.zeros(n_classes, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel()
        counts += np.bincount(values[(values >= 0) & (values < n_classes)], minlength=n_classes)
    if void_code is not None and 0 <= void_code < n_classes:
        counts[void_code] = 0
    present = counts > 0
    if not present.any():
        raise LearnerError("The training masks have no pixel of any class but void: there is nothing to weigh.")
    shares = counts / counts.sum()
    weights = np.ones(n_classes)
    weights[present] = np.median(shares[present]) / shares[present]
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return [round(float(w), 4) for w in weights]


def training_class_weights(data, mode: str) -> list[float]:
    """`class_weights` over the masks of a segmentation TaskData's training split (read at their own size); a mask
    that cannot be read is left out with a warning, as training leaves its image out."""
    from PIL import Image

    from ._targets import load_mask

    def masks():
        for path in data.train.dataset.targets.values:
            try:
                with Image.open(path) as mask:
                    size = mask.size
                yield load_mask(path, size, data.n_out, data.void_code)
            except (OSError, ImageReadError) as err:
                logger.warning("class weights: left out %s (%s)", path, getattr(err, "reason", err))
    return class_weights(masks(), data.n_out, data.void_code, mode)
