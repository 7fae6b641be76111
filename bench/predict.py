"""Prediction throughput: `Predictor.outputs` (batches of images decoded and resized by DataLoader worker
processes) versus the loop it replaced (`Predictor.predict` on one path at a time), on the same images with the
same model in the same run. Both end in the same result per image (label and probabilities), and the script checks
that they agree: the same label for every image, probabilities within 1e-4.

The model is a classifier on mobilenet_v2 with its pretrained body (random with --random-weights) and a head that
is untrained, or trained --epochs epochs with the body frozen on the folder names of the images timed.

    .venv/bin/python bench/predict.py [--data ../shared/data] [--images 2000] [--size 64] [--batch-size 32]
                                      [--workers N] [--threads N] [--epochs 0] [--device cpu|cuda] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import Learner, Predictor, RandomSplit, build_data, create_model, label_from_folder  # noqa: E402
from engine._workers import default_workers  # noqa: E402
from engine.predictor import prediction_workers  # noqa: E402
from engine.backbones import DEFAULT_BACKBONE, get_backbone_cfg  # noqa: E402
from engine.data import discover_images  # noqa: E402
from engine.tasks import ClassifyTask  # noqa: E402


def sample_paths(folder: Path, n: int, seed: int = 0) -> list[str]:
    """`n` of the folder's images, drawn at random (the same ones for a seed), in sorted order."""
    paths = discover_images(folder)
    chosen = np.random.default_rng(seed).permutation(len(paths))[:n]
    return sorted(paths[i] for i in chosen)


def make_predictor(folder: Path, paths: list[str], args) -> Predictor:
    """One classifier for both methods: pretrained body, head untrained or trained `args.epochs` epochs frozen."""
    classes = sorted({Path(path).parent.name for path in paths})
    model = create_model("classify", args.backbone, len(classes), pretrained=not args.random_weights)
    if not args.epochs:
        cfg = get_backbone_cfg(args.backbone)
        model = model.to(args.device, memory_format=torch.channels_last)  # as load_exported and the Learner place it
        return Predictor(model, ClassifyTask(), classes, args.size, cfg.mean, cfg.std)
    data = build_data(folder, paths, RandomSplit(0.2), label_from_folder, size=args.size, batch_size=args.batch_size,
                      backbone=args.backbone, augment=False, workers=default_workers())
    learner = Learner(data, model, device=args.device)
    learner.freeze()
    learner.fit_one_cycle(args.epochs, 2e-3)
    print(f"trained the head {args.epochs} epoch(s): {learner.last_metrics}", file=sys.stderr)
    return Predictor.from_learner(learner)


def one_at_a_time(predictor: Predictor, folder: Path, paths: list[str]) -> tuple[float, list[dict]]:
    """Seconds for the loop `labeler predict` ran before: `Predictor.predict` per path."""
    start = time.perf_counter()
    results = [predictor.predict(folder / path) for path in paths]
    return time.perf_counter() - start, results


def batched(predictor: Predictor, folder: Path, paths: list[str], batch_size: int, workers: int):
    """Seconds for `Predictor.outputs` and the same decoding of each output."""
    start = time.perf_counter()
    results = [predictor.task.decode(output, size, predictor.labels)
               for _, size, output in predictor.outputs(folder, paths, batch_size=batch_size, workers=workers)]
    return time.perf_counter() - start, results


def agreement(first: list[dict], second: list[dict]) -> dict:
    """How far two lists of classifier results differ: labels that differ, the largest probability difference."""
    differ = sum(a["label"] != b["label"] for a, b in zip(first, second)) + abs(len(first) - len(second))
    gap = max((abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(first, second)
               for k in a["probabilities"]), default=0.0)
    return {"labels_differ": differ, "max_probability_gap": gap, "agree": differ == 0 and gap < 1e-4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--images", type=int, default=2000, help="how many cifar10 images (default 2000)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--size", type=int, default=64, help="the model's input size (default 64)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: none on 1-2 cores, else the cores but two, at most 4)")
    parser.add_argument("--epochs", type=int, default=0, help="train the head this many epochs first (default 0)")
    parser.add_argument("--random-weights", action="store_true", help="no pretrained body (no weights needed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(args.data) / "cifar10"
    if not folder.exists():
        sys.exit(f"{folder} is absent: this benchmark needs ../shared/data/cifar10")
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = prediction_workers() if args.workers is None else args.workers
    paths = sample_paths(folder, args.images)
    predictor = make_predictor(folder, paths, args)
    predictor.predict(folder / paths[0])                        # first-call costs (allocations) out of both times
    single_s, single = one_at_a_time(predictor, folder, paths)
    batch_s, batch = batched(predictor, folder, paths, args.batch_size, workers)
    results = {"settings": {**vars(args), "workers": workers, "cores": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()},
               "rows": [{"method": "one at a time (Predictor.predict per path)", "images": len(single),
                         "seconds": single_s},
                        {"method": f"batched (Predictor.outputs, batch {args.batch_size}, {workers} worker(s))",
                         "images": len(batch), "seconds": batch_s}],
               "agreement": agreement(single, batch)}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(results)
    if not results["agreement"]["agree"]:
        sys.exit(f"the two methods disagree: {results['agreement']}")


def print_table(results: dict) -> None:
    s = results["settings"]
    print(f"\nPrediction, {s['backbone']} classifier at {s['size']} px on cifar10, device {s['device']}, "
          f"{s['cores']} cores, {s['torch_threads']} torch threads\n")
    print("| method | images | seconds | images/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = results["rows"][0]["seconds"]
    for row in results["rows"]:
        print(f"| {row['method']} | {row['images']} | {row['seconds']:.1f} | {row['images'] / row['seconds']:.0f} | "
              f"{base / row['seconds']:.1f}x |")
    agreement = results["agreement"]
    print(f"\nsame label for every image: {agreement['labels_differ'] == 0}; largest probability difference "
          f"{agreement['max_probability_gap']:.1e}")


if __name__ == "__main__":
    main()
