import gc
import tracemalloc

import pytest
import torch
from torch import nn

from engine import extract_activations
from engine._hooks import ActivationRecorder
from engine.backbones import create_backbone


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def test_hooks_are_released_after_100_uses_and_memory_stays_flat():
    model = _tiny_net()
    x = torch.randn(2, 3, 16, 16)
    extract_activations(model, x, ["1", "3"])  # warm up allocations
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(100):
        out = extract_activations(model, x, ["1", "3"])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert _hook_count(model) == 0
    assert set(out) == {"1", "3"}
    assert after - before < 200_000, f"memory grew by {after - before} bytes over 100 uses"


def test_hooks_are_released_when_the_forward_pass_fails():
    model = _tiny_net()
    with pytest.raises(RuntimeError):
        extract_activations(model, torch.randn(2, 5, 16, 16), ["1", "3"])  # wrong channel count
    assert _hook_count(model) == 0


def test_recorder_remove_is_safe_twice_and_names_missing_layers():
    model = _tiny_net()
    rec = ActivationRecorder(model, ["1"])
    rec.remove()
    rec.remove()
    assert _hook_count(model) == 0
    with pytest.raises(KeyError, match="no module named"):
        ActivationRecorder(model, ["nope"])


def test_extract_restores_training_mode_and_pools_avg_beside_2x2_grid():
    model = _tiny_net().train()
    out = extract_activations(model, torch.randn(3, 3, 16, 16), ["3"])
    assert model.training
    assert out["3"].shape == (3, 16 * 5)  # 16 channels: average + 4 grid cells


def test_pooled_grid_tells_mirror_images_apart_where_average_does_not():
    x = torch.randn(1, 3, 16, 16)
    both = torch.cat([x, x.flip(-1)])
    fmap = extract_activations(nn.Identity(), both, [""], pool=None)[""]
    pooled = extract_activations(nn.Identity(), both, [""])[""]
    avg, grid = pooled[:, :3], pooled[:, 3:]
    assert torch.allclose(avg[0], avg[1], atol=1e-6)
    assert not torch.allclose(grid[0], grid[1], atol=1e-3)
    assert fmap.shape == both.shape


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "efficientnet_b0", "convnext_tiny"])
def test_every_offered_layer_of_a_backbone_is_recorded_in_one_pass(name):
    from engine.backbones import get_backbone_cfg
    cfg = get_backbone_cfg(name)
    model = create_backbone(name, pretrained=False)
    out = extract_activations(model, torch.randn(1, 3, 64, 64), list(cfg.layers))
    assert list(out) == list(cfg.layers)
    assert 4 <= len(cfg.layers) <= 6
    assert _hook_count(model) == 0
