"""Training benchmark: this engine versus fastai on identical settings, per task.

Both sides get the same items and split, image size (squished to size x size), batch size,
augmentation parameters (flip, rotate 10, zoom 1.1, warp 0.2, lighting 0.2), backbone
(torchvision mobilenet_v2 with the same IMAGENET1K_V1 weights, loaded offline), three layer
groups (features[:7], features[7:], head), and the fine-tune schedule of `labeler train`
(ours: `Learner.fine_tune`): one-cycle 1 epoch with the body frozen at lr, then unfreeze and
one-cycle N epochs at slice(lr/200, lr/2), pct_start 0.25 in both stages, and the same label smoothing (fastai's
LabelSmoothingCrossEntropyFlat) when --label-smoothing is given. The final metric of both is
computed with this engine's own metric functions on each side's validation predictions.

For the classifier two planning baselines run in the same script on the same split: fastai's
`fine_tune(3)` at 128 px with its defaults (vision_learner, lr 2e-3; --planning-epochs), and a
logistic regression on cached features (last layer; all layers).

Tasks:
  classify  ../shared/data/cifar10 (folder per class), seeded 80/20 random split, accuracy
  segment   ../shared/data/camvid (images/<stem>.jpg, labels/<stem>_P.png, codes.txt,
            valid.txt), U-Net, void code 11 left out of the loss and of pixel accuracy

fastai (a bench-only dependency, `pip install "fastai==2.8.*"`) keeps its own defaults where
the engine has no equivalent: its heads (classifier head, DynamicUnet decoder), train_bn=True
while frozen, Adam with decoupled weight decay 0.01, the lr floor div_final=1e5.

Time = build the data + create the model + the whole fine-tune + the final validation.

    .venv/bin/python bench/train.py --size 96 --epochs 1 --subset 1000 --tasks classify
    .venv/bin/python bench/train.py [--data ../shared/data] [--size 224] [--epochs 3] [--json]
    .venv/bin/python bench/train.py --tasks classify --size 160 --epochs 12 --label-smoothing 0.1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import Learner, build_data, create_model  # noqa: E402
from engine.backbones import DEFAULT_BACKBONE, get_backbone_cfg, load_pretrained_state_dict  # noqa: E402
from engine.embedding import DEFAULT_SIZE  # noqa: E402
from engine.data import discover_images  # noqa: E402
from engine.datablock import FuncSplit, ListSplit, MaskLabel, RandomSplit, label_from_folder  # noqa: E402
from engine.learner import task_for  # noqa: E402

BACKBONE = DEFAULT_BACKBONE


# ----------------------------------------------------------------------------- task setup

def folder_items(folder: Path, args) -> tuple[list[str], object]:
    """cifar10: every image, split 80/20 at random (seeded)."""
    return discover_images(folder), RandomSplit(0.2, seed=args.seed)


def camvid_items(folder: Path, args) -> tuple[list[str], object]:
    """CamVid: images/*, split by valid.txt."""
    items = [f"images/{name}" for name in sorted(p.name for p in (folder / "images").iterdir())
             if name.lower().endswith((".jpg", ".jpeg", ".png"))]
    return items, ListSplit(folder / "valid.txt")


def split_items(bench: BenchTask, folder: Path, args) -> tuple[list[str], list[str]]:
    """(train items, valid items) as paths relative to `folder`; train cut to --subset (seeded)."""
    items, splitter = bench.items(folder, args)
    train_idx, valid_idx = splitter(items)
    train = [items[i] for i in train_idx]
    if args.subset and args.subset < len(train):
        order = np.random.default_rng(args.seed).permutation(len(train))[:args.subset]
        train = [train[i] for i in sorted(order)]
    return train, [items[i] for i in valid_idx]


def mask_of(folder: Path):
    return lambda item: folder / "labels" / f"{Path(item).stem}_P.png"


def camvid_masks(folder: Path, args) -> MaskLabel:
    return MaskLabel(mask_of(folder), folder / "codes.txt", void_code=args.void)


def mobilenet_with_weights(state_dict: dict):
    """An arch callable for fastai: a fresh torchvision mobilenet_v2 carrying `state_dict`."""
    import torchvision

    def arch(pretrained=False, **kwargs):
        model = torchvision.models.mobilenet_v2()
        model.load_state_dict(state_dict)
        return model
    return arch


def three_groups(model):
    """fastai splitter matching the engine's groups: features[:7], features[7:], head."""
    from fastai.torch_core import params
    body = model[0]
    return [params(body[:7]), params(body[7:]), params(model[1:])]


# ----------------------------------------------------------------------------- the two sides

def run_ours(task: str, folder: Path, train: list[str], valid: list[str], args) -> dict:
    start = time.perf_counter()
    bench, valid_set = BENCH[task], set(valid)
    data = build_data(folder, train + valid, FuncSplit(lambda item: item in valid_set), bench.labeler(folder, args),
                      task=task, size=args.size, batch_size=args.batch_size, backbone=BACKBONE, augment=True,
                      workers=args.workers, seed=args.seed)
    torch.manual_seed(args.seed)
    learner = Learner(data, create_model(data.task, BACKBONE, data.n_out),
                      task=task_for(data, label_smoothing=args.label_smoothing))
    learner.fine_tune(args.epochs, args.lr, freeze_epochs=1)
    metrics = learner.validate()
    seconds = time.perf_counter() - start
    if bench.tta:
        metrics[f"{bench.metric}_tta"] = learner.validate(tta=True)[bench.metric]
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "time_s": seconds,
            "train": len(data.items_train), "valid": len(data.items_valid)}


def fastai_classifier(folder: Path, args, common: dict, arch):
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.vision.all import CategoryBlock, DataBlock, ImageBlock, parent_label, vision_learner
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=parent_label, **common)
    dls = block.dataloaders(folder, bs=args.batch_size, num_workers=args.workers, device="cpu")
    torch.manual_seed(args.seed)
    loss = LabelSmoothingCrossEntropyFlat(eps=args.label_smoothing) if args.label_smoothing else None
    return vision_learner(dls, arch, pretrained=True, normalize=False, loss_func=loss)


def fastai_unet(folder: Path, args, common: dict, arch):
    from fastai.losses import CrossEntropyLossFlat
    from fastai.vision.all import DataBlock, ImageBlock, MaskBlock, unet_learner
    codes = (folder / "codes.txt").read_text(encoding="utf-8").split()
    to_mask = mask_of(folder)
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes)), get_y=lambda p: to_mask(p), **common)
    dls = block.dataloaders(folder, bs=args.batch_size, num_workers=args.workers, device="cpu")
    torch.manual_seed(args.seed)
    return unet_learner(dls, arch, pretrained=True, normalize=False,
                        loss_func=CrossEntropyLossFlat(axis=1, ignore_index=args.void))


def run_fastai(task: str, folder: Path, train: list[str], valid: list[str], args, state_dict: dict) -> dict:
    from fastai.vision.all import FuncSplitter, Normalize, Resize, aug_transforms, imagenet_stats, model_meta
    start = time.perf_counter()
    paths = [folder / item for item in train + valid]
    valid_paths = {folder / item for item in valid}
    batch_tfms = [*aug_transforms(do_flip=True, flip_vert=False, max_rotate=10.0, max_zoom=1.1, max_warp=0.2,
                                  max_lighting=0.2),
                  Normalize.from_stats(*imagenet_stats)]
    common = dict(get_items=lambda _: paths, splitter=FuncSplitter(lambda p: p in valid_paths),
                  item_tfms=Resize(args.size, method="squish"), batch_tfms=batch_tfms)
    arch = mobilenet_with_weights(state_dict)
    # fastai's way to describe a custom arch (vision_learner does not pass its own `cut` on)
    model_meta[arch] = {"cut": lambda m: m.features, "split": three_groups, "stats": imagenet_stats}
    learn = BENCH[task].fastai(folder, args, common, arch)
    lr = args.lr
    with learn.no_bar(), learn.no_logging():
        learn.freeze()
        learn.fit_one_cycle(1, lr, pct_start=0.25)
        learn.unfreeze()
        lr /= 2
        if args.epochs:
            learn.fit_one_cycle(args.epochs, slice(lr / 100, lr), pct_start=0.25)
        probs, targets = learn.get_preds(dl=learn.dls.valid)
    # scored by the engine's own task: fastai's probabilities' logs are logits its activation takes
    engine_task = task_for(SimpleNamespace(task=task, void_code=args.void, n_out=learn.dls.c, size=args.size))
    metrics = engine_task.metrics(engine_task.activation(probs.log()), torch.as_tensor(targets).long())
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "time_s": time.perf_counter() - start,
            "train": len(learn.dls.train_ds), "valid": len(learn.dls.valid_ds)}


def run_fastai_planning(folder: Path, train: list[str], valid: list[str], args, state_dict: dict) -> dict:
    """The planning baseline as a fastai user writes it: vision_learner and fine_tune(N) at 128 px with
    fastai's own defaults (its augmentations, lr 2e-3), on the same split and weights."""
    from fastai.vision.all import (CategoryBlock, DataBlock, FuncSplitter, ImageBlock, Resize, aug_transforms,
                                   imagenet_stats, model_meta, parent_label, vision_learner)
    start = time.perf_counter()
    paths = [folder / item for item in train + valid]
    valid_paths = {folder / item for item in valid}
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: paths, get_y=parent_label,
                      splitter=FuncSplitter(lambda p: p in valid_paths), item_tfms=Resize(128),
                      batch_tfms=aug_transforms())
    dls = block.dataloaders(folder, bs=args.batch_size, num_workers=args.workers, device="cpu")
    arch = mobilenet_with_weights(state_dict)
    model_meta[arch] = {"cut": lambda m: m.features, "split": three_groups, "stats": imagenet_stats}
    torch.manual_seed(args.seed)
    learn = vision_learner(dls, arch, pretrained=True)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.planning_epochs)
        probs, targets = learn.get_preds(dl=dls.valid)
    accuracy = float((probs.argmax(1) == torch.as_tensor(targets)).float().mean())
    return {"metrics": {"accuracy": accuracy}, "time_s": time.perf_counter() - start,
            "settings": f"fine_tune({args.planning_epochs}) at 128 px, fastai defaults"}


def run_linear_probe(folder: Path, train: list[str], valid: list[str], args) -> dict:
    """The planning baseline: logistic regression on cached mobilenet_v2 features (160 px, average pooling),
    from the last layer and from all offered layers together, fitted on the same train split."""
    import tempfile

    from engine import FeatureCache, Workspace, embed
    from engine.firstmodel import _pipeline
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(folder, tmp)
        embed(workspace, backbone=BACKBONE, size=DEFAULT_SIZE)
        cache = FeatureCache(workspace.features_dir(BACKBONE, DEFAULT_SIZE), backbone=BACKBONE, size=DEFAULT_SIZE)
        row_of = {item.path: item.id for item in workspace.items()}
        names = sorted({Path(item).parent.name for item in train})
        rows = {split: np.array([row_of[item] for item in items]) for split, items in (("train", train),
                                                                                         ("valid", valid))}
        y = {split: np.array([names.index(Path(item).parent.name) for item in items])
             for split, items in (("train", train), ("valid", valid))}
        layers = list(cache.layers)
        scores = {}
        for key, chosen in (("last_layer", layers[-1:]), ("all_layers", layers)):
            X = np.concatenate([np.asarray(cache.load(layer, "avg"), np.float32) for layer in chosen], axis=1)
            model = _pipeline(args.seed).fit(X[rows["train"]], y["train"])
            scores[key] = float((model.predict(X[rows["valid"]]) == y["valid"]).mean())
    return {"metrics": scores, "time_s": time.perf_counter() - start}


@dataclass(frozen=True)
class BenchTask:
    """One benchmarked task: its data, how each side reads it, and what is reported."""

    folder: str  # under --data
    metric: str  # the headline metric; the engine's metric functions score both sides
    items: Callable  # (folder, args) -> (items, splitter)
    labeler: Callable  # (folder, args) -> the engine's labeler
    fastai: Callable  # (folder, args, DataBlock keywords, arch) -> a fastai Learner
    tta: bool = False  # also report ours with flip test-time augmentation
    baselines: bool = False  # also run the planning baselines (fastai fine_tune, logistic regression)


BENCH = {
    "classify": BenchTask("cifar10", "accuracy", folder_items, lambda folder, args: label_from_folder,
                          fastai_classifier, tta=True, baselines=True),
    "segment": BenchTask("camvid", "pixel_accuracy", camvid_items, camvid_masks, fastai_unet),
}


# ----------------------------------------------------------------------------- main

def bench_task(task: str, folder: Path, args, state_dict: dict, fastai_reason: str | None) -> dict:
    """One row of the results: ours, fastai's (or why not) and, where the task has them, the baselines."""
    train, valid = split_items(BENCH[task], folder, args)
    print(f"[{task}] {len(train)} train / {len(valid)} valid, size {args.size}, 1+{args.epochs} epochs, "
          f"lr {args.lr:g}, threads {torch.get_num_threads()}", file=sys.stderr, flush=True)
    row = {"task": task, "metric": BENCH[task].metric, "ours": run_ours(task, folder, train, valid, args)}
    print(f"[{task}] ours {row['ours']['metrics']} in {row['ours']['time_s']:.1f}s", file=sys.stderr, flush=True)
    if fastai_reason:
        row["fastai"] = {"error": fastai_reason}
    else:
        try:
            row["fastai"] = run_fastai(task, folder, train, valid, args, state_dict)
            print(f"[{task}] fastai {row['fastai']['metrics']} in {row['fastai']['time_s']:.1f}s",
                  file=sys.stderr, flush=True)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            row["fastai"] = {"error": f"{type(err).__name__}: {err}"}
    if BENCH[task].baselines and args.planning_epochs and not fastai_reason:
        row["planning"] = run_fastai_planning(folder, train, valid, args, state_dict)
        print(f"[{task}] fastai planning baseline {row['planning']['metrics']} in "
              f"{row['planning']['time_s']:.1f}s", file=sys.stderr, flush=True)
    if BENCH[task].baselines:
        row["probe"] = run_linear_probe(folder, train, valid, args)
        print(f"[{task}] linear probe {row['probe']['metrics']} in {row['probe']['time_s']:.1f}s",
              file=sys.stderr, flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--tasks", default="classify,segment")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="unfrozen epochs after the 1 frozen epoch")
    parser.add_argument("--subset", type=int, default=0, help="use only N training images (0: all)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="classifier, both sides (e.g. 0.1)")
    parser.add_argument("--planning-epochs", type=int, default=3,
                        help="epochs of the fastai fine_tune planning baseline at 128 px (0: skip it)")
    parser.add_argument("--void", type=int, default=11, help="CamVid void code")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not set(tasks) <= set(BENCH):
        parser.error(f"--tasks takes a comma list of {sorted(BENCH)}")
    folders = {task: Path(args.data) / bench.folder for task, bench in BENCH.items()}

    fastai_reason = None
    try:
        import fastai
        fastai_version = fastai.__version__
    except Exception as err:  # noqa: BLE001
        fastai_reason, fastai_version = f"import failed: {err}", None
    state_dict = load_pretrained_state_dict(get_backbone_cfg(BACKBONE))

    rows = [bench_task(task, folders[task], args, state_dict, fastai_reason) for task in tasks]
    report(rows, args, fastai_version)
    return 0


def report(rows: list[dict], args, fastai_version) -> None:
    """The results as JSON (--json) or as a markdown table with notes."""
    settings = {k: getattr(args, k) for k in ("size", "epochs", "subset", "lr", "batch_size", "workers", "seed",
                                              "label_smoothing")}
    if args.json:
        print(json.dumps({"settings": settings, "fastai_version": fastai_version,
                          "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=1))
        return
    print(f"settings: {settings}, backbone {BACKBONE}, torch {torch.__version__}, fastai {fastai_version}, "
          f"{torch.get_num_threads()} threads, CPU\n")
    print("| task | metric | ours | fastai | ours time s | fastai time s | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours, theirs = row["ours"], row["fastai"]
        ours_m = f"{ours['metrics'][row['metric']]:.4f}"
        if "error" in theirs:
            fa_m, fa_t, ratio = f"fastai: not available ({theirs['error']})", "-", "-"
        else:
            fa_m, fa_t = f"{theirs['metrics'][row['metric']]:.4f}", f"{theirs['time_s']:.1f}"
            ratio = f"{ours['time_s'] / theirs['time_s']:.2f}"
        print(f"| {row['task']} ({ours['train']}/{ours['valid']}) | {row['metric']} | {ours_m} | {fa_m} | "
              f"{ours['time_s']:.1f} | {fa_t} | {ratio} |")
    print("\ntime ratio = ours / fastai (below 1: ours faster).")
    for row in rows:
        if (tta := row["ours"]["metrics"].get(f"{row['metric']}_tta")) is not None:
            print(f"{row['task']}: ours with flip test-time augmentation: {tta:.4f}")
        if "planning" in row:
            print(f"{row['task']}: fastai {row['planning']['settings']}: {row['planning']['metrics']['accuracy']:.4f} "
                  f"in {row['planning']['time_s']:.1f} s")
        if "probe" in row:
            probe = row["probe"]
            print(f"{row['task']}: logistic regression on cached features of the same train split (160 px): "
                  f"{probe['metrics']['last_layer']:.4f} from the last layer, {probe['metrics']['all_layers']:.4f} "
                  f"from all layers ({probe['time_s']:.1f} s including the embedding).")


if __name__ == "__main__":
    sys.exit(main())
