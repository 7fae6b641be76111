"""Embedding and prediction on Ray beside the local path, in the same run, on the same real images (issue 18, part 3).

Both write a fresh feature cache of every offered layer (the default backbone and its real weights); the table
gives images per second for the local path, for Ray including its start (a new local instance, the actors
loading the network), and for Ray's forward passes alone (a second Ray run on a new cache, the instance and
its workers already up), the largest difference between the two caches, and what N machines would do from
the per-worker figure. Then prediction over the same images with an exported classifier (mobilenet_v2 with its
ImageNet body, at 128 px, as the Model tab fine-tunes it): `labeler predict`'s local path against
`engine.ray_predict` on the instance already up, and the largest difference between their outputs.

    .venv/bin/python bench/embed_ray.py [--folder ../shared/data/cifar10] [--limit 1000] [--cpus 2]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import FeatureCache, Workspace, embed  # noqa: E402


def _subset(source: Path, target: Path, limit: int) -> Path:
    from engine.data import discover_images
    for path in discover_images(source)[:limit]:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / path, target / path)
    return target


def _timed(ws: Workspace, **options) -> tuple[float, object]:
    start = time.perf_counter()
    result = embed(ws, **options)
    return time.perf_counter() - start, result


def _max_difference(a: Workspace, b: Workspace, result) -> float:
    caches = [FeatureCache(ws.features_dir(result.backbone, result.size), backbone=result.backbone, size=result.size)
              for ws in (a, b)]
    return max(float(np.abs(caches[0].load(layer, "avg").astype(np.float32)
                            - caches[1].load(layer, "avg").astype(np.float32)).max()) for layer in result.layers)


def _predict_both(folder: Path, model_file: Path) -> tuple[float, float, int, float]:
    """(local seconds, Ray seconds, images, largest output difference) of predicting every image of `folder`."""
    import torch

    from engine.data import discover_images
    from engine.predictor import load_exported
    from engine.ray_predict import ray_outputs
    from labeler.testing import exported_classifier
    exported_classifier(model_file, [str(i) for i in range(10)])
    paths = discover_images(folder)
    predictor = load_exported(model_file)
    start = time.perf_counter()
    here = [output for _, _, output, _ in predictor.labeled_outputs(folder, paths, None, batch_size=32)]
    local_s = time.perf_counter() - start
    start = time.perf_counter()
    there = [output for _, _, output, _, _ in ray_outputs(model_file, folder, paths, batch_size=32, address="local")]
    ray_s = time.perf_counter() - start
    difference = float((torch.stack(here) - torch.stack(there)).abs().max())
    return local_s, ray_s, len(here), difference


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--limit", type=int, default=1000, help="images taken from the folder (default 1000)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    args = parser.parse_args(argv)
    import ray
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _subset(args.folder, Path(tmp) / "images", args.limit)
        local_ws, first_ws, second_ws = (Workspace(folder, Path(tmp) / name) for name in ("local", "ray1", "ray2"))
        local_s, result = _timed(local_ws)
        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        init_s = time.perf_counter() - start
        first_s, _ = _timed(first_ws, ray="local")
        second_s, _ = _timed(second_ws, ray="local")
        difference = _max_difference(local_ws, second_ws, result)
        predicted = _predict_both(folder, Path(tmp) / "model.pt")
        ray.shutdown()
    n = result.embedded
    per_worker = n / second_s / args.cpus
    print(f"{n} images of {args.folder.name}, {result.backbone} at {result.size}px, all {len(result.layers)} layers; "
          f"Ray: local instance, {args.cpus} CPUs, one actor per CPU\n")
    print("| path | seconds | images/s | vs local |\n|---|---|---|---|")
    print(f"| local (`labeler embed`) | {local_s:.1f} | {n / local_s:.0f} | 1.00x |")
    print(f"| Ray, start included (`ray.init` {init_s:.1f} s, actors loading the network) | {init_s + first_s:.1f} | "
          f"{n / (init_s + first_s):.0f} | {local_s / (init_s + first_s):.2f}x |")
    print(f"| Ray, forward passes (instance up, actors started anew) | {second_s:.1f} | {n / second_s:.0f} | {local_s / second_s:.2f}x |")
    local_p, ray_p, images, out_difference = predicted
    print(f"| predict, local (`labeler predict`) | {local_p:.1f} | {images / local_p:.0f} | 1.00x |")
    print(f"| predict, Ray (instance up, actors started anew) | {ray_p:.1f} | {images / ray_p:.0f} | "
          f"{local_p / ray_p:.2f}x |")
    print(f"\nlargest difference between the local and the Ray cache: {difference:.2g} (float16); between the "
          f"predicted probabilities: {out_difference:.2g}")
    print(f"per worker (one CPU): {per_worker:.0f} images/s; N machines of C cores would do about "
          f"N x C x {per_worker:.0f} images/s while the folder's storage keeps up")


if __name__ == "__main__":
    main()
