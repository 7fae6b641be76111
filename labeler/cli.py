"""`labeler` on the command line: every subcommand has --help, progress on stderr, --json on stdout."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

# Only light modules at import time: torch, sklearn and umap load when a command needs them.
from engine.backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone_cfg
from engine.data import InputError
from engine.demo import demo_folder
from engine.embedding import DEFAULT_SIZE, embed
from engine.features import FeatureCache
from engine.pooling import DEFAULT_POOLING, POOLINGS
from engine.workspace import Workspace
from labeler._history import default_actor
from labeler.errors import USER_ERRORS, LabelerError
from labeler.ui.raster import RASTER_FROM

logger = logging.getLogger("labeler")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"labeler {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was computed so far is kept", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labeler", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is happening to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cmd = _command(sub, "embed", "compute (or reuse) pooled features of every offered layer", _embed)
    cmd.add_argument("--csv", metavar="LIST", help="take the images from this CSV list instead of scanning FOLDER")
    cmd.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run the forward passes on a Ray cluster: ADDRESS as `ray start` printed it, 'auto' for "
                          "the one started on this machine, nothing for a new local instance (needs `pip install "
                          "labeler[ray]`; the folder must be at the same path on every node)")

    cmd = _command(sub, "project", "project one layer's features to 2D", _project)
    cmd.add_argument("--layer", help="layer name (default: the last offered layer); see `labeler backbones`")
    cmd.add_argument("--method", default="umap", help="umap, pca, lda or supervised_umap (default umap)")
    cmd.add_argument("--components", default="0,1", help="PCA components to show, e.g. 2,3 (default 0,1)")
    cmd.add_argument("--labels", metavar="CSV", help="image_name,tags CSV of known labels (for lda / supervised_umap)")
    cmd.add_argument("--out", metavar="CSV", help="write image_name,x,y here")

    cmd = _command(sub, "similar", "find the images most similar to a few seed images", _similar)
    cmd.add_argument("--seed", nargs="+", required=True, metavar="PATH", help="seed image(s)")
    cmd.add_argument("--layer", help="layer name (default: the last offered layer)")
    cmd.add_argument("-k", type=int, default=20, help="how many results (default 20)")
    cmd.add_argument("--aggregate", default="mean", choices=("mean", "max"),
                     help="mean: close to the seeds' average; max: close to any one seed (default mean)")

    cmd = _command(sub, "demo", "embed the built-in demo (5,000 digits) and show what each layer groups", _demo)
    cmd.add_argument("-k", type=int, default=10, help="neighbours per image for the agreement figure (default 10)")

    _label_commands(sub)
    _clean_command(sub)

    text = "open the labeling app in the browser"
    cmd = sub.add_parser("serve", help=text, description=text)
    _folder_arguments(cmd)
    _actor_option(cmd)
    cmd.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    cmd.add_argument("--address", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    cmd.add_argument("--show", action="store_true", help="open a browser tab")
    cmd.add_argument("--backend", default="webgl", choices=("webgl", "canvas"),
                     help="map drawing: webgl (default; fastest on a real GPU) or canvas (faster without one)")
    cmd.add_argument("--raster-from", type=int, default=RASTER_FROM, metavar="N",
                     help="from N points on, the server draws the map's points as one image per view, which costs "
                          "the same at any number of points (default %(default)s; 0: always)")
    cmd.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES),
                     help="pretrained CNN whose features draw the map (default %(default)s)")
    cmd.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image edge in pixels (default %(default)s)")
    cmd.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="compute the features of a folder being opened on a Ray cluster, as `labeler embed --ray` "
                          "does (ADDRESS, 'auto', or nothing for a local instance)")
    from labeler.ui.serve import add_access_options
    add_access_options(cmd)
    cmd.set_defaults(run=_serve)

    from labeler.training import add_commands as add_training_commands
    add_training_commands(sub, lambda name, text, run: _command(sub, name, text, run))
    from labeler.collect import add_commands as add_collect_commands
    add_collect_commands(sub, _actor_option)
    from labeler.serve_model import add_command as add_serve_model_command
    add_serve_model_command(sub)

    text = "list backbones and the layers each offers"
    cmd = sub.add_parser("backbones", help=text, description=text)
    cmd.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cmd.set_defaults(run=_backbones)
    return parser


def _command(sub, name: str, text: str, run) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=text, description=text)
    _folder_arguments(cmd)
    cmd.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES),
                     help=f"pretrained CNN (default {DEFAULT_BACKBONE})")
    cmd.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"image edge in pixels (default {DEFAULT_SIZE})")
    cmd.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    cmd.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: cores - 1)")
    cmd.add_argument("--pooling", default=DEFAULT_POOLING, choices=POOLINGS,
                     help=f"which pooled columns to use (default {DEFAULT_POOLING})")
    cmd.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cmd.set_defaults(run=run)
    return cmd


def _folder_arguments(cmd) -> None:
    cmd.add_argument("folder", nargs="?", metavar="FOLDER", help="folder of images (default: the built-in demo)")
    cmd.add_argument("--workspace", help="where derived data and labels go (default FOLDER/.labeler)")


def _folder(args) -> Path:
    """FOLDER as given, or the built-in demo (written to the cache on first use)."""
    return Path(args.folder) if args.folder else demo_folder()


def _actor_option(cmd) -> None:
    cmd.add_argument("--actor", metavar="NAME", default=default_actor(),
                     help="who the changes are recorded as, for history and undo "
                          "(default: %(default)s, the user name and host)")


def _label_commands(sub) -> None:
    """import, export and labels: they work on the label store alone and never embed."""
    cmd = _label_command(sub, "import", "import labels from a CSV (image_name,tags) or a folder-per-class tree",
                         _import)
    cmd.add_argument("csv", nargs="?", metavar="LABELS.CSV", help="CSV with one row per image (given alone: "
                                                                  "imported into the demo)")
    _actor_option(cmd)
    cmd.add_argument("--folders", metavar="ROOT", help="import ROOT/<label>/<images> instead of a CSV")
    cmd.add_argument("--image-column", default="image_name", help="column of file names (name or 0-based index; "
                                                                   "default image_name)")
    cmd.add_argument("--label-column", default="tags", help="column of labels (name or index; default tags)")
    cmd.add_argument("--delimiter", default=" ", help="between labels in a multi-label cell (default: a space)")
    cmd.add_argument("--sep", default=",", help="CSV field separator (default ,)")
    cmd.add_argument("--multi-label", action="store_true", help="make a new project multi-label (several labels per image)")

    cmd = _label_command(sub, "export", "write labels or predictions as CSV, class folders or a Hugging Face "
                                        "imagefolder dataset", _export)
    cmd.add_argument("--format", required=True, choices=("csv", "folders", "hf", "predictions"),
                     help="csv: image_name,tags; folders: OUT/<label>/<file name> and OUT/labels.csv; hf: a folder "
                          "datasets' imagefolder loads (single-label: the label as a ClassLabel); predictions: a "
                          "model's probabilities (stored by `labeler train` or `labeler predict --store`)")
    cmd.add_argument("--out", required=True, metavar="PATH", help="file (csv, predictions) or folder (folders, hf; "
                                                                  "empty or an earlier export, which is replaced)")
    how = cmd.add_mutually_exclusive_group()
    how.add_argument("--copy", action="store_true", help="folders, hf: copy the images (the default for hf)")
    how.add_argument("--link", action="store_true", help="folders, hf: relative symbolic links to the images "
                                                         "(the default for folders)")
    cmd.add_argument("--delimiter", default=" ", help="csv: between labels of a multi-label item (default: a space)")
    cmd.add_argument("--model", metavar="ID", help="predictions: which stored model (default: the latest stored)")

    _label_command(sub, "labels", "count labels per label and source, excluded and unlabeled images", _labels)


def _label_command(sub, name: str, text: str, run) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=text, description=text)
    _folder_arguments(cmd)
    cmd.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cmd.set_defaults(run=run)
    return cmd


def _import(args) -> int:
    from labeler.io import import_folders, import_labels_csv
    from labeler.project import Project
    if args.csv is None and args.folder and Path(args.folder).is_file():   # `labeler import labels.csv`: the demo
        args.folder, args.csv = None, args.folder
    if bool(args.csv) == bool(args.folders):
        raise LabelerError("Give either a CSV file (labeler import FOLDER labels.csv) or a class folder tree "
                           "(labeler import FOLDER --folders ROOT), not both or neither.")
    with Project(_folder(args), args.workspace, multi_label=True if args.multi_label else None,
                 actor=args.actor) as project:
        if args.folders:
            report = import_folders(project, args.folders)
        else:
            report = import_labels_csv(project, args.csv, image_column=_column_arg(args.image_column),
                                       label_column=_column_arg(args.label_column),
                                       label_delimiter=args.delimiter, sep=args.sep)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{report.assigned} items labeled from {report.rows} rows ({len(report.labels)} labels); "
          f"{len(report.unknown)} unknown file names, {report.empty} rows without a label, "
          f"{len(report.conflicts)} conflicting")
    for name in report.unknown[:20]:
        print(f"  not an image of the folder: {name}")
    if len(report.unknown) > 20:
        print(f"  ... and {len(report.unknown) - 20} more (see --json)")
    return 0


def _column_arg(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def _export(args) -> int:
    from labeler import io
    from labeler.project import Project
    with Project(_folder(args), args.workspace) as project:
        if args.format == "csv":
            report = io.export_labels_csv(project, args.out, label_delimiter=args.delimiter)
        elif args.format == "folders":
            report = io.export_folders(project, args.out, copy=args.copy)
        elif args.format == "hf":
            report = io.export_hf(project, args.out, link=args.link)
        else:
            report = io.export_predictions_csv(project, args.out, model_id=args.model)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(f"wrote {report.rows} items to {report.path} ({report.skipped_excluded} excluded and "
              f"{report.skipped_missing} missing left out)")
    return 0


def _labels(args) -> int:
    from labeler.project import Project
    with Project(_folder(args), args.workspace) as project:
        summary = project.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    mode = "multi-label" if summary["multi_label"] else "single-label"
    print(f"{summary['folder']} ({mode})")
    print(f"{'label':24s} {'total':>7s} {'human':>7s} {'model':>7s} {'import':>7s}")
    for name, row in summary["labels"].items():
        print(f"{name[:24]:24s} {row['total']:7d} {row['human']:7d} {row['model']:7d} {row['import']:7d}")
    print(f"{summary['items']} images: {summary['labeled']} labeled, {summary['unlabeled']} unlabeled, "
          f"{summary['excluded']} excluded, {summary['missing']} missing")
    return 0


def _open(args, paths: list[str] | None = None):
    """Workspace with up-to-date features: embeds whatever is new (with a progress bar)."""
    ws = Workspace(_folder(args), args.workspace)
    with tqdm(desc=f"embedding ({args.backbone}, {args.size}px)", unit="img", file=sys.stderr,
              disable=None, leave=False) as bar:
        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()
        result = embed(ws, backbone=args.backbone, size=args.size, batch_size=args.batch_size,
                       workers=args.workers, paths=paths, progress=progress, ray=getattr(args, "ray", None))
    cache = FeatureCache(ws.features_dir(args.backbone, args.size), backbone=args.backbone, size=args.size)
    return ws, result, cache


def _embed(args) -> int:
    paths = None
    if args.csv:
        from engine.data import read_image_list
        paths = read_image_list(args.csv, root=args.folder)
    _, result, _ = _open(args, paths)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{result.embedded} embedded, {result.cached} cached, {len(result.skipped)} skipped "
          f"({result.backbone} at {result.size}px; layers {', '.join(result.layers)})")
    for skipped in result.skipped:
        print(f"  skipped {skipped['path']}: {skipped['reason']}")
    return 0


def _project(args) -> int:
    from engine.projection import SUPERVISED, cached_projection
    ws, result, cache = _open(args)
    layer = args.layer or result.layers[-1]
    items = ws.items()
    done = cache.done_mask(len(items))
    rows = np.flatnonzero(done)
    features = cache.load(layer, args.pooling)
    y = _labels_vector(args.labels, items, rows) if args.method in SUPERVISED else None
    params = {"components": tuple(int(c) for c in args.components.split(","))} if args.method == "pca" else {}
    coords = cached_projection(features[rows], args.method, params, cache_dir=ws.cache_dir("projections"),
                               key=cache.projection_key(layer, args.pooling, rows), y=y)
    table = [(items[r].path, float(x), float(yv)) for r, (x, yv) in zip(rows, coords)]
    if args.out:
        with open(args.out, "w", newline="") as f:
            csv.writer(f).writerows([("image_name", "x", "y"), *table])
    if args.json:
        print(json.dumps({"layer": layer, "method": args.method, "out": args.out,
                          "points": None if args.out else [{"path": p, "x": x, "y": yv} for p, x, yv in table]}))
    elif not args.out:
        csv.writer(sys.stdout).writerows([("image_name", "x", "y"), *table])
    else:
        print(f"wrote {len(table)} points ({layer}, {args.method}) to {args.out}")
    return 0


def _labels_vector(labels_csv, items, rows) -> np.ndarray:
    if not labels_csv:
        raise InputError("lda and supervised_umap need known labels: pass --labels CSV (image_name,tags).")
    with open(labels_csv, newline="") as f:
        given = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}
    names = sorted(set(given.values()) - {"tags"})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(given.get(items[r].path), -1) for r in rows], dtype=np.int64)


def _similar(args) -> int:
    from engine.neighbors import find_similar
    ws, result, cache = _open(args)
    layer = args.layer or result.layers[-1]
    items = ws.items()
    by_path = {item.path: item.id for item in items}
    seeds = [_item_id(seed, ws, by_path) for seed in args.seed]
    features = cache.load(layer, args.pooling)
    exclude = ~cache.done_mask(len(items))
    indices, scores = find_similar(features, seeds, k=args.k, exclude=exclude, aggregate=args.aggregate)
    results = [{"path": items[i].path, "score": round(float(s), 4)} for i, s in zip(indices, scores)]
    if args.json:
        print(json.dumps({"layer": layer, "results": results}))
    else:
        for row in results:
            print(f"{row['score']:.3f}  {row['path']}")
    return 0


def _item_id(seed: str, ws: Workspace, by_path: dict[str, int]) -> int:
    candidate = Path(seed)
    seed_rel = ws.relative_name(candidate.resolve() if candidate.exists() else seed)  # as it exists here, or as listed there
    if candidate.exists() and Path(seed_rel).is_absolute():
        raise InputError(f"{seed}: not inside {ws.folder}; seeds must be images of that folder.")
    if seed_rel not in by_path:
        raise InputError(f"{seed}: not an image of {ws.folder} (give a path as listed there or as it exists here).")
    return by_path[seed_rel]


def _demo(args) -> int:
    """What the engine finds on the demo: per layer, how often an image's nearest neighbours share its digit."""
    from engine.demo import demo_truth
    from engine.neighbors import find_similar, knn_accuracy
    args.folder = None
    ws, result, cache = _open(args)
    with open(demo_truth(), newline="") as f:
        truth = dict(list(csv.reader(f))[1:])
    items = ws.items()
    labels = np.array([int(truth[item.path]) for item in items])
    cfg = get_backbone_cfg(args.backbone)
    layers = [{"layer": layer, "title": title, "dims": int(cache.load(layer, args.pooling).shape[1]),
               "knn_agreement": round(knn_accuracy(cache.load(layer, args.pooling), labels, k=args.k), 4)}
              for layer, title in zip(cfg.layers, cfg.layer_titles)]
    seed = 0
    best = max(layers, key=lambda row: row["knn_agreement"])["layer"]
    indices, scores = find_similar(cache.load(best, args.pooling), [seed], k=8)
    similar = [{"path": items[i].path, "score": round(float(s), 4), "digit": int(labels[i])}
               for i, s in zip(indices, scores)]
    if args.json:
        print(json.dumps({**result.to_json(), "folder": str(ws.folder), "layers": layers,
                          "similar_to": items[seed].path, "similar_layer": best, "similar": similar}))
        return 0
    print(f"demo: {len(items)} handwritten digits in {ws.folder}")
    print(f"{result.embedded} embedded, {result.cached} cached ({args.backbone} at {args.size}px, {args.pooling} pooling)\n")
    print(f"{'layer':14s} {'what it shows':28s} {'dims':>6s}  {args.k}-NN agreement with the true digit")
    for row in layers:
        print(f"{row['layer']:14s} {row['title']:28s} {row['dims']:6d}  {row['knn_agreement']:.3f}")
    print(f"\nmost similar to {items[seed].path} (a {labels[seed]}) in {best}, the layer that agrees best:")
    for row in similar:
        print(f"  {row['score']:.3f}  {row['path']}  (a {row['digit']})")
    return 0


def _clean_command(sub) -> None:
    from engine.clean import DEFAULT_DUPLICATE_THRESHOLD
    from labeler.cleaning import QUEUES
    cmd = _command(sub, "clean", "list likely label errors, top losses, duplicates and odd files to review", _clean)
    cmd.add_argument("--model", metavar="MODEL", help="a model from `labeler train --out`: also list its top losses")
    cmd.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD,
                     help="similarity from which two images are compared pixel by pixel; only pairs that pass "
                          "that check are near-duplicates (default %(default)s)")
    cmd.add_argument("--layers", nargs="+", metavar="LAYER", help="layers whose features predict the labels "
                                                                   "(default: the last)")
    cmd.add_argument("--queue", nargs="+", choices=QUEUES, metavar="NAME",
                     help=f"which queues (default all: {' '.join(QUEUES)})")
    cmd.add_argument("--top", type=int, default=20, help="rows shown per queue (default 20; 0: all)")
    cmd.add_argument("--cleaned", metavar="CSV", help="also write the kept items with corrected labels here")


def _clean(args) -> int:
    from labeler.cleaning import QUEUE_TITLES, QUEUES, build_queues
    from labeler.io import export_cleaned
    from labeler.project import Project
    from labeler.progress import stage_bars
    folder = _folder(args)
    with Project(folder, args.workspace) as project:
        with stage_bars() as progress:
            queues = build_queues(project, backbone=args.backbone, size=args.size, layers=args.layers,
                                  model=args.model, duplicate_threshold=args.threshold,
                                  queues=tuple(args.queue or QUEUES), progress=progress)
        written = export_cleaned(project, args.cleaned) if args.cleaned else None
    shown = {name: table if args.top <= 0 else table.head(args.top) for name, table in queues.items()}
    if args.json:
        cleaned = None if written is None else {"path": args.cleaned, "rows": written}
        print(json.dumps({"folder": str(folder), "cleaned": cleaned,
                          "queues": {name: {"total": len(queues[name]),
                                            "rows": json.loads(table.to_json(orient="records"))}
                                     for name, table in shown.items()}}))
        return 0
    for name, table in shown.items():
        more = f", top {len(table)}" if len(table) < len(queues[name]) else ""
        print(f"{QUEUE_TITLES[name]}: {len(queues[name])} item(s){more}")
        for row in table.itertuples(index=False):
            group = f"[group {row.group}{', keep' if row.keep else ''}] " if row.group >= 0 else ""
            print(f"  {row.score:6.3f}  {row.image_name}  {group}{row.reason}")
        print()
    if written is not None:
        print(f"wrote {written} kept items to {args.cleaned}")
    return 0


def _serve(args) -> int:
    from labeler.ui.serve import access_from, exposure, serve
    access = access_from(args)
    for line in exposure(args.address, args.port, access):
        print(line, file=sys.stderr)
    if args.ray:
        from labeler.project import RAY_ADDRESS_VARIABLE
        os.environ[RAY_ADDRESS_VARIABLE] = args.ray     # read where a project being opened computes its features
    serve(args.folder, port=args.port, address=args.address, access=access, workspace=args.workspace, show=args.show,
          backbone=args.backbone, size=args.size, backend=args.backend, actor=args.actor, raster_from=args.raster_from)
    return 0


def _backbones(args) -> int:
    table = {name: {"layers": list(get_backbone_cfg(name).layers), "description": cfg.description}
             for name, cfg in BACKBONES.items()}
    if args.json:
        print(json.dumps(table))
    else:
        for name, info in table.items():
            print(f"{name:16s} {', '.join(info['layers'])}  — {info['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
