"""Does the fine-tuned network's layer group a person's classes better than the ImageNet layers?

A random subset of a labeled folder (300 images by default) is labeled in a fresh label store and fine-tuned on from
the app's own code path (`labeler.finetune.start_training`: a child process, the Model tab's defaults), which
maps every image into the new layer. Then, for the *other* images only (never trained on), per layer:

- 10-NN accuracy: each image's label by the majority of its 10 nearest other images (cosine, leave-one-out);
- vote from the labels: each image's label by the majority of its 10 nearest labeled images (what the map shows
  next to a person's labels);
- find similar's precision at 20: from 5 labeled images of one class, the 20 most similar unlabeled images
  (`engine.neighbors.find_similar`, as the app's button) and the share of the seeds' class among them,
  averaged over every class and 5 draws.

Every layer is read as the map reads it (`Session.features`: grid pooling).

And whose predictions of the other images are best for checks and Accept: the fine-tuned network's own (as stored,
temperature-scaled), Train's logistic regression on the ImageNet layers, and Train's on the ImageNet layers and
the fine-tuned layer (`Session.train` once a fine-tuned layer exists): accuracy, and the share of the images that
the surest predictions cover at 95% and at 90% precision (what Accept above a confidence can take).

    .venv/bin/python bench/finetuned_layer.py ../shared/data/cifar10 [--labels 300] [--seed 0] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # engine/ and labeler/ without an install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotate import fresh_project, prepare, truth_from_folders  # noqa: E402
from annotate.cli import _default_workspace  # noqa: E402
from engine import Workspace  # noqa: E402
from engine.backbones import DEFAULT_BACKBONE  # noqa: E402
from engine.embedding import DEFAULT_SIZE  # noqa: E402
from engine.neighbors import find_similar  # noqa: E402
from labeler.finetune import TrainSpec, start_training  # noqa: E402
from labeler.session import Session  # noqa: E402

K, SEEDS_PER_QUERY, TOP, DRAWS = 10, 5, 20, 5


def _unit(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = K) -> float:
    """Leave-one-out k-NN accuracy among the rows of x (cosine)."""
    unit = _unit(x)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    return float(np.mean([Counter(y[row]).most_common(1)[0][0] == label for row, label in zip(nearest, y)]))


def vote_accuracy(reference: np.ndarray, ref_y: np.ndarray, x: np.ndarray, y: np.ndarray, k: int = K) -> float:
    """Accuracy of each row of x labeled by the majority of its k nearest reference rows."""
    nearest = np.argpartition(-(_unit(x) @ _unit(reference).T), k, axis=1)[:, :k]
    return float(np.mean([Counter(ref_y[row]).most_common(1)[0][0] == label for row, label in zip(nearest, y)]))


def similar_precision(features, labeled: np.ndarray, truth: np.ndarray, rng) -> float:
    """Find similar from SEEDS_PER_QUERY labeled images of one class: the share of that class in the top TOP."""
    exclude = np.zeros(len(truth), dtype=bool)
    exclude[labeled] = True
    scores = []
    for label in np.unique(truth[labeled]):
        of_class = labeled[truth[labeled] == label]
        for _ in range(DRAWS):
            seeds = rng.choice(of_class, size=min(SEEDS_PER_QUERY, len(of_class)), replace=False)
            found, _ = find_similar(features, seeds, k=TOP, exclude=exclude)
            scores.append(float(np.mean(truth[found] == label)))
    return float(np.mean(scores))


def measure(folder: Path, workspace: Path, n_labels: int, seed: int, spec: TrainSpec) -> dict:
    base = prepare(folder, workspace, DEFAULT_BACKBONE, DEFAULT_SIZE)
    truth_by_path = truth_from_folders([item.path for item in Workspace(folder, workspace).items()])
    with fresh_project(base, f"finetuned-layer-{seed}") as project:
        paths = [item.path for item in project.items]
        truth = np.array([truth_by_path[p] for p in paths])
        rng = np.random.default_rng(seed)
        labeled = np.sort(rng.choice(len(paths), size=n_labels, replace=False))
        for label in np.unique(truth[labeled]):
            project.store.assign(labeled[truth[labeled] == label].tolist(), str(label))
        started = time.perf_counter()
        run = start_training(project, spec)
        run.join()
        seconds = time.perf_counter() - started
        if run.error:
            raise SystemExit(f"the fine-tune failed: {run.error}")
        session = Session(project)
        others = np.setdiff1d(session.rows, labeled)
        rows = []
        for layer in session.layers:
            features = session.features(layer)
            x = features[others]
            rows.append({"layer": layer, "knn": knn_accuracy(x, truth[others]),
                         "vote": vote_accuracy(features[labeled], truth[labeled], x, truth[others]),
                         "similar@20": similar_precision(features, labeled, truth, np.random.default_rng(seed))})
        record = run.record
        predictions = compare_predictions(session, truth, labeled, others)
    return {"folder": str(folder), "labels": n_labels, "seed": seed, "others": int(len(others)),
            "fine_tune_seconds": round(seconds, 1), "validation_accuracy": record["metrics"].get("accuracy"),
            "spec": {"size": spec.size, "freeze_epochs": spec.freeze_epochs, "epochs": spec.epochs, "lr": spec.lr},
            "layers": rows, "predictions": predictions}


def covered(probs: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The largest share of the images whose surest predictions (by top probability) are right at `precision`."""
    ok = right[np.argsort(-probs.max(1), kind="stable")]
    running = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    good = np.flatnonzero(running >= precision)
    return float((good[-1] + 1) / len(ok)) if len(good) else 0.0


def compare_predictions(session: Session, truth: np.ndarray, labeled: np.ndarray, others: np.ndarray) -> list[dict]:
    """On the images not labeled: the fine-tuned network's stored predictions against Train's model without and
    with the fine-tuned layer (`Session.train`, as the app's button)."""
    names, _ = session.human_labels()
    target = np.array([names.index(str(label)) for label in truth])
    found = []

    def add(name: str) -> None:
        classes, probs, has = session.row_predictions()
        full = np.zeros((len(session.rows), len(names)), dtype=np.float32)
        full[:, [names.index(c) for c in classes]] = probs
        at = np.searchsorted(session.rows, others)
        p, right = full[at], full[at].argmax(1) == target[others]
        found.append({"predictions": name, "model": session.latest_model(), "accuracy": float(right.mean()),
                      "covered@0.95": covered(p, right, 0.95), "covered@0.90": covered(p, right, 0.90)})

    add(f"the fine-tuned network ({session.latest_model()})")
    tuned, session.model_layer = session.model_layer, None
    session.train()
    add("Train on the ImageNet layers")
    session.model_layer = tuned
    session.train()
    add("Train on the ImageNet layers + the fine-tuned layer")
    return found


def table(report: dict) -> str:
    rows = report["layers"]
    best = max(rows[:-1], key=lambda row: row["knn"])
    tuned = rows[-1]
    lines = [f"{report['folder']}: {report['labels']} random labels (seed {report['seed']}), measured on the "
             f"{report['others']:,} other images; fine-tune {report['fine_tune_seconds']:.0f} s "
             f"(validation accuracy {report['validation_accuracy']:.3f})", "",
             "| layer | 10-NN accuracy | 10-NN vote of the labels | find similar precision@20 |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['layer']} | {row['knn']:.3f} | {row['vote']:.3f} | {row['similar@20']:.3f} |")
    ratio = {key: tuned[key] / best[key] for key in ("knn", "vote", "similar@20")}
    lines += ["", f"fine-tuned vs the best ImageNet layer ({best['layer']}): 10-NN {ratio['knn']:.2f}x, "
                  f"vote {ratio['vote']:.2f}x, find similar {ratio['similar@20']:.2f}x", "",
              "| predictions of the other images | accuracy | covered at 95% precision | at 90% |", "|---|---|---|---|"]
    for row in report["predictions"]:
        lines.append(f"| {row['predictions']} | {row['accuracy']:.3f} | {row['covered@0.95']:.3f} | "
                     f"{row['covered@0.90']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of images in one folder per class")
    parser.add_argument("--labels", type=int, default=300, help="random images labeled (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", type=Path, help="where features are kept (default: a folder in the temp dir)")
    parser.add_argument("--size", type=int, default=TrainSpec.size, help="fine-tune image size (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=TrainSpec.epochs, help="epochs of everything (default %(default)s)")
    parser.add_argument("--freeze-epochs", type=int, default=TrainSpec.freeze_epochs,
                        help="epochs of the head alone first (default %(default)s)")
    parser.add_argument("--lr", type=float, default=TrainSpec.lr, help="peak learning rate (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    workspace = args.workspace or _default_workspace(folder)     # the annotator's: the features are made once
    spec = TrainSpec(size=args.size, epochs=args.epochs, freeze_epochs=args.freeze_epochs, lr=args.lr, seed=args.seed)
    report = measure(folder, workspace, args.labels, args.seed, spec)
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
