"""The true labels of a folder: folder names, an `image_name,tags` CSV, or head direction from face keypoints."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

FACES_LOW, FACES_HIGH = 0.40, 0.60        # nose tip position between the jaw ends: left / frontal / right


class TruthError(ValueError):
    """Some images have no true label; the message says which and how to give them."""


def truth_from_folders(paths: list[str]) -> dict[str, str]:
    """Label = the first folder of each image path (folder-per-class)."""
    flat = [p for p in paths if "/" not in p]
    if flat:
        raise TruthError(f"{len(flat)} image(s) are not inside a class folder (e.g. {flat[0]!r}); "
                         f"give the labels with --labels CSV.")
    return {p: p.split("/")[0] for p in paths}


def truth_from_csv(csv_path: Path) -> dict[str, str]:
    """`image_name,tags` (the first tag counts when there are several)."""
    with open(csv_path, newline="") as handle:
        return {row["image_name"]: row["tags"].split()[0] for row in csv.DictReader(handle) if row["tags"].strip()}


def faces_direction(keypoints_csv: Path, low: float = FACES_LOW, high: float = FACES_HIGH) -> dict[str, str]:
    """Where the head faces in the image, from 68 keypoints: the nose tip (30) between the jaw ends (0, 16).

    r = (x30 - x0) / (x16 - x0): below `low` the face turns to the image's left, above `high` to its
    right, frontal between. Names listed twice in the CSV get the mean r of their rows.
    """
    ratios = defaultdict(list)
    with open(keypoints_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            x0, x16, x30 = float(row["x0"]), float(row["x16"]), float(row["x30"])
            ratios[row["image_name"]].append((x30 - x0) / (x16 - x0) if x16 != x0 else 0.5)
    return {name: "left" if np.mean(r) < low else "right" if np.mean(r) > high else "frontal"
            for name, r in ratios.items()}
