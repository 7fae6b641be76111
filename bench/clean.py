"""Cleaning on real data: flipped labels found, planted copies found, each stage timed.

On a copy of ../shared/data/cifar10 (3000 photos, a folder per class; the shared data is never
written): the folder labels are imported into the store, 5% of them flipped at random (seeded)
to another class, and the label-issue queue (k-fold on cached features, ranked by cleanlab) is
scored by the share of flipped items in its top 150 and the recall of flipped items in its top
300, beside two rankings measured in the same run: random order and the app's first model's
low confidence in the given label.

Duplicates, on cifar10 and on a copy of the built-in demo (5,000 handwritten digits, 28 x 28):
the Duplicates queue at the default settings is built before planting anything (what it lists
then are look-alikes, unless the set holds real copies), then 50 altered copies are planted
(`plant_copies`: resized, re-encoded as JPEG, both, shifted a pixel, cropped a pixel, brightness
changed; seeded) and it is scored: planted pairs found, and false pairs (any other pair in a
group) over all pairs. Beside it, in the same run, the method before the pixel check (8 x 8
signature and features.3, cosine >= 0.98; `old_duplicate_groups`).

    .venv/bin/python bench/clean.py [--data ../shared/data] [--sets cifar10 digits] [--json] [--no-baseline]
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
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import clean, embed  # noqa: E402
from engine.clean import DEFAULT_DUPLICATE_THRESHOLD  # noqa: E402
from engine.demo import demo_folder  # noqa: E402
from labeler.cleaning import build_queues, duplicate_features  # noqa: E402
from labeler.io import import_folders  # noqa: E402
from labeler.project import Project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCALES = (0.5, 0.75, 1.5, 2.0, 3.0)
QUALITIES = (30, 50, 70, 90)
BRIGHTNESS = (0.85, 0.9, 1.1, 1.15)
COPY_KINDS = ("resize", "jpeg", "both", "shift", "crop", "brightness")
OLD_THRESHOLD = 0.98    # the near-duplicate cosine before the pixel check


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
    """Write n altered copies beside n distinct originals, the kinds of COPY_KINDS in turn (seeded choices):
    resize (0.5x to 3x, PNG), jpeg (quality 30 to 90), both, shift (content moved a pixel in each direction,
    the uncovered edge repeating its neighbour), crop (a 3% strip, at least a pixel, off one side in each
    direction) and brightness (x0.85 to x1.15). The copy's name tells its kind.

    Returns (original, copy) relative paths."""
    rng = np.random.default_rng(seed)
    planted = []
    for k, original in enumerate(rng.choice(items, size=n, replace=False)):
        path = folder / original
        with Image.open(path) as opened:
            image = opened.convert("L" if opened.mode in ("1", "L", "I", "I;16") else "RGB")
        kind = COPY_KINDS[k % len(COPY_KINDS)]
        image = _altered(image, kind, rng)
        copy = path.with_name(f"{path.stem}_{kind}{k}.{'jpg' if kind in ('jpeg', 'both') else 'png'}")
        image.save(copy, **({"quality": int(rng.choice(QUALITIES))} if copy.suffix == ".jpg" else {}))
        planted.append((str(original), copy.relative_to(folder).as_posix()))
    return planted


def _altered(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """The image resized, shifted, cropped or brightened as `plant_copies` says (jpeg: unchanged here)."""
    if kind in ("resize", "both"):
        scale = float(rng.choice(SCALES))
        return image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))), Image.BICUBIC)
    if kind == "shift":
        dx, dy = (int(v) for v in rng.choice([-1, 1], size=2))
        moved = np.roll(np.asarray(image), (dy, dx), axis=(0, 1))
        moved[0 if dy > 0 else -1] = moved[1 if dy > 0 else -2]
        moved[:, 0 if dx > 0 else -1] = moved[:, 1 if dx > 0 else -2]
        return Image.fromarray(moved)
    if kind == "crop":
        dx, dy = (max(1, round(0.03 * side)) for side in image.size)
        left, top = int(rng.integers(0, 2)) * dx, int(rng.integers(0, 2)) * dy
        return image.crop((left, top, image.width - dx + left, image.height - dy + top))
    if kind == "brightness":
        return ImageEnhance.Brightness(image).enhance(float(rng.choice(BRIGHTNESS)))
    return image


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
            "false_among_originals": len(false & set(before)), "groups": int(queue["group"].nunique()),
            "listed": len(queue), "missed": sorted(copy for original, copy in planted
                                                   if tuple(sorted((original, copy))) not in pairs)}


def duplicate_inputs(project: Project) -> dict:
    """What the Duplicates queue reads, for the engine directly: names, thumbnails, sizes, hashes, features."""
    items = project.refresh_items(rescan=True)
    paths = [project.folder / item.path for item in items]
    survey = clean.survey_images(paths)
    features = np.asarray(duplicate_features(project.features(), project.backbone), dtype=np.float32)[:len(items)]
    return {"names": [item.path for item in items], "paths": paths, "thumbnails": survey.thumbnails,
            "hashes": survey.stats["sha1"].tolist(), "sizes": survey.stats[["width", "height"]].fillna(0).to_numpy(),
            "features": features}


def old_signatures(paths: list[Path]) -> np.ndarray:
    """(n, 64) the signature the Duplicates queue used before: each image decoded near 64 pixels (JPEG draft
    mode), grey, box-averaged to 8 x 8, mean removed (zeros where unreadable)."""
    from engine.data import decode_image, read_image_bytes
    from engine.errors import ImageReadError
    rows = np.zeros((len(paths), 64), dtype=np.float32)
    for row, path in enumerate(paths):
        try:
            image = decode_image(read_image_bytes(path), path, size=64)
        except ImageReadError:
            continue
        small = np.asarray(image.convert("L").resize((8, 8), Image.BOX), np.float32)
        rows[row] = (small - small.mean()).ravel()
    return rows


def old_duplicate_groups(inputs: dict):
    """The method before the pixel check, as a queue-like table (image_name, group): exact copies by hash and
    pairs whose `old_signatures` and features.3 cosine (weights 0.9 / 0.1) is >= OLD_THRESHOLD."""
    import pandas as pd
    rows = clean.duplicate_rows([old_signatures(inputs["paths"]), inputs["features"]], clean.DUPLICATE_WEIGHTS)
    groups = clean.DuplicateFinder(OLD_THRESHOLD).fit(rows, inputs["hashes"]).groups_
    listed = np.flatnonzero(groups >= 0)
    return pd.DataFrame({"image_name": [inputs["names"][r] for r in listed], "group": groups[listed]})


def duplicate_run(project: Project, folder: Path, timed) -> dict:
    """The Duplicates queue (and the old method) before and after planting 50 copies in `project`."""
    queue = lambda: build_queues(project, queues=("duplicates",))["duplicates"]  # noqa: E731
    before = timed("duplicates_before_planting", queue)
    old_before = old_duplicate_groups(duplicate_inputs(project))
    planted = timed("plant", lambda: plant_copies(folder, [item.path for item in project.refresh_items(rescan=True)]))
    project.refresh_items(rescan=True)
    timed("embed_copies", lambda: embed(project.workspace))
    found = timed("duplicates", queue)
    inputs = duplicate_inputs(project)
    limit = clean.DuplicateFinder().fit(inputs["features"], inputs["hashes"], thumbnails=inputs["thumbnails"],
                                        sizes=inputs["sizes"]).limit_
    new = {"threshold": f"similarity >= {DEFAULT_DUPLICATE_THRESHOLD}, pixel difference <= {limit.limit_:.3f} "
                        f"(0.26 x typical {limit.typical_:.2f})",
           "listed_before_planting": len(before), "pairs_before_planting": len(group_pairs(before)),
           **duplicate_scores(found, planted, group_pairs(before))}
    old = {"threshold": f"similarity >= {OLD_THRESHOLD}", "listed_before_planting": len(old_before),
           "pairs_before_planting": len(group_pairs(old_before)),
           **duplicate_scores(old_duplicate_groups(inputs), planted, group_pairs(old_before))}
    return {"images": len(inputs["names"]) - len(planted), "new": new, "old": old}


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


def _timer(times: dict):
    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = round(time.perf_counter() - start, 2)
        return value
    return timed


def run(source: Path, work: Path, *, baseline: bool = True) -> dict:
    times, out = {}, {"data": source.name}
    timed = _timer(times)
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
        out["duplicates"] = duplicate_run(project, folder, timed)
    out["seconds"] = times
    return out


def run_demo(work: Path) -> dict:
    """Duplicates on a copy of the built-in demo (the demo folder itself is never written)."""
    times = {}
    timed = _timer(times)
    folder = timed("copy", lambda: copy_dataset(demo_folder(), work / "digits"))
    with Project(folder) as project:
        timed("embed", lambda: embed(project.workspace))
        out = {"data": "digits (demo)", "duplicates": duplicate_run(project, folder, timed)}
    out["seconds"] = times
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sets", nargs="+", choices=("cifar10", "digits"), default=("cifar10", "digits"),
                        help="cifar10 (label issues and duplicates) and/or the digits demo (duplicates)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the first model's ranking")
    args = parser.parse_args()
    source = args.data / "cifar10"
    if "cifar10" in args.sets and not source.exists():
        sys.exit(f"{source} is absent: the benchmark needs ../shared/data/cifar10 (or pass --sets digits)")
    results = []
    with tempfile.TemporaryDirectory(prefix="labeler-clean-") as work:
        if "cifar10" in args.sets:
            results.append(run(source, Path(work), baseline=not args.no_baseline))
        if "digits" in args.sets:
            results.append(run_demo(Path(work)))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print_tables(results)


def print_tables(results: list[dict]) -> None:
    for r in results:
        if "label_issues" in r:
            _print_label_issues(r)
    print("\nDuplicates: 50 copies planted (resized, JPEG, both, shifted a pixel, cropped a pixel, brightness), "
          "default settings\n")
    print("| set | method | listed before planting | planted pairs found | false pairs | false share | "
          "listed items | threshold |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        d = r["duplicates"]
        for method, title in (("new", "pixel check, calibrated to the set"), ("old", "before: cosine only")):
            m = d[method]
            print(f"| {r['data']} ({d['images']}) | {title} | {m['listed_before_planting']} | "
                  f"{m['found']}/{m['planted']} | {m['false_pairs']} | {m['false_share']:.1%} | {m['listed']} | "
                  f"{m['threshold']} |")
    for r in results:
        print(f"\n{r['data']}, stage | seconds\n| --- | ---: |")
        for stage, seconds in r["seconds"].items():
            print(f"| {stage} | {seconds:.1f} |")


def _print_label_issues(r: dict) -> None:
    print(f"\nLabel issues, {r['data']}: {r['images']} images, {r['flipped']} labels flipped at random (seed 0)\n")
    print("| ranking | precision of the top 150 | recall in the top 300 |")
    print("| --- | ---: | ---: |")
    rows = [("k-fold on cached features, cleanlab self-confidence", r["label_issues"]),
            ("first model (app's Train), k-fold probability of the given label", r.get("first_model_low_confidence")),
            ("random order", r["random_order"])]
    for name, scores in rows:
        if scores:
            print(f"| {name} | {scores['precision_at_150']:.3f} | {scores['recall_at_300']:.3f} |")


if __name__ == "__main__":
    main()
