"""Grad-CAM must find the evidence where it is; hooks must be released; top losses and confusion."""
import numpy as np
import pytest
import torch
from torch import nn

from engine.interpret import (ClassTarget, CoordinateTarget, GradCAM, InterpretError, RegionTarget,
                              confusion_matrix, most_confused, overlay, top_losses)

SIZE, SQUARE = 32, 8


def _squares(n: int, seed: int):
    """Noise images with one bright square at a random place; its colour (red or green) is the class."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.3, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    classes = rng.integers(0, 2, n)
    corners = rng.integers(0, SIZE - SQUARE, size=(n, 2))
    for image, cls, (top, left) in zip(images, classes, corners):
        image[cls, top:top + SQUARE, left:left + SQUARE] = 1.0
    return torch.from_numpy(images), torch.from_numpy(classes), corners


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
                         nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = _net()
    x, y, _ = _squares(512, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_gradcam_peak_falls_on_the_evidence_for_at_least_90_percent_of_images(trained):
    x, y, corners = _squares(100, seed=2)
    assert (trained(x).argmax(1) == y).float().mean() > 0.95  # the model did learn the task
    with GradCAM(trained, "4") as cam:
        heat = cam(x, lambda out: out.gather(1, y[:, None])[:, 0]).numpy()
    hits = 0
    for h, (top, left) in zip(heat, corners):
        row, col = np.unravel_index(h.argmax(), h.shape)
        hits += (top - 2 <= row < top + SQUARE + 2) and (left - 2 <= col < left + SQUARE + 2)
    assert hits >= 90, f"the heatmap peak was on the square for {hits} of 100 images"


def test_gradcam_hooks_are_released_after_100_uses_and_the_model_mode_is_restored(trained):
    x, _, _ = _squares(2, seed=3)
    trained.train()
    for _ in range(100):
        with GradCAM(trained, "4") as cam:
            heat = cam(x, ClassTarget(0))
    assert sum(len(m._forward_hooks) for m in trained.modules()) == 0
    assert trained.training and heat.shape == (2, SIZE, SIZE) and float(heat.max()) <= 1.0
    trained.eval()
    with torch.no_grad():
        trained(x)  # a hook-free model runs without gradients as before


def test_region_and_coordinate_targets_reduce_outputs_to_one_score_per_image():
    seg = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    assert RegionTarget(1, mask)(seg).tolist() == [16.0, 64.0]
    assert CoordinateTarget(1)(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist() == [2.0, 4.0]


def test_unknown_layer_names_the_choices(trained):
    with pytest.raises(InterpretError, match="has no layer 'conv9'"):
        GradCAM(trained, "conv9")


def test_top_losses_confusion_and_most_confused():
    assert top_losses(np.array([0.1, 2.0, 0.5, 3.0]), k=2).tolist() == [3, 1]
    matrix = confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 0, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [2, 1, 0], [0, 0, 1]]
    assert most_confused(matrix, ["a", "b", "c"]) == [("b", "a", 2), ("a", "b", 1)]
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    assert overlay(image, np.ones((4, 4)))[0, 0].tolist() == [127, 127, 0]
