"""The child process of a `labeler.finetune.TrainingRun` (`python -m labeler._training_child`): it builds
the data and the learner, trains, measures and exports the result into the model's folder.

The parent writes the job as one JSON line on stdin, then "stop" lines when the person presses Stop
(end of input, a parent gone, stops too). The child answers with JSON lines on its stdout, which
carries nothing else (anything a library prints goes to stderr): dicts with a "type": stage (what it
does now, with the epochs and batches to come), batch (at most every REPORT_EVERY_S), epoch (the
losses and the task's metrics), lr_find (the curve and its suggestion), then done (with the model's
record) or error (a message for a person). A separate process, not a thread: the app's server keeps
its interpreter lock and, at a lower priority, its cores.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from engine.learner import Callback

from .errors import USER_ERRORS

logger = logging.getLogger(__name__)

REPORT_EVERY_S = 0.25
LR_BOUNDS = (1e-4, 1e-2)  # the suggestion the rate field takes is clamped as `Learner.suggest_lr` does
PICTURE_QUALITY = 88


def main() -> None:
    """Read the job from stdin, run it, answer on stdout; stdin's "stop" lines (or its end) ask to stop."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what anything else prints goes to the log
    os.nice(10)  # the person's clicks come first
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    job = json.loads(sys.stdin.readline())
    stop = _Stops()

    def listen():
        for line in sys.stdin:
            if line.strip() == "stop":
                stop.ask()
                if job["kind"] == "lr_find":
                    os._exit(0)    # a curve nobody waits for: end now (a fine-tune ends after its batch, saved)
        stop.ask(closed=True)      # the parent closed our input or is gone
        if job["kind"] == "lr_find":
            os._exit(0)
    threading.Thread(target=listen, daemon=True).start()
    run_child(job["kind"], job["spec"], job["folder"], job["workspace"], job["snapshot"], job["model_dir"],
              _Lines(protocol), stop)


class _Stops:
    """The parent's stop requests: the first ends the training after its batch (`is_set`); one that comes while
    every image is being mapped (`since(count)`) abandons the map and keeps the model."""

    def __init__(self):
        self.count, self.closed = 0, False
        self._event = threading.Event()

    def ask(self, closed: bool = False) -> None:
        self.count += 1
        self.closed = self.closed or closed
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def since(self, count: int):
        """A callable: True once a stop was asked after `count` requests (or the parent is gone)."""
        return lambda: self.closed or self.count > count


class _Lines:
    """`put(message)`: one JSON line to the parent."""

    def __init__(self, stream):
        self.stream = stream

    def put(self, message: dict) -> None:
        self.stream.write(json.dumps(message) + "\n")
        self.stream.flush()


def run_child(kind, spec, folder, workspace, snapshot, model_dir, out, stop) -> None:
    """Run `kind` ("lr_find" or "fine_tune") of `spec` (a TrainSpec as a dict); everything is reported to `out`
    (`put(dict)`); `stop` (a `_Stops`, or an Event) asks a fine-tune to end after the current batch."""
    spec = SimpleNamespace(**spec)
    try:
        learner, held_out = _learner(spec, Path(folder), Path(workspace), snapshot)
        if kind == "lr_find":
            out.put({"type": "stage", "stage": "finding the learning rate"})
            lrs, losses, suggestion = learner.lr_find(steps=min(100, max(10, 4 * len(learner.data.train))))
            out.put({"type": "lr_find", "lrs": lrs, "losses": losses, "steepest": suggestion,
                     "suggestion": float(min(max(suggestion, LR_BOUNDS[0]), LR_BOUNDS[1]))})
            out.put({"type": "done", "record": None})
            return
        keep, reporter = _KeepBest(), _Reporter(out, stop, spec, len(learner.data.train))
        learner.callbacks += [reporter, keep]
        out.put({"type": "stage", "stage": "training", "epochs": spec.freeze_epochs + spec.epochs,
                 "steps": reporter.steps})
        lr = learner.fine_tune(spec.epochs, spec.lr, spec.freeze_epochs)
        lr = lr * 2 if spec.freeze_epochs else lr  # the peak rate of the head-only stage, as the rate field means
        keep.restore(learner)
        out.put({"type": "stage", "stage": "measuring and exporting"})
        labels = snapshot["labels"] if snapshot else len(learner.data.items_train) + len(learner.data.items_valid)
        record = finish_model(learner, Path(model_dir), spec=vars(spec), labels=labels, lr=lr,
                              stopped=reporter.stopped, history=reporter.history, best_epoch=keep.epoch,
                              test=held_out(learner) if held_out else None)
        if snapshot is not None and learner.task.per_label_scores:   # a classifier of the store's labels
            record = _map_every_image(learner, Path(folder), Path(workspace), Path(model_dir), record, out,
                                      stop.since(stop.count) if isinstance(stop, _Stops) else stop.is_set)
        out.put({"type": "done", "record": record})
    except USER_ERRORS as err:
        out.put({"type": "error", "message": str(err)})
    except Exception as err:  # a bug: the log gets the traceback, the person a short message
        logger.exception("training failed")
        out.put({"type": "error", "message": f"{type(err).__name__}: {err} (the server log has the details)"})


def _map_every_image(learner, folder: Path, workspace: Path, model_dir: Path, record: dict, out, stop) -> dict:
    """The fine-tuned network's layer of the map and its predictions for every image (`labeler.model_layer`);
    the record says what was made (`layer`: images mapped and predicted, None when stopped)."""
    from engine import Workspace
    from engine.interpret import Interpretation
    from engine.predictor import Predictor

    from .model_layer import build_model_layer, fit_temperature
    from .model_store import MODEL_FILE, write_record
    from .project import RAY_ADDRESS_VARIABLE
    out.put({"type": "stage", "stage": "mapping every image with the fine-tuned network"})
    temperature = 1.0
    if learner.task.one_label:       # its confidence made honest on the validation images
        valid = Interpretation.from_learner(learner)
        temperature = fit_temperature(valid.outputs.numpy(), valid.targets.numpy())
    made = build_model_layer(Predictor.from_learner(learner), Workspace(folder, workspace), model_dir.name, stop=stop,
                             temperature=temperature, model_file=model_dir / MODEL_FILE,
                             ray=os.environ.get(RAY_ADDRESS_VARIABLE) or None,
                             progress=lambda done, total: out.put({"type": "mapped", "done": done, "total": total}))
    return write_record(model_dir, {**record, "layer": made or None})


def _learner(spec, folder: Path, workspace: Path, snapshot: dict | None):
    import numpy as np
    import torch

    from engine import Learner, build_data, create_model
    from engine.data import discover_images
    from engine.learner import task_for

    from .held_out import split_off_test, test_scores
    from .training import _labels, _splitter
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    args = SimpleNamespace(**vars(spec), folders=False, csv=None, delimiter=None, workspace=str(workspace))
    if snapshot is not None:
        items, labeler = list(snapshot["items"]), dict(zip(snapshot["items"], snapshot["targets"])).__getitem__
    else:
        items, labeler = _labels(args, folder, discover_images(folder))
    all_labeled = items
    items, test_items = split_off_test(SimpleNamespace(test_list=None, test_pct=getattr(spec, "test_pct", 0.0),
                                                       group_regex=spec.group_regex, test_seed=0), items)
    data = build_data(folder, items, _splitter(args), labeler, size=spec.size, batch_size=spec.batch_size,
                      backbone=spec.backbone, augment=spec.augment, seed=spec.seed)
    task = task_for(data, label_smoothing=spec.label_smoothing, loss="mse",
                    class_weights=getattr(spec, "class_weights", None))
    learner = Learner(data, create_model(data.task, spec.backbone, data.n_out), task=task)
    if getattr(spec, "unlabeled", False):     # the images without a label (at the start of the run) too
        labeled = set(all_labeled)         # test images are labeled: never pseudo-labeled
        learner.use_unlabeled([image for image in discover_images(folder) if image not in labeled],
                              threshold=spec.unlabeled_threshold, ratio=spec.unlabeled_ratio)
    # the test split, scored once when training is done (labeler.held_out.test_scores); None without one
    held_out = (lambda trained: test_scores(trained, folder, test_items, labeler, tta=True)) if test_items else None
    return learner, held_out


class _Reporter(Callback):
    """Batches and epochs to the parent; a stop request ends the batch loop (the learner checks `stop`)."""

    def __init__(self, out, stop, spec, batches: int):
        self.out, self.stop_event = out, stop
        self.steps = (spec.freeze_epochs + spec.epochs) * batches
        self.done_steps = self.epoch = 0
        self.stopped = False
        self.history: list[dict] = []
        self._last = 0.0

    def on_train_batch_end(self, learner):
        self.done_steps += 1
        if self.stop_event.is_set():
            learner.stop = self.stopped = True
        now = time.monotonic()
        if now - self._last >= REPORT_EVERY_S or learner.stop or self.done_steps == self.steps:
            self._last = now
            self.out.put({"type": "batch", "epoch": self.epoch, "step": self.done_steps, "loss": float(learner.loss)})

    def on_epoch_end(self, learner):
        row = {"epoch": self.epoch, "frozen": learner.frozen, "partial": self.stopped,
               **{k: float(v) for k, v in learner.last_metrics.items() if k != "epoch"}}
        self.history.append(row)
        self.out.put({"type": "epoch", **row})
        self.epoch += 1


class _KeepBest(Callback):
    """The weights of the epoch with the lowest validation loss, over both stages of a fine-tune."""

    def __init__(self):
        self.best, self.state, self.epoch, self._seen = math.inf, None, -1, 0

    def on_epoch_end(self, learner):
        loss = learner.last_metrics.get("valid_loss", math.inf)
        if loss < self.best:
            self.best, self.epoch = loss, self._seen
            self.state = {k: v.detach().cpu().clone() for k, v in learner.model.state_dict().items()}
        self._seen += 1

    def restore(self, learner) -> None:
        if self.state is not None:
            learner.model.load_state_dict(copy.deepcopy(self.state))


def finish_model(learner, folder: Path, *, spec: dict, labels: int, lr: float, stopped: bool, history: list,
                 best_epoch: int, top: int = 16, test: dict | None = None) -> dict:
    """Measure the trained `learner` (metrics with 95% intervals, flips, the baseline, confusion, top losses
    with and without heatmaps), export it into `folder` and write its record last. Returns the record.
    `test`: the held-out test split's scores (`labeler.held_out.test_scores`), kept as they are."""
    from engine.interpret import Interpretation
    from engine.metrics import bootstrap_intervals
    from engine.tta import applies

    from .model_store import MODEL_FILE, write_record
    interp = Interpretation.from_learner(learner)
    task, data = learner.task, learner.data
    metrics = _floats(learner.validate())
    score = copy.deepcopy(task).metrics  # a multi-label task tunes its threshold while scoring
    intervals = bootstrap_intervals(score, interp.outputs, interp.targets)
    record = {
        "task": task.name, "backbone": spec["backbone"], "size": data.size, "labels": labels,
        "train": len(data.items_train), "valid": len(data.items_valid), "lr": lr, "stopped": stopped,
        "best_epoch": best_epoch, "spec": spec, "history": history, "metrics": metrics,
        "intervals": {k: list(v) for k, v in intervals.items() if k in metrics and k != "threshold"},
        "metrics_tta": _floats(learner.validate(tta=True)) if task.can_unflip else None,
        "metrics_tta_zoom": _floats(learner.validate(tta="zoom")) if applies(task, "zoom") else None,
        "baseline": _floats(learner.baseline() or {}) or None,
        "classes": list(data.classes or data.codes or []),
        "top_losses": _top_losses(interp, folder, top),
    }
    if test:
        record["test"] = test
    if (matrix := interp.confusion()) is not None:
        record["confusion"] = matrix.tolist()
        record["most_confused"] = [list(pair) for pair in interp.most_confused()[:10]]
        record["confusion_picture"] = _confusion_picture(interp, folder)
    learner.export(folder / MODEL_FILE)
    return write_record(folder, record)


def _floats(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()}


def _top_losses(interp, folder: Path, k: int) -> list[dict]:
    """The k worst validation items, each with its picture and its heatmap picture written under top/."""
    from PIL import Image
    (folder / "top").mkdir(exist_ok=True)
    rows = []
    for rank, row in enumerate(interp.top_losses(k).to_dict("records")):
        names = {}
        for kind, heatmap in (("picture", False), ("heatmap", True)):
            names[kind] = f"top/{rank:02d}-{kind}.jpg"
            Image.fromarray(interp.picture(row["row"], heatmap=heatmap)).save(folder / names[kind],
                                                                            quality=PICTURE_QUALITY)
        rows.append({"item": row["item"], "given": str(row["given"]), "predicted": str(row["predicted"]),
                     "loss": _number(row["loss"]), "probability": _number(row["probability"]), **names})
    return rows


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _confusion_picture(interp, folder: Path) -> str:
    from engine.plots import plot_confusion
    figure = plot_confusion(interp)
    figure.savefig(folder / "confusion.png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(figure)
    return "confusion.png"


if __name__ == "__main__":
    main()
