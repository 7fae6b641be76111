"""Test-time augmentation: an output averaged over views of the image, before the activation.

- "flips": the image and its mirror, the mirrored output mapped back by `Task.unflip` (a task that cannot map it
  back, such as several points whose left and right would swap, gets the image alone).
- "zoom": the flips, plus a centre crop enlarged by `ZOOM` back to the full size, and its mirror. Only for a
  task whose output is one score per label for the whole image (`Task.per_label_scores`: single- and multi-label
  classifiers): a mask or a point predicted on a crop is not where it is on the image, so those get flips alone.

`tta` is False or None (the image alone), True (the same as "flips"), "flips" or "zoom".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LearnerError

MODES = ("flips", "zoom")
REPORTED = {"flips": "metrics_tta", "zoom": "metrics_tta_zoom"}   # each mode's key in training and test reports
VIEWS = {"none": "metrics", **REPORTED}                           # every choice, the plain image's key first
ZOOM = 1.15      # the crop is 1 / ZOOM of each side: zoom as small as the training augmentation's


def mode_of(tta) -> str | None:
    """"flips", "zoom" or None for a `tta` setting; LearnerError for one it does not know."""
    if tta is None or tta is False:
        return None
    if tta is True:
        return "flips"
    if tta in MODES:
        return tta
    raise LearnerError(f"Test-time augmentation {tta!r} is not one of {', '.join(MODES)} (or True for flips).")


def applies(task, tta) -> bool:
    """Whether `tta` changes `task`'s outputs at all (so a report need not show a figure equal to the plain one)."""
    mode = mode_of(tta)
    if mode == "zoom":
        return task.per_label_scores
    return mode == "flips" and task.can_unflip


def chosen(report: dict, metric: str) -> str | None:
    """The views ("none", "flips" or "zoom") whose `metric` is best in `report` (a training summary or record,
    with a metrics dict under each of `VIEWS`' keys that it scored): the views to report a test figure with.
    Ties go to the fewer views; None when no views scored `metric`."""
    from .metrics import lower_is_better
    sign = 1 if lower_is_better(metric) else -1
    figures = [(views, (report.get(key) or {}).get(metric)) for views, key in VIEWS.items()]
    scored = [(sign * figure, order, views) for order, (views, figure) in enumerate(figures) if figure is not None]
    return min(scored)[2] if scored else None


def zoomed(x: torch.Tensor, zoom: float = ZOOM) -> torch.Tensor:
    """The centre 1/zoom of each side of a batch of images, resized back to their size."""
    height, width = x.shape[-2:]
    h, w = max(1, round(height / zoom)), max(1, round(width / zoom))
    top, left = (height - h) // 2, (width - w) // 2
    crop = x[..., top:top + h, left:left + w]
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)


def averaged(forward, x: torch.Tensor, task, tta) -> torch.Tensor:
    """`forward(x)` (raw outputs) averaged over the views `tta` names that `task` can take."""
    mode, raw = mode_of(tta), forward(x)
    if mode is None:
        return raw
    views = [raw]
    if (mirrored := task.unflip(forward(x.flip(-1)))) is not None:
        views.append(mirrored)
    if mode == "zoom" and applies(task, mode):
        closer = zoomed(x)
        views += [forward(closer), forward(closer.flip(-1))]
    return torch.stack(views).mean(0)
