"""What `labeler predict` writes: its text summary, and with --out a CSV row per image (and a mask per image, as a
PNG beside it, for a segmentation model)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def text_predictions(out: dict) -> str:
    lines = [f"{row['path']}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "path")
             for row in out["predictions"]]
    if "metrics" in out:
        lines.append(f"on the {out['scored']} images with a true label in {out['labels_from']}:")
        lines += [f"  {k}: {v:.4f}" for k, v in out["metrics"].items()]
    if "out" in out:
        lines.append(" and ".join(f"{kind} written to {path}" for kind, path in out["out"].items()))
    if "stored" in out:
        lines.append(f"predictions for {out['stored']['items']} images stored as {out['stored']['model_id']!r} "
                     f"(labeler export --format predictions)")
    return "\n".join(lines)


class PredictionFiles:
    """--out: a CSV row per image (image_name and the task's summary); a mask per image as a PNG beside it."""

    def __init__(self, out, mask_suffix: str):
        from labeler._files import checked_output_file
        self.csv = checked_output_file(out)
        self.masks = self.csv.with_name(self.csv.stem + "_masks")
        self.mask_suffix, self.rows, self.wrote_masks = mask_suffix, [], False

    def add(self, path: str, summary: dict, result: dict) -> None:
        from engine._atomic import atomic_output
        row = {"image_name": path, **_cells({k: v for k, v in summary.items() if k != "path"})}
        if "mask" in result:  # a class index per pixel: a PNG at the image's size, which the CSV names
            from PIL import Image
            file = self.masks / Path(path).with_name(Path(path).stem + self.mask_suffix)
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(file) as f:
                Image.fromarray(np.asarray(result["mask"], np.uint8)).save(f, format="PNG")
            row["mask"], self.wrote_masks = file.relative_to(self.csv.parent).as_posix(), True
        self.rows.append(row)

    def close(self) -> dict:
        """Write the CSV; returns {"predictions": CSV path, "masks": their folder (segmentation)}."""
        from engine._atomic import atomic_output
        from labeler._files import safe_cell
        columns = list(dict.fromkeys(key for row in self.rows for key in row)) or ["image_name"]
        with atomic_output(self.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: safe_cell(k, v) for k, v in row.items()} for row in self.rows)
        return {"predictions": str(self.csv), **({"masks": str(self.masks)} if self.wrote_masks else {})}


def _cells(summary: dict) -> dict:
    """A task's summary as CSV cells: tags joined by spaces, points as x0,y0,x1,y1,...; per-class tables (a mask's
    share of each class) stay in --json."""
    cells = {}
    for key, value in summary.items():
        if isinstance(value, list) and value and isinstance(value[0], list):
            cells.update({f"{axis}{i}": v for i, point in enumerate(value) for axis, v in zip("xy", point)})
        elif isinstance(value, list):
            cells[key] = " ".join(map(str, value))
        elif not isinstance(value, dict):
            cells[key] = value
    return cells
