"""The fine-tuned network back in the map: its pooled features as a layer of its own, its predictions for the labeler.

When a fine-tune of the project's labels finishes, its training process runs the fine-tuned network over every
image of the project once (`build_model_layer`) and keeps two things:

- the body's last feature map, pooled as every ImageNet layer is (`engine.pooling`), in a feature cache of its
  own, `WORKSPACE/features/model-N-<size>/` (one layer, `LAYER`), written like the backbone's cache and marked
  complete last, so a half-computed layer is never offered;
- its class probabilities for every image, in the label store under the model's id (`model-N`): the latest
  stored predictions are the ones the Predicted view, vary opacity, Check predictions and Accept use.

`ModelLayer.current(workspace_root)` is the current model's layer when it is complete, or None. The session offers it at
the end of the ←/→ order, named after the model (`fine-tuned model-3`), with the same views as any layer.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.features import DONE, FeatureCache

logger = logging.getLogger(__name__)

LAYER = "fine-tuned"
BATCH = 32


def layer_cache(workspace_root, model_id: str, size: int) -> FeatureCache:
    """The feature cache of model `model_id`'s layer (the model's image size keys it, as a backbone's)."""
    return FeatureCache(Path(workspace_root) / "features" / f"{model_id}-{size}", backbone=model_id, size=size)


def fit_temperature(probs, targets, *, least: int = 10) -> float:
    """The temperature T that makes softmax(log(probs) / T) most likely for the true classes `targets` (validation
    images): T < 1 sharpens, T > 1 softens. A model trained with label smoothing is kept from being sure (0.1 over
    10 classes caps its confidence near 0.91), so a check at 0.95 would find nothing to check; after scaling, its
    confidence says how often it is right. 1.0 (no change) with fewer than `least` images."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    if len(targets) < least:
        return 1.0
    rows = np.arange(len(targets))

    def nll(temperature: float) -> float:
        return float(-np.log(np.maximum(_scaled(probs, temperature)[rows, targets], 1e-300)).mean())
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    return float(min(grid, key=nll))


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature), row by row (float32)."""
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float32)
    return _scaled(probs, temperature).astype(np.float32)


def _scaled(probs, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature) in float64: the one formula `fit_temperature` and `calibrated` share."""
    scaled = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    scaled = np.exp(scaled - scaled.max(1, keepdims=True))
    return scaled / scaled.sum(1, keepdims=True)


def build_model_layer(predictor, workspace, model_id: str, *, temperature: float = 1.0, progress=None,
                      stop=None, model_file=None, ray: str | None = None) -> dict:
    """Run the fine-tuned `predictor` over every present image of `workspace` (an engine Workspace): its pooled
    features become model `model_id`'s layer, its probabilities (a single-label classifier; scaled by `temperature`,
    see `fit_temperature`) the store's newest predictions. `progress(done, total)` hears about the images; `stop()`
    True abandons the layer (nothing is offered). With `ray` (an address) and the model's exported `model_file`,
    the forward passes run on that Ray cluster (`engine.ray_predict`). Returns {"images", "predictions",
    "temperature"}, or {} when stopped."""
    from .store import LabelStore
    items = [item for item in workspace.items() if not item.missing]
    stale = layer_cache(workspace.root, model_id, predictor.size).dir
    shutil.rmtree(stale, ignore_errors=True)       # left by an earlier model of this number that did not finish
    cache = layer_cache(workspace.root, model_id, predictor.size)
    by_path = {item.path: item for item in items}
    total, done = len(items), 0
    rows, probs = [], []
    arrays = None
    for path, feature, output in _embedded(predictor, workspace.folder, list(by_path), model_file, ray):
        if arrays is None:       # the width is known from the first image
            cache.prepare([LAYER], {LAYER: int(feature.numel())}, len(workspace.items()))
            arrays = cache.open_for_writing()
        item = by_path[path]
        arrays[LAYER][item.id] = feature.numpy().astype(np.float16)
        cache.mark(item.id, item.size if item.size is not None else -1,
                   item.mtime_ns if item.mtime_ns is not None else -1, DONE)
        rows.append(item.id)
        probs.append(output.numpy())
        done += 1
        if progress is not None and (done % BATCH == 0 or done == total):
            progress(done, total)
        if stop is not None and done % BATCH == 0 and stop():
            return {}
    if arrays is None:
        return {}
    cache.meta["complete"] = True
    cache.flush(arrays)
    predicted = 0
    if predictor.task.one_label and predictor.labels:      # the checks and Accept take one label an image
        store = LabelStore(workspace.db_path)
        try:
            store.set_predictions(model_id, rows, list(predictor.labels), calibrated(np.stack(probs), temperature))
        finally:
            store.close()
        predicted = len(rows)
    return {"images": len(rows), "predictions": predicted, "temperature": round(temperature, 4)}


def _embedded(predictor, folder, paths: list[str], model_file, ray: str | None):
    """(path, pooled features, output) per readable image: on the Ray cluster at `ray`, or here."""
    from engine.ray_embed import ray_or_say_why_not
    if ray is not None and model_file is not None and ray_or_say_why_not("mapping every image"):
        from engine.ray_predict import ray_outputs
        return ((path, feature, output) for path, _, output, _, feature
                in ray_outputs(model_file, folder, paths, embedded=True, batch_size=BATCH, address=ray))
    return predictor.embedded_outputs(folder, paths, batch_size=BATCH)


@dataclass(frozen=True)
class ModelLayer:
    """A finished model's layer in the map: `name` in the ←/→ order, `title` for people, `cache` (its one layer is
    `LAYER`)."""

    model_id: str
    labels: int
    cache: FeatureCache

    @property
    def name(self) -> str:
        return f"fine-tuned {self.model_id}"

    @property
    def title(self) -> str:
        return f"the network fine-tuned on your {self.labels:,} labels"

    @classmethod
    def current(cls, workspace_root) -> ModelLayer | None:
        """The current model's layer if it has a complete one, else None."""
        from .model_store import ModelStore
        store = ModelStore(workspace_root)
        model_id = store.current_id
        if model_id is None:
            return None
        record = store.record(model_id)
        if not _task(record).per_label_scores:      # a U-Net or a regressor: not trained on the store's labels
            return None
        cache = layer_cache(workspace_root, model_id, int(record.get("size", 0)))
        if not cache.meta.get("complete"):
            return None
        return cls(model_id, int(record.get("labels", 0)), cache)


def _task(record: dict):
    from engine.errors import EngineError
    from engine.tasks import Task, get_task
    try:
        return get_task(str(record.get("task")))
    except EngineError:
        return Task


def describe_model(workspace_root, model_id: str | None) -> str:
    """Which model's predictions the labeler shows, for people: a fine-tuned one with its label count and its
    validation accuracy on a random held-out share of those labels, or Train's quick model."""
    from .model_store import ModelStore, ModelStoreError
    if model_id is None:
        return "no model yet"
    if model_id.startswith("first-"):
        tuned = model_id.partition("+")[2]
        return ("Train's quick model (a logistic regression on the cached ImageNet features"
                + (f" and the layer of fine-tuned {tuned.replace('-', ' ')})" if tuned else ")"))
    try:
        record = ModelStore(workspace_root).record(model_id)
    except ModelStoreError:
        return f"model {model_id!r}"
    text = f"fine-tuned {model_id.replace('-', ' ')} ({record.get('labels', 0):,} labels"
    accuracy, interval = record.get("metrics", {}).get("accuracy"), record.get("intervals", {}).get("accuracy")
    if accuracy is not None:
        text += f"; {accuracy:.0%} right on {record.get('valid', 0):,} of them held out at random"
        if interval:
            text += f", 95% interval {interval[0]:.0%}-{interval[1]:.0%}"
    return text + ")"


def make_predictions_latest(store, model_id: str) -> bool:
    """Make `model_id`'s stored predictions the latest (the ones the labeler uses), as when a model is chosen as
    the current one; False when it stored none (a U-Net, a regressor, a multi-label classifier)."""
    if model_id not in store.prediction_models():
        return False
    _, classes, ids, probs = store.predictions(model_id)
    store.set_predictions(model_id, ids, classes, probs)
    return True
