"""Cleaning on real data: flipped labels found, planted copies found, each stage timed.

On a copy of ../shared/data/cifar10 (3000 photos, a folder per class; the shared data is never
written): the folder labels are imported into the store, 5% of them flipped at random (seeded)
to another class, and the label-issue queue (k-fold on cached features, ranked by cleanlab) is
scored by the share of flipped items in its top 150 and the recall of flipped items in its top
300, beside two rankings measured in the same run: random order and the app's first model's
low confidence in the given label. Then 50 resized and/or re-compressed copies are planted
(seeded mix of scale factors and JPEG qualities) and the duplicates queue is scored at the
default threshold: planted pairs found, and false pairs (any other pair in a group) over all pairs.

    .venv/bin/python bench/clean.py [--data ../shared/data] [--json] [--no-baseline]
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import embed  # noqa: E402
from engine.clean import DEFAULT_DUPLICATE_THRESHOLD  # noqa: E402
from labeler.cleaning import build_queues  # noqa: E402
from labeler.io import import_folders  # noqa: E402
from labeler.project import Project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCALES = (0.5, 0.75, 1.5, 2.0, 3.0)
QUALITIES = (30, 50, 70, 90)


def copy_dataset(source: Path, target: Path) -> Path:
    """A copy of an image folder without its workspace (the shared data stays untouched)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".labeler"))
    return target


def flip_labels(project: Project, fraction: float = 0.05, seed: int = 0) -> set[int]:
    """Give `fraction` of the labeled items (seeded choice) another label, chosen at random; the item ids."""
    names, labels = project.store.label_matrix(len(project.items))
    labeled = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(labeled, size=round(fraction * len(labeled)), replace=False)
    new = (labels[chosen] + rng.integers(1, len(names), size=len(chosen))) % len(names)
    for label in np.unique(new):
        project.store.assign(chosen[new == label].tolist(), names[label])
    return {int(item) for item in chosen}


def plant_copies(folder: Path, items: list[str], n: int = 50, seed: int = 1) -> list[tuple[str, str]]:
    """Write n altered copies beside n distinct originals: resized (PNG), re-compressed (JPEG) or both.

    Returns (original, copy) relative paths."""
    rng = np.random.default_rng(seed)
    planted = []
    for k, original in enumerate(rng.choice(items, size=n, replace=False)):
        path = folder / original
        image = Image.open(path).convert("RGB")
        kind = ("resize", "jpeg", "both")[k % 3]
        if kind != "jpeg":
            scale = float(rng.choice(SCALES))
            image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                                 Image.BICUBIC)
        if kind == "resize":
            copy = path.with_name(f"{path.stem}_copy{k}.png")
            image.save(copy)
        else:
            copy = path.with_name(f"{path.stem}_copy{k}.jpg")
            image.save(copy, quality=int(rng.choice(QUALITIES)))
        planted.append((str(original), copy.relative_to(folder).as_posix()))
    return planted


def ranking_scores(ranked_ids: list[int], flipped: set[int], top: int = 150, recall_at: int = 300) -> dict:
    """Precision of the first `top` ranked items and recall of all flipped items in the first `recall_at`."""
    return {f"precision_at_{top}": sum(i in flipped for i in ranked_ids[:top]) / top,
            f"recall_at_{recall_at}": sum(i in flipped for i in ranked_ids[:recall_at]) / len(flipped)}


def group_pairs(queue) -> set[tuple[str, str]]:
    """Every pair of image names that share a duplicate group."""
    pairs = set()
    for _, members in queue.groupby("group")["image_name"]:
        pairs.update(tuple(sorted(pair)) for pair in itertools.combinations(members, 2))
    return pairs


def duplicate_scores(queue, planted: list[tuple[str, str]], before: set[tuple[str, str]] = frozenset()) -> dict:
    """Planted pairs found (both in one group) and false pairs (any other pair in a group)."""
    pairs = group_pairs(queue)
    wanted = {tuple(sorted(pair)) for pair in planted}
    false = pairs - wanted
    return {"planted": len(wanted), "found": len(pairs & wanted), "found_share": len(pairs & wanted) / len(wanted),
            "pairs": len(pairs), "false_pairs": len(false), "false_share": len(false) / max(1, len(pairs)),
            "false_among_originals": len(false & set(before)), "groups": int(queue["group"].nunique())}


def first_model_ranking(project: Project) -> list[int]:
    """Labeled items by the app's first model's k-fold probability of their given label, lowest first."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from engine.backbones import get_backbone_cfg
    from engine.firstmodel import ColumnBlocks, _pipeline
    from engine.pooling import DEFAULT_POOLING
    cache = project.features()
    _, labels = project.store.label_matrix(len(project.items))
    rows = np.flatnonzero((labels >= 0) & cache.done_mask(len(labels)))
    # what Train fits (labeler/session.py): the grid-pooled columns of every layer, through PCA past 256 rows
    features = ColumnBlocks(cache.load(layer, DEFAULT_POOLING) for layer in get_backbone_cfg(project.backbone).layers)
    X = features[rows]
    fold_rows = len(rows) - int(np.ceil(len(rows) / 5))
    probs = cross_val_predict(_pipeline(0, fold_rows, X.shape[1]), X, labels[rows], method="predict_proba",
                              cv=StratifiedKFold(5, shuffle=True, random_state=0))
    given = probs[np.arange(len(rows)), labels[rows]]
    return rows[np.argsort(given, kind="stable")].tolist()


def run(source: Path, work: Path, *, baseline: bool = True) -> dict:
    times, out = {}, {"data": source.name}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = round(time.perf_counter() - start, 2)
        return value

    folder = timed("copy", lambda: copy_dataset(source, work / source.name))
    with Project(folder) as project:
        flipped = timed("import_and_flip", lambda: (import_folders(project, folder), flip_labels(project))[1])
        out["images"], out["flipped"] = len(project.items), len(flipped)
        timed("embed", lambda: embed(project.workspace))
        issues = timed("label_issues", lambda: build_queues(project, queues=("label_issues",))["label_issues"])
        ranked = issues["item_id"].tolist()
        out["label_issues"] = ranking_scores(ranked, flipped)
        out["label_issues"]["ranked"] = len(ranked)
        shuffled = np.random.default_rng(0).permutation(ranked).tolist()
        out["random_order"] = ranking_scores(shuffled, flipped)
        if baseline:
            out["first_model_low_confidence"] = ranking_scores(timed("baseline", lambda: first_model_ranking(project)),
                                                               flipped)
        before = group_pairs(timed("duplicates_before_planting",
                                   lambda: build_queues(project, queues=("duplicates",))["duplicates"]))
        planted = timed("plant", lambda: plant_copies(folder, [item.path for item in project.items]))
        project.refresh_items(rescan=True)
        timed("embed_copies", lambda: embed(project.workspace))
        found = timed("duplicates", lambda: build_queues(project, queues=("duplicates",))["duplicates"])
        out["duplicates"] = {"threshold": DEFAULT_DUPLICATE_THRESHOLD, "pairs_before_planting": len(before),
                             **duplicate_scores(found, planted, before)}
    out["seconds"] = times
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the first model's ranking")
    args = parser.parse_args()
    source = args.data / "cifar10"
    if not source.exists():
        sys.exit(f"{source} is absent: the benchmark needs ../shared/data/cifar10")
    with tempfile.TemporaryDirectory(prefix="labeler-clean-") as work:
        result = run(source, Path(work), baseline=not args.no_baseline)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print_tables(result)


def print_tables(r: dict) -> None:
    print(f"\nLabel issues, {r['data']}: {r['images']} images, {r['flipped']} labels flipped at random (seed 0)\n")
    print("| ranking | precision of the top 150 | recall in the top 300 |")
    print("| --- | ---: | ---: |")
    rows = [("k-fold on cached features, cleanlab self-confidence", r["label_issues"]),
            ("first model (app's Train), k-fold probability of the given label", r.get("first_model_low_confidence")),
            ("random order", r["random_order"])]
    for name, scores in rows:
        if scores:
            print(f"| {name} | {scores['precision_at_150']:.3f} | {scores['recall_at_300']:.3f} |")
    d = r["duplicates"]
    print(f"\nDuplicates, {d['planted']} resized / re-compressed copies planted, threshold {d['threshold']}\n")
    print("| planted pairs found | pairs in groups | false pairs | false share | false pairs among the originals |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {d['found']}/{d['planted']} ({d['found_share']:.0%}) | {d['pairs']} | {d['false_pairs']} | "
          f"{d['false_share']:.1%} | {d['false_among_originals']} (of {d['pairs_before_planting']} before planting) |")
    print("\n| stage | seconds |\n| --- | ---: |")
    for stage, seconds in r["seconds"].items():
        print(f"| {stage} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
