"""Shared fixtures: generated image folders, the development data, a fixed seed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the demo cache of every test away from the user's ~/.cache."""
    monkeypatch.setenv("LABELER_CACHE", str(tmp_path_factory.getbasetemp() / "labeler-cache"))


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or a clean skip when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the development data is only on the team's machines")
    return path


def write_image(path: Path, seed: int, size=(48, 40), kind="noise") -> Path:
    """A small RGB image with random blocks of colour; different seeds give clearly different images."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(size, Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """12 small generated images in two sub-folders, jpg and png."""
    folder = tmp_path / "images"
    for i in range(12):
        write_image(folder / ("a" if i < 6 else "b") / f"img_{i:02d}.{'jpg' if i % 2 else 'png'}", seed=i)
    return folder


def pytest_collection_modifyitems(config, items):
    # tests under tests/browser need Chromium; tests marked data need ../shared/data
    for item in items:
        if "browser" in item.keywords and not os.environ.get("LABELER_BROWSER", "1"):
            item.add_marker(pytest.mark.skip(reason="browser tests disabled"))
