"""The models a project has fine-tuned: `WORKSPACE/models/model-N/`, one folder each, one of them current.

A folder holds `model.pt` (`Learner.export`: loads with `engine.load_exported` and `labeler predict`),
`record.json` (what the Model tab shows: task, settings, label count, metrics with 95% intervals
beside the image-blind baseline, the loss history, the confusion matrix, the top losses) and
the pictures the record names (`top/`, `confusion.png`). `record.json` is written last, so a folder
without one is a training that did not finish and is not listed. `models/current.txt` names the
current model; without it the newest is current.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

from engine._atomic import write_text

from .errors import LabelerError

logger = logging.getLogger(__name__)

RECORD = "record.json"
MODEL_FILE = "model.pt"
_ID = re.compile(r"model-(\d+)")


class ModelStoreError(LabelerError):
    """A model that is not in the project's models/ folder."""


class ModelStore:
    """The `models/` folder of a workspace (`root`)."""

    def __init__(self, root):
        self.dir = Path(root) / "models"

    def new_dir(self) -> Path:
        """A new, empty `model-N` folder (N one past the highest so far), reserved by creating it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [int(m.group(1)) for p in self.dir.iterdir() if (m := _ID.fullmatch(p.name))]
            path = self.dir / f"model-{max(numbers, default=0) + 1}"
            try:
                path.mkdir()
                return path
            except FileExistsError:  # another process took that number first
                continue

    def records(self) -> list[dict]:
        """Every finished model's record, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.iterdir():
            if _ID.fullmatch(path.name) and (path / RECORD).is_file():
                try:
                    found.append(json.loads((path / RECORD).read_text(encoding="utf-8")))
                except (OSError, ValueError) as err:
                    logger.warning("skipping %s: %s", path / RECORD, err)
        return sorted(found, key=lambda record: int(_ID.fullmatch(record["id"]).group(1)))

    def record(self, model_id: str) -> dict:
        path = self._folder(model_id) / RECORD
        if not path.is_file():
            raise ModelStoreError(f"No finished model {model_id!r} in {self.dir}.")
        return json.loads(path.read_text(encoding="utf-8"))

    def model_path(self, model_id: str) -> Path:
        return self._folder(model_id) / MODEL_FILE

    def file(self, model_id: str, name: str) -> Path:
        """A file a record names (a picture), inside the model's folder only."""
        folder = self._folder(model_id)
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise ModelStoreError(f"{name!r} is not a file of model {model_id!r}.")
        return path

    @property
    def current_id(self) -> str | None:
        """The current model: the one chosen last, or the newest."""
        ids = [record["id"] for record in self.records()]
        chosen = self.dir / "current.txt"
        if chosen.is_file() and (name := chosen.read_text(encoding="utf-8").strip()) in ids:
            return name
        return ids[-1] if ids else None

    def set_current(self, model_id: str) -> None:
        self.record(model_id)  # raises for an unknown one
        write_text(self.dir / "current.txt", model_id)

    def current_model_path(self) -> Path | None:
        model_id = self.current_id
        return None if model_id is None else self.model_path(model_id)

    def discard_unfinished(self, folder: Path) -> None:
        """Remove a reserved folder whose training did not finish (no record)."""
        folder = Path(folder)
        if folder.parent == self.dir and _ID.fullmatch(folder.name) and not (folder / RECORD).exists():
            shutil.rmtree(folder, ignore_errors=True)

    def _folder(self, model_id: str) -> Path:
        if not isinstance(model_id, str) or not _ID.fullmatch(model_id):
            raise ModelStoreError(f"{model_id!r} is not a model id (model-1, model-2, ...).")
        return self.dir / model_id


def write_record(folder: Path, record: dict) -> dict:
    """Write `record.json` last: from now on the model is listed."""
    record = {"id": folder.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
    write_text(folder / RECORD, json.dumps(record, indent=1, allow_nan=True))
    return record
