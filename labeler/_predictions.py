"""Model predictions, kept apart from human labels: one row per model, arrays stored as blobs."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from ._labels import validate_name
from .errors import LabelStoreError


def model_id_for_file(path) -> str:
    """The id a model file's predictions are stored under: its name and a short hash of its bytes
    (`pets-3f2a9c1e`), so retraining to the same path stores a new model and the same file replaces its own."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:8]}"


def validate_predictions(model_id, item_ids, classes, probs) -> tuple[str, np.ndarray, list[str], np.ndarray]:
    """Checked copies: model id text, int64 ids (unique, >= 0), class names, float32 (n, k) in [0, 1]."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise LabelStoreError(f"model_id {model_id!r} must be non-empty text, e.g. 'logreg-features.13'.")
    ids = np.asarray(item_ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise LabelStoreError(f"item_ids must be a 1-D sequence of integer item ids, got shape {ids.shape} "
                              f"of {ids.dtype}.")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
        raise LabelStoreError("item_ids must be distinct non-negative item ids (one row of probs per item).")
    names = [validate_name(name) for name in classes]
    if len(set(names)) != len(names):
        raise LabelStoreError(f"classes {names!r} repeat a name; give each column of probs one distinct class.")
    values = np.asarray(probs, dtype=np.float32)
    if values.shape != (ids.size, len(names)):
        raise LabelStoreError(f"probs has shape {values.shape}; expected (len(item_ids), len(classes)) = "
                              f"({ids.size}, {len(names)}).")
    if values.size and (not np.isfinite(values).all() or values.min() < -1e-5 or values.max() > 1 + 1e-5):
        raise LabelStoreError("probs must be probabilities in [0, 1] (apply softmax or sigmoid to logits first).")
    return model_id.strip(), ids, names, np.clip(values, 0.0, 1.0)   # rounding error of a softmax is tolerated


def write_predictions(conn: sqlite3.Connection, model_id: str, ids: np.ndarray, classes: list[str],
                      probs: np.ndarray) -> None:
    """Replace `model_id`'s predictions; the new row becomes the latest model."""
    conn.execute("DELETE FROM predictions WHERE model_id=?", (model_id,))
    conn.execute("INSERT INTO predictions (model_id, classes, n_items, item_ids, probs, created) VALUES (?,?,?,?,?,?)",
                 (model_id, json.dumps(classes), int(ids.size), ids.astype("<i8").tobytes(),
                  np.ascontiguousarray(probs, dtype="<f4").tobytes(), time.time()))


def read_predictions(conn: sqlite3.Connection, model_id: str | None):
    """(model_id, classes, item_ids, probs) of `model_id` (the latest model when None), or None if none exist."""
    if model_id is None:
        row = conn.execute("SELECT model_id, classes, n_items, item_ids, probs FROM predictions "
                           "ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
    else:
        row = conn.execute("SELECT model_id, classes, n_items, item_ids, probs FROM predictions WHERE model_id=?",
                           (model_id,)).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT model_id FROM predictions ORDER BY seq")]
            raise LabelStoreError(f"No predictions stored for model {model_id!r}; stored models: "
                                  f"{', '.join(map(repr, known)) or 'none'}. Call set_predictions first.")
    found_id, classes, n_items, id_bytes, prob_bytes = row
    classes = json.loads(classes)
    ids = np.frombuffer(id_bytes, dtype="<i8").astype(np.int64)
    probs = np.frombuffer(prob_bytes, dtype="<f4").astype(np.float32).reshape(n_items, len(classes))
    return found_id, classes, ids, probs


def confident_labels(classes: list[str], ids: np.ndarray, probs: np.ndarray, threshold: float,
                     multi_label: bool) -> dict[int, list[str]]:
    """Per item, the classes predicted with probability >= threshold (single-label: the top class only)."""
    if multi_label:
        hits = probs >= threshold
        return {int(item): [classes[k] for k in np.flatnonzero(row)] for item, row in zip(ids, hits) if row.any()}
    if not probs.shape[1]:
        return {}
    best = probs.argmax(axis=1)
    keep = probs[np.arange(len(ids)), best] >= threshold
    return {int(item): [classes[k]] for item, k in zip(ids[keep], best[keep])}


def check_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise LabelStoreError(f"threshold {threshold!r} must be a probability between 0 and 1, e.g. 0.9.")
    return value
