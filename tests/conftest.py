"""Shared fixtures: generated image folders, the development data, a fixed seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import colour_folder, write_image


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the demo cache of every test away from the user's ~/.cache."""
    monkeypatch.setenv("LABELER_CACHE", str(tmp_path_factory.getbasetemp() / "labeler-cache"))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """12 small generated images in two sub-folders, jpg and png."""
    folder = tmp_path / "images"
    for i in range(12):
        write_image(folder / ("a" if i < 6 else "b") / f"img_{i:02d}.{'jpg' if i % 2 else 'png'}", seed=i)
    return folder


@pytest.fixture
def prepared_folder(image_folder, tmp_path) -> Path:
    """`image_folder` with its thumbnails and features (resnet18 at 32 px, untrained) in `tmp_path / "workspace"`."""
    from engine.embedding import embed
    from labeler.project import Project
    with Project(image_folder, tmp_path / "workspace", backbone="resnet18", size=32) as project:
        project.thumbs.build(workers=0)
        embed(project.workspace, backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)
    return image_folder


@pytest.fixture
def colours(tmp_path):
    """(a folder of 40 red and blue 32-pixel squares in class folders, 8 of them to label, the other 32)."""
    folder = colour_folder(tmp_path / "colours", n=40, size=32)
    images = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    return folder, images[:4] + images[-4:], images[4:-4]


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory):
    """(folder, {kind id: Made}): every hostile file kind of labeler/hostile.py, written once per session."""
    from labeler.hostile import write_image_corpus
    folder = tmp_path_factory.mktemp("hostile") / "images"
    return folder, write_image_corpus(folder)


@pytest.fixture(scope="session")
def hostile_label_files(tmp_path_factory):
    """{kind id: path} of every hostile label CSV of labeler/hostile.py."""
    from labeler.hostile import write_label_files
    return write_label_files(tmp_path_factory.mktemp("hostile-label-files"))


@pytest.fixture(scope="session")
def embedded_cifar10(tmp_path_factory) -> Path:
    """A copy of ../shared/data/cifar10 (3,000 real photos) embedded once a session with the default backbone's
    real weights, its workspace inside the copy; tests may add labels to it but never change its files."""
    import shutil

    from _helpers import shared_data
    from engine import Workspace, embed
    folder = tmp_path_factory.mktemp("cifar10") / "cifar10"
    shutil.copytree(shared_data("cifar10"), folder, ignore=shutil.ignore_patterns(".labeler"))
    embed(Workspace(folder))
    return folder

