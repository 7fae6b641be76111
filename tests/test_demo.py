import csv

import numpy as np
from PIL import Image

from engine import demo_folder, demo_truth
from engine.data import discover_images


def test_demo_writes_5000_real_digits_once_with_their_true_classes():
    folder = demo_folder()
    files = discover_images(folder)
    assert len(files) == 5000
    with open(demo_truth(), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_name", "tags"]
    counts = np.unique([r[1] for r in rows[1:]], return_counts=True)[1]
    assert list(counts) == [500] * 10
    image = np.asarray(Image.open(folder / files[0]))
    assert image.shape == (28, 28) and image.max() > 200 and image.min() == 0  # a real stroke on black
    mtime = (folder / files[0]).stat().st_mtime_ns
    assert demo_folder() == folder and (folder / files[0]).stat().st_mtime_ns == mtime
