"""Embedding throughput: this engine (all offered layers in one pass, cached) versus the plain
torchvision pipeline a user would write (ImageFolder-style Dataset, PIL + Resize + CenterCrop +
ToTensor + Normalize, one run per layer with a hook), on the same images in the same run;
plus hook overhead and projection times. Prints a markdown table; ratios are what to read.

    .venv/bin/python bench/embed.py [--data ../shared/data] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import Workspace, create_backbone, embed, get_backbone_cfg  # noqa: E402
from engine.backbones import DEFAULT_BACKBONE  # noqa: E402
from engine.data import discover_images  # noqa: E402
from engine.embedding import DEFAULT_SIZE  # noqa: E402
from engine.projection import PCAProjector, UMAPProjector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class PlainImages(Dataset):
    """What a user writes without this tool: open with PIL, torchvision transforms."""

    def __init__(self, folder: Path, paths: list[str], size: int, mean, std):
        self.files = [folder / p for p in paths]
        self.tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                      transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.tf(Image.open(self.files[i]).convert("RGB"))


def plain_pipeline(folder: Path, backbone: str, size: int, batch: int, workers: int) -> float:
    """Seconds for the plain pipeline to get every offered layer: one full pass per layer."""
    cfg = get_backbone_cfg(backbone)
    model = create_backbone(backbone)
    paths = discover_images(folder)
    start = time.perf_counter()
    for layer in cfg.layers:
        feats = []
        module = dict(model.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, i, o: feats.append(o.mean((2, 3))))
        loader = DataLoader(PlainImages(folder, paths, size, cfg.mean, cfg.std), batch_size=batch, num_workers=workers)
        with torch.no_grad():
            for x in loader:
                model(x)
        handle.remove()
    return time.perf_counter() - start


def engine_pipeline(folder: Path, backbone: str, size: int, batch: int, workers: int) -> tuple[float, float, int]:
    """Seconds for this engine to embed every offered layer, then to re-run on the unchanged folder."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(folder, tmp)
        start = time.perf_counter()
        first = embed(ws, backbone=backbone, size=size, batch_size=batch, workers=workers)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        embed(ws, backbone=backbone, size=size, batch_size=batch, workers=workers)
        warm = time.perf_counter() - start
    return cold, warm, first.embedded


def hook_overhead(backbone: str, size: int, batch: int, repeats: int = 5) -> tuple[float, float]:
    from engine import extract_activations
    cfg = get_backbone_cfg(backbone)
    model = create_backbone(backbone, pretrained=False).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    plain, hooked = [], []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter(); model(x); plain.append(time.perf_counter() - t)
            t = time.perf_counter(); extract_activations(model, x, list(cfg.layers), pool=None)
            hooked.append(time.perf_counter() - t)
    return statistics.median(plain), statistics.median(hooked)


def projection_times(rows: list[int], dim: int) -> list[dict]:
    """PCA and UMAP (ours: PCA to 50 first) beside plain umap-learn on the raw features."""
    import umap
    out = []
    rng = np.random.default_rng(0)
    # numba compiles on first use (exact kNN below 4,096 rows, NN-descent above): warm both paths up, untimed
    for n in (300, 5000):
        UMAPProjector().fit_transform(rng.normal(size=(n, 50)).astype(np.float32))
    for n in rows:
        centers = rng.normal(size=(20, dim)) * 3
        X = (centers[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))).astype(np.float16)
        t = time.perf_counter(); PCAProjector().fit_transform(X); pca = time.perf_counter() - t
        t = time.perf_counter(); UMAPProjector().fit_transform(X); ours = time.perf_counter() - t
        t = time.perf_counter()
        umap.UMAP(n_components=2, metric="cosine", random_state=0).fit_transform(X.astype(np.float32))
        plain = time.perf_counter() - t
        out.append({"rows": n, "dim": dim, "pca_s": pca, "umap_s": ours, "plain_umap_s": plain})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", default="1000,10000,50000", help="projection sizes")
    parser.add_argument("--quick", action="store_true", help="projections at 1k/10k only")
    parser.add_argument("--skip-embed", action="store_true", help="projection timings only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    results = {"embed": [], "settings": vars(args)}
    for name, folder in [] if args.skip_embed else [("cifar10", data / "cifar10"), ("camvid", data / "camvid" / "images")]:
        if not folder.exists():
            print(f"skipping {name}: {folder} is absent", file=sys.stderr)
            continue
        cold, warm, n = engine_pipeline(folder, args.backbone, args.size, args.batch_size, args.workers)
        plain = plain_pipeline(folder, args.backbone, args.size, args.batch_size, args.workers)
        results["embed"].append({"data": name, "images": n, "engine_s": cold, "engine_rerun_s": warm, "plain_s": plain})
    if not args.skip_embed:
        plain_fwd, hooked_fwd = hook_overhead(args.backbone, args.size, args.batch_size)
        results["hooks"] = {"forward_s": plain_fwd, "forward_with_hooks_s": hooked_fwd}
    rows = [int(r) for r in args.rows.split(",")][: 2 if args.quick else None]
    results["projection"] = projection_times(rows, 1280 * 4)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_tables(results)


def print_tables(results: dict) -> None:
    s = results["settings"]
    layers = len(get_backbone_cfg(s["backbone"]).layers)
    print(f"\nEmbedding, {s['backbone']} at {s['size']} px, batch {s['batch_size']}, {s['workers']} worker(s), "
          f"all {layers} offered layers\n")
    print("| data | images | engine img/s | plain pipeline img/s | ratio | re-run on unchanged folder | re-run speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["embed"]:
        print(f"| {r['data']} | {r['images']} | {r['images'] / r['engine_s']:.1f} | {r['images'] / r['plain_s']:.1f} "
              f"| {r['plain_s'] / r['engine_s']:.2f}x | {r['engine_rerun_s']:.2f} s | {r['engine_s'] / r['engine_rerun_s']:.0f}x |")
    h = results.get("hooks")
    if h:
        print(f"\nHook overhead (forward, batch {s['batch_size']}): {h['forward_s'] * 1000:.0f} ms without hooks, "
              f"{h['forward_with_hooks_s'] * 1000:.0f} ms with hooks on all layers "
              f"({(h['forward_with_hooks_s'] / h['forward_s'] - 1) * 100:+.1f}%)")
    print()
    print("| rows x dims | PCA 2D | UMAP (PCA-50 first) | plain umap-learn | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results["projection"]:
        print(f"| {r['rows']} x {r['dim']} | {r['pca_s']:.2f} s | {r['umap_s']:.1f} s | {r['plain_umap_s']:.1f} s "
              f"| {r['plain_umap_s'] / r['umap_s']:.2f}x |")


if __name__ == "__main__":
    main()
