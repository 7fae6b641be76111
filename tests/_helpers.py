"""Helpers shared by the tests (importable as `_helpers`; conftest modules are not importable by name)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


def colour_folder(root: Path, n: int = 40, size: int = 40) -> Path:
    """n noisy images in folders red/ and blue/ (alternating): a classification anyone can learn."""
    rng = np.random.default_rng(0)
    for i in range(n):
        colour = "red" if i % 2 else "blue"
        pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        pixels[..., 0 if colour == "red" else 2] += 180
        (root / colour).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / colour / f"{i:03d}.png")
    return root



def run_notebook(path: Path, workdir: Path, monkeypatch, timeout: int = 300):
    """Execute the notebook at `path` headless (nbclient, kernel python3) in `workdir`; returns the executed
    notebook. The kernel inherits the environment, so the demo cache and IPython's and Jupyter's files are
    kept in `workdir`, out of ~. Raises CellExecutionError on the first failing cell."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for variable, where in (("LABELER_CACHE", "labeler-cache"), ("IPYTHONDIR", "ipython"),
                            ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")):
        monkeypatch.setenv(variable, str(workdir / where))
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    return nb
