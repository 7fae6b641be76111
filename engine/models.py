"""Trainable models built on a registered backbone: classifier, U-Net and point regression.

Each model is a `body` (the backbone up to its last offered layer) and a `head`, and exposes
`layer_groups` (early body, late body, head) for discriminative learning rates and freezing.
`create_model(task, backbone, n_out)` builds the architecture the registered task names
(`Task.architecture`, a key of `ARCHITECTURES`).
"""
from __future__ import annotations

import math

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .backbones import create_backbone, get_backbone_cfg
from .errors import ModelError  # noqa: F401  (raised here; importable from here)
from .tasks import get_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Cut:
    """Where to cut a torchvision architecture into a body."""

    # returns the body as an nn.Sequential whose children include every offered layer
    extract: Callable[[nn.Module], nn.Sequential]
    # prefix of the offered layer names (`BackboneCfg.layers`) that the body's children lack
    prefix: str


def _resnet_body(model: nn.Module) -> nn.Sequential:
    children = OrderedDict(model.named_children())
    return nn.Sequential(OrderedDict((name, child) for name, child in children.items() if name not in ("avgpool", "fc")))


_FEATURES = _Cut(lambda model: model.features, "features.")
# keyed by the torchvision architecture family (the start of `BackboneCfg.arch`)
CUTS: dict[str, _Cut] = {
    "mobilenet": _FEATURES,
    "efficientnet": _FEATURES,
    "convnext": _FEATURES,
    "resnet": _Cut(_resnet_body, ""),
}


def _cut_for(backbone: str) -> _Cut:
    arch = get_backbone_cfg(backbone).arch
    for family, cut in CUTS.items():
        if arch.startswith(family):
            return cut
    raise ModelError(f"No body cut is known for architecture {arch!r}; add one to engine.models.CUTS.")


def body(backbone: str, pretrained: bool = True) -> nn.Sequential:
    """The backbone network up to (and including) its last offered layer, as an nn.Sequential."""
    return _cut_for(backbone).extract(create_backbone(backbone, pretrained=pretrained))


def skip_names(backbone: str) -> list[str]:
    """The offered layers as names of the body's children, early to last."""
    cut = _cut_for(backbone)
    return [layer[len(cut.prefix):] for layer in get_backbone_cfg(backbone).layers]


def body_groups(encoder: nn.Sequential, split_after: str) -> list[list[nn.Parameter]]:
    """The body's parameters in two groups: children up to and including `split_after`, and the rest."""
    names = [name for name, _ in encoder.named_children()]
    cut = names.index(split_after) + 1
    children = list(encoder.children())
    return [[p for child in part for p in child.parameters()] for part in (children[:cut], children[cut:])]


def split_point(backbone: str) -> str:
    """The body child after which the late group starts: the middle offered layer (resnet: layer2)."""
    names = skip_names(backbone)
    return names[len(names) // 2 - 1]


@torch.no_grad()
def _probe_channels(encoder: nn.Sequential, names: list[str], size: int = 64) -> list[int]:
    """Channel counts at the named children, found by one small forward pass (training mode restored)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return [feature.shape[1] for feature in _run_encoder(encoder, torch.zeros(1, 3, size, size), names)]
    finally:
        encoder.train(was_training)


def _run_encoder(encoder: nn.Sequential, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """Outputs of the named children, in order; running child by child needs no hooks to remove."""
    wanted, outputs = set(names), []
    for name, child in encoder.named_children():
        x = child(x)
        if name in wanted:
            outputs.append(x)
    return outputs


class AdaptiveConcatPool2d(nn.Module):
    """Global average and max pooling side by side: (B, C, H, W) -> (B, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1).flatten(1)


class ClassifierHead(nn.Sequential):
    """Concat pooling, batch norm, dropout and one linear layer to `n_out` logits."""

    def __init__(self, in_ch: int, n_out: int, dropout: float = 0.25):
        super().__init__(AdaptiveConcatPool2d(), nn.BatchNorm1d(2 * in_ch), nn.Dropout(dropout),
                         nn.Linear(2 * in_ch, n_out))


class RegressionHead(nn.Sequential):
    """Where things are needs to survive pooling: the feature map is pooled to a small grid, reduced,
    flattened and mapped to `n_out` values, then a sigmoid scales them to `y_range` when one is given.

    A global pool (the classifier head) keeps what is in the image but little of where; a head
    centre regressed from it stays near the mean.
    """

    def __init__(self, in_ch: int, n_out: int, y_range: tuple[float, float] | None = None, dropout: float = 0.1,
                 grid: int = 4, width: int = 64):
        super().__init__(nn.AdaptiveAvgPool2d(grid), nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * grid * grid, n_out))
        self.y_range = tuple(y_range) if y_range is not None else None
        # start at the middle of the range (the image centre for points) rather than at random offsets:
        # targets such as a head centre vary little, and a random start costs epochs to unlearn
        nn.init.zeros_(self[-1].weight)
        nn.init.constant_(self[-1].bias, 0.0 if self.y_range is None else _inverse_range(0.0, self.y_range))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.y_range is None:
            return out
        low, high = self.y_range
        return torch.sigmoid(out) * (high - low) + low


def _inverse_range(value: float, y_range: tuple[float, float]) -> float:
    """The pre-sigmoid output that `RegressionHead` maps to `value` (clipped inside the range)."""
    low, high = y_range
    p = min(max((value - low) / (high - low), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class BodyHeadModel(nn.Module):
    """`head(body(x))`, with layer groups [early body, late body, head]."""

    def __init__(self, encoder: nn.Sequential, head: nn.Module, split_after: str):
        super().__init__()
        self.body, self.head, self.split_after = encoder, head, split_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @property
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [*body_groups(self.body, self.split_after), list(self.head.parameters())]


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class UNetDecoder(nn.Module):
    """Upsample, concatenate the skip, convolve; repeated from the deepest skip to the input itself."""

    def __init__(self, skip_channels: list[int], bottom_channels: int, n_classes: int, final_channels: int = 32):
        super().__init__()
        blocks, channels = [], bottom_channels
        for skip in reversed(skip_channels):
            blocks.append(_conv_block(channels + skip, skip))
            channels = skip
        self.blocks = nn.ModuleList(blocks)
        self.final = _conv_block(channels + 3, final_channels)  # the last skip is the input image
        self.classifier = nn.Conv2d(final_channels, n_classes, 1)

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        *skips, x = features
        for block, skip in zip(self.blocks, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.final(torch.cat([x, image], dim=1)))


class UNet(nn.Module):
    """A U-Net whose encoder is `backbone`'s body, with skip connections at its offered layers.

    Output: (B, n_classes, H, W) logits at the input resolution.
    """

    def __init__(self, backbone: str, n_classes: int, pretrained: bool = True):
        super().__init__()
        self.skip_names = skip_names(backbone)
        self.body = body(backbone, pretrained)
        channels = _probe_channels(self.body, self.skip_names)
        self.head = UNetDecoder(channels[:-1], channels[-1], n_classes)
        self.split_after = split_point(backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, _run_encoder(self.body, x, self.skip_names))

    @property
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [*body_groups(self.body, self.split_after), list(self.head.parameters())]


def _pooled_model(backbone: str, pretrained: bool, make_head: Callable[[int], nn.Module]) -> BodyHeadModel:
    encoder = body(backbone, pretrained)
    (channels,) = _probe_channels(encoder, skip_names(backbone)[-1:])
    return BodyHeadModel(encoder, make_head(channels), split_point(backbone))


def _classifier(backbone: str, n_out: int, pretrained: bool) -> nn.Module:
    return _pooled_model(backbone, pretrained, lambda channels: ClassifierHead(channels, n_out))


def _regressor(backbone: str, n_out: int, pretrained: bool, y_range=(-1.1, 1.1)) -> nn.Module:
    return _pooled_model(backbone, pretrained, lambda channels: RegressionHead(channels, n_out, y_range))


def _unet(backbone: str, n_out: int, pretrained: bool) -> nn.Module:
    return UNet(backbone, n_out, pretrained)


# architecture name (a task's `Task.architecture`) -> builder(backbone, n_out, pretrained, **options)
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "classifier": _classifier,  # pooled features, a linear head to n_out logits
    "unet": _unet,              # per-pixel logits at the input resolution
    "regressor": _regressor,    # a spatial head to n_out values in y_range
}


def create_model(task: str, backbone: str, n_out: int, pretrained: bool = True, **options) -> nn.Module:
    """The model for `task` on `backbone` with `n_out` outputs; `.layer_groups` and `.config` set.

    `.config` holds the arguments, so an exported file can rebuild the same architecture.
    """
    architecture = get_task(task, ModelError).architecture
    if architecture not in ARCHITECTURES:
        raise ModelError(f"Task {task!r} names architecture {architecture!r}, which engine.models does not build. "
                         f"Set its `architecture` to one of: {', '.join(ARCHITECTURES)}.")
    if n_out < 1:
        raise ModelError(f"n_out must be at least 1, got {n_out}; it is the number of classes, codes or coordinates.")
    model = ARCHITECTURES[architecture](backbone, n_out, pretrained, **options)
    model.config = {"task": task, "backbone": backbone, "n_out": n_out, **options}
    logger.info("created %s model on %s with %d outputs", task, backbone, n_out)
    return model
