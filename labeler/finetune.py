"""Fine-tuning a project's network from the app or a notebook: in a process of its own, watched from here.

A `TrainingRun` starts `engine.Learner` in a child Python process (at a lower priority), so the
person can go on lassoing and labeling while it trains: the app's server keeps its interpreter
lock and the first claim on the cores. The child reports through JSON lines (stage, every few
batches, every epoch, the lr_find curve, the finished model's record); the run keeps what it heard
for whoever polls it.
`stop()` asks the child to end after the current batch; it keeps the best epoch so far.

What is trained comes from a `TrainSpec`: the labels in the project's store (a classifier or a
multi-label classifier, chosen by the store), a mask folder with its codes (a U-Net) or a points
CSV (a regressor), and the settings of `labeler train`. A finished fine-tune leaves its model and
its report in the workspace's `models/` (`labeler.model_store`).

Only one training runs per project (`start_training` refuses a second); the run is kept per
workspace in this process, so a second browser tab of the same project sees it running. That is
shared project state on purpose, like the label store, not one person's view state.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE

from .errors import LabelerError, USER_ERRORS

logger = logging.getLogger(__name__)

LABEL_SOURCES = ("store", "masks", "points")


class TrainingError(LabelerError):
    """A training that cannot start now (another one runs, nothing to train on) or a setting that is wrong."""


@dataclasses.dataclass
class TrainSpec:
    """What to train and how; the names follow `labeler train`'s options (`labeler.training` reads them).

    Defaults are the measured cifar10 recipe scaled to a few hundred labels: mobilenet_v2 at 160 px,
    one epoch of the head alone, then five of everything at a peak rate of 2e-3, label smoothing 0.1.
    """

    source: str = "store"  # store (the project's labels) | masks | points
    masks: str | None = None  # masks: the folder of mask files (uint8 class index per pixel)
    codes: str | None = None  # masks: the class names, one per line
    void: int | None = None  # masks: the class left out of loss and metrics
    mask_suffix: str = ".png"  # masks: mask name = image stem + this
    class_weights: str | None = None  # masks: rare classes' pixels weigh more: "sqrt" or "median" (engine.losses)
    points: str | None = None  # points: image_name,...,x0,y0,... in pixels
    points_mean: bool = False  # points: regress their mean (e.g. the head centre)
    backbone: str = DEFAULT_BACKBONE
    size: int = 160
    batch_size: int = 16
    valid_pct: float = 0.2
    valid_list: str | None = None  # a file of validation image names, instead of a random share
    test_pct: float = 0.0  # a share held out before validation, scored once at the end (0: no test split)
    group_regex: str | None = None  # keep groups whole (e.g. one person), instead of a random share
    freeze_epochs: int = 1
    epochs: int = 5
    lr: float | None = 2e-3  # None: lr_find's suggestion
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    unlabeled: bool = False  # also learn from the images without a label (FixMatch-style, `engine.semi`)
    unlabeled_threshold: float = 0.9  # pseudo-label predictions at least this confident (under 0.1 smoothing's 0.91)
    unlabeled_ratio: int = 2  # unlabeled images per labeled one in each step

    def check(self) -> TrainSpec:
        """Self, or a TrainingError naming the bad setting and what it may be."""
        if self.source not in LABEL_SOURCES:
            raise TrainingError(f"Labels from {self.source!r}? Choose one of: {', '.join(LABEL_SOURCES)}.")
        if self.source == "masks" and not (self.masks and self.codes):
            raise TrainingError("Segmentation needs the masks folder and the codes file (class names, one a line).")
        if self.class_weights not in (None, "sqrt", "median"):
            raise TrainingError(f"Class weights {self.class_weights!r}? Choose none, sqrt or median.")
        if self.source == "points" and not self.points:
            raise TrainingError("Regression needs the points CSV (image_name,...,x0,y0,x1,y1,... in pixels).")
        for name, low in (("size", 32), ("batch_size", 2), ("freeze_epochs", 0), ("epochs", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise TrainingError(f"{name.replace('_', ' ')} must be a whole number of at least {low}, "
                                    f"not {getattr(self, name)!r}.")
        if self.freeze_epochs + self.epochs < 1:
            raise TrainingError("Nothing to train: set at least one epoch (frozen or unfrozen).")
        if not self.valid_list and not 0 < self.valid_pct < 1:
            raise TrainingError(f"The validation share must be between 0 and 1, not {self.valid_pct}.")
        if not 0 <= self.test_pct < 0.9:
            raise TrainingError(f"The test share must be at least 0 (none) and below 0.9, not {self.test_pct}.")
        if self.unlabeled and not 0.5 <= self.unlabeled_threshold < 1:
            raise TrainingError(f"The pseudo-label confidence must be at least 0.5 and below 1 (e.g. 0.9), "
                                f"not {self.unlabeled_threshold}.")
        if self.lr is not None and not 0 < self.lr < 1:
            raise TrainingError(f"The learning rate must be between 0 and 1 (e.g. 2e-3), not {self.lr}.")
        return self


# --- the parent side: one run, watched ------------------------------------------------------

class TrainingRun:
    """One lr_find or fine-tune in a child process, and everything heard from it so far.

    Read by polling: `stage`, `epoch`/`epochs`, `step`/`steps`, `loss`, `history` (one dict per epoch:
    train_loss, valid_loss and the task's metrics), `lr_find` (lrs, losses, suggestion), `mapped` (images done
    and total while the fine-tuned network maps every image: `labeler.model_layer`), `record`
    (the finished model's, see `model_store`), `error`, `finished`, `stopped`, `eta`.
    """

    def __init__(self, kind: str, folder, workspace, spec: TrainSpec, snapshot: dict | None,
                 model_dir: Path | None):
        self.kind, self.spec, self.model_dir = kind, spec, model_dir
        self.stage, self.epoch, self.epochs, self.step, self.steps = "starting", 0, 0, 0, 0
        self.loss = math.nan
        self.history: list[dict] = []
        self.lr_find: dict | None = None
        self.mapped: tuple[int, int] | None = None  # images mapped by the fine-tuned network so far, of how many
        self.record: dict | None = None
        self.error: str | None = None
        self.finished = self.stopped = False
        self.started = time.monotonic()
        self._trained_since: float | None = None
        job = {"kind": kind, "spec": dataclasses.asdict(spec), "folder": str(folder), "workspace": str(workspace),
               "snapshot": snapshot, "model_dir": None if model_dir is None else str(model_dir)}
        # a fresh interpreter (not fork: a server's threads; not multiprocessing's spawn: it re-runs a script
        # that has no main guard), talking JSON lines over its stdin and stdout
        self._process = subprocess.Popen([sys.executable, "-m", "labeler._training_child"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        self._send(json.dumps(job))
        self._listener = threading.Thread(target=self._listen, daemon=True, name=f"labeler-{kind}-listener")
        self._listener.start()

    @property
    def running(self) -> bool:
        return not self.finished

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left, from the batches done so far (None until there are some)."""
        if not self.steps or not self.step or self._trained_since is None:
            return None
        spent = time.monotonic() - self._trained_since
        return spent / self.step * (self.steps - self.step)

    def stop(self) -> None:
        """End after the current batch; a fine-tune keeps its best epoch so far."""
        if not self.finished:
            self.stopped = True
            self._send("stop")

    def _send(self, line: str) -> None:
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # it has ended: the listener says how
            pass

    def join(self, timeout: float | None = None) -> bool:
        self._listener.join(timeout)
        return self.finished

    def _listen(self) -> None:
        try:
            for line in self._process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    logger.warning("training process said %r", line.rstrip())
                    continue
                if self._take(message):
                    break
            code = self._process.wait()
            if self.stage not in ("finished", "failed"):
                self.stage = "stopped" if self.stopped and code == 0 else "failed"
                self.error = None if self.stage == "stopped" else (
                    f"The training process ended unexpectedly (exit code {code}); the server log may say why.")
        finally:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            if self.model_dir is not None and self.record is None:
                from .model_store import ModelStore
                ModelStore(self.model_dir.parent.parent).discard_unfinished(self.model_dir)
            self.finished = True

    def _take(self, message: dict) -> bool:
        """Apply one message from the child; True when it was the last."""
        kind = message.pop("type")
        if kind == "stage":
            self.stage = message["stage"]
            self.epochs, self.steps = message.get("epochs", self.epochs), message.get("steps", self.steps)
        elif kind == "batch":
            self._trained_since = self._trained_since or time.monotonic()
            self.epoch, self.step, self.loss = message["epoch"], message["step"], message["loss"]
        elif kind == "epoch":
            self.history.append(message)
        elif kind == "lr_find":
            self.lr_find = message
        elif kind == "mapped":
            self.mapped = (message["done"], message["total"])
        elif kind in ("done", "error"):
            self.record, self.error = message.get("record"), message.get("message")
            self.stage = "finished" if kind == "done" else "failed"
            return True
        return False


_RUNS: dict[str, TrainingRun] = {}
_RUNS_LOCK = threading.Lock()


def current_training(project) -> TrainingRun | None:
    """The project's latest run in this process (running or finished), for every tab of the project."""
    with _RUNS_LOCK:
        return _RUNS.get(_key(project))


def start_training(project, spec: TrainSpec, kind: str = "fine_tune") -> TrainingRun:
    """Start `kind` ("fine_tune" or "lr_find") of `spec` for `project`.

    Raises:
        TrainingError: another training of this project runs, the settings are wrong, or there is nothing
            to train on.
    """
    from .model_store import ModelStore
    if kind not in ("fine_tune", "lr_find"):
        raise TrainingError(f"Unknown training kind {kind!r}: fine_tune or lr_find.")
    spec.check()
    snapshot = _store_snapshot(project) if spec.source == "store" else None
    with _RUNS_LOCK:
        running = _RUNS.get(_key(project))
        if running is not None and running.running:
            what = "finding a learning rate" if running.kind == "lr_find" else "fine-tuning"
            raise TrainingError(f"This project is already {what} (started {running.elapsed:.0f} s ago). "
                                f"Wait for it or stop it first.")
        model_dir = ModelStore(project.workspace.root).new_dir() if kind == "fine_tune" else None
        run = TrainingRun(kind, project.folder, project.workspace.root, spec, snapshot, model_dir)
        _RUNS[_key(project)] = run
    return run


def _key(project) -> str:
    return str(Path(project.workspace.root).resolve())


def _store_snapshot(project) -> dict:
    """The project's labels now, as {"items": [...], "targets": [...], "labels": n}: the child trains on this
    snapshot (labels made while it trains wait for the next fine-tune)."""
    labels = project.labels
    if labels.empty:
        raise TrainingError("No labels yet: label some images first (a few dozen per label at least).")
    multi = project.multi_label
    targets = [list(tags) for tags in labels["labels"]] if multi else [str(label) for label in labels["label"]]
    present = {item.path for item in project.items if not item.missing}
    rows = [(name, target) for name, target in zip(labels["image_name"], targets) if name in present]
    if len({str(t) for _, t in rows}) < 2:
        raise TrainingError("A classifier needs at least two labels with images; label images of another kind.")
    return {"items": [name for name, _ in rows], "targets": [target for _, target in rows], "labels": len(rows)}
