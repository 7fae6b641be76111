"""Losses beside the tasks' own: soft Dice for segmentation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LearnerError


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
                 reduction: str = "mean") -> torch.Tensor:
    """Per-pixel cross-entropy (`reduction` as in torch), plus `dice` x `soft_dice_loss` in the mean: Dice is one
    figure for the whole batch, so the per-item losses (top losses) are cross-entropy alone."""
    loss = F.cross_entropy(pred, target, ignore_index=ignore_index, reduction=reduction)
    if dice and reduction == "mean":
        loss = loss + dice * soft_dice_loss(pred, target, ignore_index)
    return loss


def dice_weight(dice: float) -> float:
    """`dice` checked: a weight of 0 or more."""
    if not dice >= 0:
        raise LearnerError(f"The Dice loss's weight must be 0 or more (e.g. 1.0), not {dice}.")
    return float(dice)
