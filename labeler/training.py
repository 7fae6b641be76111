"""`labeler train` and `labeler predict`: the training engine from the command line.

Labels come from the label store (default), folder names (--folders), a CSV (--csv, with
--delimiter for multi-label), mask files (--masks DIR with --codes and --void) or points
(--points CSV of x0,y0,x1,y1,... columns). Training follows `Learner.fine_tune`: the head
first with the body frozen, then everything with discriminative learning rates.

A classifier trained from the label store stores its predictions for every image of the project
there (as `labeler predict --store` does for any classifier), under an id naming the model file
(`model_id_for_file`), for `labeler export --format predictions` and the app's checks.

`labeler predict` scores true labels (--labels, or --masks / --points as for training) with the task's
metrics exactly as training's validation computes them (`Predictor.metrics`); --out writes the predictions.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.data import InputError
from labeler._predictions import model_id_for_file
from labeler.held_out import add_test_options, choose_splitter, split_off_test, test_scores
from labeler.prediction_files import PredictionFiles, text_predictions
from labeler.recipe_options import add_recipe_options, recipe_callbacks
from labeler.unlabeled import add_unlabeled_options, has_label, split_unlabeled

logger = logging.getLogger(__name__)

PREDICT_BATCH = 32  # images per forward pass when predicting a whole folder


def add_commands(sub, make_command) -> None:
    """Add train and predict; `make_command(name, help, run)` gives a parser with the shared folder options."""
    cmd = make_command("train", "train a classifier, multi-label classifier, U-Net or point regressor (a classifier "
                                "trained from the label store also stores its predictions there)", run_train)
    source = cmd.add_argument_group("labels (default: the label store)")
    source.add_argument("--folders", action="store_true", help="labels are the images' folder names")
    source.add_argument("--csv", metavar="CSV", help="image_name,tags CSV")
    source.add_argument("--delimiter", help="separator of several labels in one cell (multi-label), e.g. ' '")
    _mask_and_point_options(source)
    split = cmd.add_argument_group("validation split (default: 20% at random)")
    split.add_argument("--valid-pct", type=float, default=0.2, metavar="FRACTION",
                       help="share of the images held out for validation (default %(default)s)")
    split.add_argument("--valid-list", metavar="TXT", help="file names of the validation images (e.g. valid.txt)")
    split.add_argument("--group-regex", metavar="REGEX", help="keep groups whole, e.g. '^(.*)_\\d+' for one person")
    split.add_argument("--seed", type=int, default=0,
                       help="fixes the split, the head's initial weights and the batches (default %(default)s)")
    add_test_options(cmd)
    add_unlabeled_options(cmd)
    fit = cmd.add_argument_group("training")
    fit.add_argument("--task", choices=_RegisteredTasks(), metavar="TASK",
                     help="one of %(choices)s (default: from the labels)")
    fit.add_argument("--epochs", type=int, default=3, help="epochs with everything trainable (default 3)")
    fit.add_argument("--freeze-epochs", type=int, default=1, help="epochs training the head only first (default 1)")
    fit.add_argument("--lr", type=_learning_rate, default="auto",
                     help="peak learning rate, or 'auto' for lr_find's suggestion (default auto)")
    fit.add_argument("--loss", choices=("mse", "l1"), default="mse", help="regression loss (default mse)")
    fit.add_argument("--dice", type=float, default=0.0, metavar="WEIGHT",
                     help="segmentation: add WEIGHT x soft Dice loss (mean over the classes in a batch, so rare ones "
                          "weigh as much as common ones) to the cross-entropy, e.g. 1.0 (default 0)")
    fit.add_argument("--class-weights", choices=("median", "sqrt"), default=None,  # engine.losses.CLASS_WEIGHTS
                     help="segmentation: weigh each class's pixels in the cross-entropy by how rare it is in the "
                          "training masks, so rare classes are not given up: median (median frequency balancing) "
                          "or sqrt (its square root, gentler) (default: off)")
    fit.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                     help="classifier: give the true class 1 - EPS and spread EPS over all (e.g. 0.1; default 0)")
    add_recipe_options(fit)
    fit.add_argument("--no-augment", action="store_true",
                     help="train on the images as they are (default: random flips, turns, zoom, warp and lighting)")
    fit.add_argument("--out", required=True, metavar="MODEL", help="where the exported model goes")
    _ray_option(fit, "the predictions stored for every image after training")

    text = ("predict images with a model from `labeler train`; with true labels, score it as training validates; "
            "--out writes the predictions, --store keeps a classifier's")
    cmd = sub.add_parser("predict", help=text, description=text)
    cmd.add_argument("model", metavar="MODEL", help="a model written by `labeler train --out`")
    cmd.add_argument("folder", nargs="?", metavar="FOLDER", help="folder of images (default: the built-in demo)")
    cmd.add_argument("--workspace", help="where the label store is (default FOLDER/.labeler); used by --store")
    cmd.add_argument("--only", metavar="TXT", help="predict only the images this file names, one a line, matched as "
                                                   "train's --valid-list matches (e.g. camvid/valid.txt)")
    cmd.add_argument("--store", action="store_true",
                     help="store the class probabilities of every image of the project in its label store "
                          "(classifiers), for `labeler export --format predictions` and the app")
    cmd.add_argument("--out", metavar="CSV",
                     help="write image_name and the prediction per image (label,confidence; labels; x0,y0,...); a "
                          "segmentation model also writes each mask (PNG of uint8 class indices at the image's size) "
                          "to the folder CSV-name_masks/ beside it (preds.csv: preds_masks/), named as --mask-suffix "
                          "names masks, and the CSV's mask column gives each file")
    cmd.add_argument("--batch-size", type=int, default=PREDICT_BATCH,
                     help="images per forward pass (default %(default)s)")
    cmd.add_argument("--workers", type=int, default=None,
                     help="image-decoding processes (default: none on 1-2 cores, else the cores but two, at most 4)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output on stdout (scores under metrics)")
    _ray_option(cmd)
    truth = cmd.add_argument_group("true labels: print the task's metrics over the images that have one, computed "
                                   "as training's validation computes them (at the model's size)")
    truth.add_argument("--labels", metavar="CSV", help="image_name,tags: accuracy of a classifier; mAP and F2 of a "
                                                       "multi-label one")
    truth.add_argument("--delimiter", help="separator of the tags in one --labels cell (default: a space for a "
                                           "multi-label model)")
    _mask_and_point_options(truth)
    cmd.set_defaults(run=run_predict)


def _ray_option(cmd, what: str = "the forward passes") -> None:
    cmd.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help=f"compute {what} on a Ray cluster, as `labeler embed --ray` does: ADDRESS as `ray start` "
                          "printed it, 'auto' for the one started here, none for a local instance (needs `pip install "
                          "labeler[ray]`; the folder must be at the same path on every node)")


def _mask_and_point_options(group) -> None:
    """The segmentation and point options, the same for train and predict."""
    group.add_argument("--masks", metavar="DIR", help="segmentation: folder of masks (uint8 class index)")
    group.add_argument("--mask-suffix", default=".png",
                       help="mask name = image stem + this (default %(default)s; CamVid: _P.png)")
    group.add_argument("--codes", metavar="TXT", help="segmentation: class names, one per line")
    group.add_argument("--void", type=int, default=None, help="segmentation: class index left out of loss and metrics")
    group.add_argument("--points", metavar="CSV", help="regression: image_name,...,x0,y0,x1,y1,... pixel coordinates")
    group.add_argument("--points-mean", action="store_true", help="regress the mean of the points (e.g. head centre)")


class _RegisteredTasks:
    """The registered task names as argparse `choices`, read from `engine.tasks` only when argparse checks a
    value or prints help: building the parser imports no torch."""

    def __iter__(self):
        from engine.tasks import TASKS
        return iter(list(TASKS))

    def __contains__(self, name) -> bool:
        return name in list(self)


def _learning_rate(value: str) -> float | None:
    """--lr: a number, or 'auto' (None: the learner's `suggest_lr`)."""
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor 'auto'") from None


def run_train(args) -> int:
    import torch

    from engine import Learner, Predictor, ProgressCallback, build_data, create_model
    from engine.data import discover_images
    from engine.demo import demo_folder
    from engine.learner import task_for
    from engine.tta import REPORTED, applies
    torch.manual_seed(args.seed)  # the same --seed gives the same head initialisation and batches
    np.random.seed(args.seed)
    folder = Path(args.folder) if args.folder else demo_folder()
    from_store = not (args.masks or args.points or args.folders or args.csv)
    images = discover_images(folder)
    items, labeler = _labels(args, folder, images)
    items, unlabeled = split_unlabeled(args, images, items, labeler)
    items, test_items = split_off_test(args, items)
    unlabeled = sorted(set(unlabeled) - set(test_items))
    data = build_data(folder, items, _splitter(args), labeler, task=args.task, size=args.size,
                      batch_size=args.batch_size, backbone=args.backbone, augment=not args.no_augment,
                      workers=args.workers or 0, seed=args.seed)
    bar = tqdm(desc="training", unit="epoch", file=sys.stderr, disable=None, leave=False)
    task = task_for(data, label_smoothing=args.label_smoothing, loss=args.loss, dice=args.dice,
                    class_weights=args.class_weights)
    learner = Learner(data, create_model(data.task, args.backbone, data.n_out), task=task,
                      callbacks=[ProgressCallback(lambda row: _report(bar, row))])
    learner.callbacks[:0] = recipe_callbacks(args)
    if unlabeled:
        learner.use_unlabeled(unlabeled, threshold=args.unlabeled_threshold, ratio=args.unlabeled_ratio,
                              weight=args.unlabeled_weight)
    lr = learner.fine_tune(args.epochs, args.lr, args.freeze_epochs)
    bar.close()
    summary = {"task": data.task, "train": len(data.items_train), "valid": len(data.items_valid), "lr": lr,
               "metrics": _rounded(learner.validate()), "out": str(args.out)}
    if unlabeled:
        summary["unlabeled"] = {"images": len(unlabeled), "threshold": args.unlabeled_threshold,
                                "pseudo_labeled": learner.history[-1].get("pseudo_labeled", 0.0)}
    for mode, key in REPORTED.items():
        if applies(learner.task, mode):
            summary[key] = _rounded(learner.validate(tta=mode))
    if (baseline := learner.baseline()) is not None:
        summary["baseline"] = _rounded(baseline)
    if test_items:         # scored once, after every choice was made on validation
        summary["test"] = test_scores(learner, folder, test_items, labeler, tta=True)
    learner.export(args.out)
    if from_store and learner.task.per_label_scores:
        summary["stored"] = store_predictions(Predictor.from_learner(learner), folder, args.workspace, args.out,
                                              ray=args.ray)
    print(json.dumps(summary) if args.json else _text_summary(summary))
    return 0


def _rounded(metrics: dict) -> dict:
    return {k: round(float(v), 4) for k, v in metrics.items()}


def _text_summary(summary: dict) -> str:
    lines = [f"{summary['task']}: {summary['train']} train / {summary['valid']} valid images, lr {summary['lr']:.2g}"]
    lines += [f"  {k}: {v:.4f}" for k, v in summary["metrics"].items()]
    if "unlabeled" in summary:
        unlabeled = summary["unlabeled"]
        lines.append(f"also learned from {unlabeled['images']} unlabeled images: in the last epoch "
                     f"{unlabeled['pseudo_labeled']:.0%} of their pseudo-labels were at least "
                     f"{unlabeled['threshold']:g} confident")
    for key, views in (("metrics_tta", "mirrored images"), ("metrics_tta_zoom", "mirrored and zoomed images")):
        if key in summary:
            lines.append(f"with test-time augmentation ({views} averaged in):")
            lines += [f"  {k}: {v:.4f}" for k, v in summary[key].items()]
    if "test" in summary:
        test = summary["test"]
        lines.append(f"on the {test['images']} test images, held out from every choice:")
        lines += [f"  {k}: {v:.4f}" + (f" (95% interval {test['intervals'][k][0]:.4f}-{test['intervals'][k][1]:.4f})"
                                       if k in test["intervals"] else "")
                  for k, v in test["metrics"].items() if v is not None]
    if "baseline" in summary:
        lines.append("an image-blind predictor (most common class, every tag, or the mean point) for comparison:")
        lines += [f"  {k}: {v:.4f}" for k, v in summary["baseline"].items()]
    lines.append(f"model written to {summary['out']}")
    if "stored" in summary:
        stored = summary["stored"]
        lines.append(f"its predictions for {stored['items']} images stored as {stored['model_id']!r} "
                     f"(labeler export --format predictions)")
    return "\n".join(lines)


def _report(bar, row: dict) -> None:
    if "progress" in row:
        bar.set_postfix(epoch=row["epoch"], loss=f"{row['loss']:.3f}")
    else:
        bar.update(1)
        bar.write(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  file=sys.stderr)


def _splitter(args):
    return choose_splitter(args.valid_list, args.valid_pct, args.group_regex, args.seed)


def _labels(args, folder: Path, images: list[str]):
    """(items, labeler) from the chosen label source."""
    from engine import LabelFromCSV, label_from_folder
    if args.masks:
        return _mask_labels(args, images)
    if args.points:
        return _points_labels(args, images)
    if args.folders:
        return images, label_from_folder
    if args.csv:
        labeler = LabelFromCSV(_existing(args.csv, "--csv"), delimiter=args.delimiter)
        rows = [p for p in images if has_label(labeler, p)]
        if not rows:
            raise InputError(f"--csv {args.csv!r} has a row for none of the {len(images)} images in {str(folder)!r}. "
                             "Check its image_name column against the file names.")
        if len(rows) < len(images) and args.unlabeled is None:
            print(f"{len(images) - len(rows)} of the {len(images)} images have no row in {args.csv!r}: left out "
                  "(--unlabeled learns from them too)", file=sys.stderr)
        return rows, labeler
    return _store_labels(folder, args.workspace, images)


def _existing(path, option: str) -> Path:
    if not Path(path).exists():
        raise InputError(f"{option} {str(path)!r} does not exist. Check the path.")
    return Path(path)


def _mask_labels(args, images: list[str]):
    """(the images with a mask, MaskLabel) from --masks, --mask-suffix, --codes and --void."""
    from engine import MaskLabel
    masks = _existing(args.masks, "--masks").resolve()
    codes = _existing(args.codes, "--codes").read_text().split() if args.codes else None
    if not codes:
        raise InputError("Segmentation needs --codes TXT (the class names, one per line).")
    labeler = MaskLabel(lambda p: masks / (Path(p).stem + args.mask_suffix), codes, args.void)
    return [p for p in images if labeler(p).exists()], labeler


def _points_labels(args, images: list[str]):
    """(the images with points, PointsLabel) from --points and --points-mean."""
    from engine import PointsLabel
    table = _points_table(_existing(args.points, "--points"), args.points_mean)
    return [p for p in images if p in table], PointsLabel(lambda p: table[p])


def _points_table(path: Path, mean: bool) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image_name" not in rows[0]:
        raise InputError(f"{path}: no rows or no image_name column. Expected image_name,...,x0,y0,x1,y1,...")
    xs = sorted((c for c in rows[0] if re.fullmatch(r"x\d+", c)), key=lambda c: int(c[1:]))
    if not xs:
        raise InputError(f"{path}: no x0,y0,... columns. Expected image_name,...,x0,y0,x1,y1,...")
    table = {}
    for row in rows:
        points = np.array([[float(row[x]), float(row["y" + x[1:]])] for x in xs], dtype=np.float32)
        table[row["image_name"]] = points.mean(0, keepdims=True) if mean else points
    return table


def _store_labels(folder: Path, workspace, images: list[str]):
    from labeler.project import Project
    with Project(folder, workspace) as project:
        labels = project.labels
        multi = project.multi_label
    if labels.empty:
        raise InputError(f"{folder} has no labels in its label store yet. Label images in the app, import a CSV "
                         f"(labeler import), or train from --folders / --csv / --masks / --points.")
    column = "labels" if multi else "label"
    table = dict(zip(labels["image_name"], labels[column]))
    items = [p for p in images if p in table]
    return items, lambda item: list(table[item]) if multi else table[item]


def run_predict(args) -> int:
    from engine import load_exported
    from engine.data import discover_images
    from engine.demo import demo_folder
    predictor = load_exported(args.model)
    folder = Path(args.folder) if args.folder else demo_folder()
    if args.store:
        _check_classifier(predictor, args.model)    # before predicting anything
    paths = discover_images(folder)
    paths = _only(args.only, paths) if args.only else paths
    truth, source = _true_labels(args, predictor, paths)
    files = PredictionFiles(args.out, args.mask_suffix) if args.out else None
    rows, outputs, targets, done = [], [], [], []
    for path, image_size, output, target in _predict_paths(predictor, folder, paths, truth, batch_size=args.batch_size,
                                                           workers=args.workers, ray=args.ray, model_file=args.model):
        result = predictor.task.decode(output, image_size, predictor.labels)
        rows.append({"path": path, **predictor.task.summary(result)})
        if files:
            files.add(path, rows[-1], result)
        if target is not None:
            outputs.append(output)
            targets.append(target)
        if args.store:
            done.append((path, image_size, output))
    out = {"predictions": rows, **(_scores(predictor, outputs, targets, source) if truth else {})}
    if files:
        out["out"] = files.close()
    if args.store:
        out["stored"] = store_predictions(predictor, folder, args.workspace, args.model, done)
    print(json.dumps(out) if args.json else text_predictions(out))
    return 0


def _only(path, images: list[str]) -> list[str]:
    """The images --only names (matched by file name or relative path, as ListSplit matches --valid-list)."""
    from engine import ListSplit
    _, listed = ListSplit(_existing(path, "--only"))(images)
    if not len(listed):
        raise InputError(f"--only {str(path)!r} names none of the {len(images)} images of the folder. Give file "
                         f"names or paths relative to FOLDER, one a line.")
    return [images[i] for i in listed]


def _true_labels(args, predictor, images: list[str]) -> tuple[dict, str | None]:
    """({image: its true label as labelers give it}, the file they come from) from --labels, --masks or --points.

    Raises:
        InputError: more than one source, a missing file, no image with a label, or labels of another task.
    """
    from engine.datablock import infer_task
    given = [option for option, value in (("--labels", args.labels), ("--masks", args.masks),
                                          ("--points", args.points)) if value]
    if not given:
        return {}, None
    if len(given) > 1:
        raise InputError(f"Give one source of true labels, not {' and '.join(given)}.")
    if args.labels:
        labeler, source = _csv_labeler(args, predictor), args.labels
        items = [item for item in images if _has_row(labeler, item)]
    else:
        items, labeler = _mask_labels(args, images) if args.masks else _points_labels(args, images)
        source = args.masks or args.points
    if not items:
        raise InputError(f"{source} gives a true label to none of the {len(images)} images predicted. Check the "
                         f"names it uses (and --mask-suffix for masks).")
    truth = {item: labeler(item) for item in items}
    named = infer_task(labeler, list(truth.values()))
    if named != predictor.task.name:
        raise InputError(f"{args.model} is a {predictor.task.name} model, but {source} holds labels of a {named} "
                         f"model. Score a classifier with --labels CSV, a segmentation model with --masks DIR "
                         f"--codes TXT and a point regressor with --points CSV.")
    if args.masks:
        _check_codes(args, labeler, predictor)
    return truth, source


def _csv_labeler(args, predictor):
    """--labels as a LabelFromCSV; a model that takes no single class name per image reads tags split on spaces."""
    from engine import LabelFromCSV
    delimiter = args.delimiter
    if delimiter is None and not type(predictor.task).matches(["a class name"]):
        delimiter = " "
    return LabelFromCSV(_existing(args.labels, "--labels"), delimiter=delimiter)


def _has_row(labeler, item: str) -> bool:
    try:
        labeler(item)
    except InputError:  # the CSV has no row for it: predicted, not scored
        return False
    return True


def _check_codes(args, labeler, predictor) -> None:
    """--codes and --void must be the model's: its outputs are indices into its own codes."""
    if labeler.codes != list(predictor.labels):
        raise InputError(f"--codes {args.codes!r} names {labeler.codes}, but {args.model} was trained on "
                         f"{list(predictor.labels)}. Give the codes file it was trained with.")
    model_void = predictor.task.config().get("void_code")
    if args.void is not None and args.void != model_void:
        raise InputError(f"--void {args.void}, but {args.model} leaves out code {model_void}. Give --void "
                         f"{model_void} or leave --void out.")


def _scores(predictor, outputs: list, targets: list, source: str) -> dict:
    """The task's metrics over the images with a true label (and "accuracy" on top, as before "metrics")."""
    from engine.errors import MetricError
    try:
        metrics = _rounded(predictor.metrics(outputs, targets))
    except MetricError as err:
        raise InputError(f"The labels of {source} do not fit the model's outputs: {err}") from None
    scores = {"metrics": metrics, "scored": len(targets), "labels_from": str(source)}
    if "accuracy" in metrics:
        scores["accuracy"] = metrics["accuracy"]
    return scores


def store_predictions(predictor, folder: Path, workspace, model_file, done=None, ray: str | None = None) -> dict:
    """Store the class probabilities of every present image of the project in its label store.

    `done`: (path, image size, output) rows already predicted for the folder's images; the images
    are predicted here when None (on the Ray cluster at `ray`, when given). The model id names the
    file and its contents (`model_id_for_file`): storing the same model again replaces its
    predictions, a retrained one is stored beside. Returns {"model_id", "items"}.

    Raises:
        InputError: the model is not a classifier (a mask or points per image are no class probabilities).
    """
    from labeler.project import Project
    _check_classifier(predictor, model_file)
    model_id = model_id_for_file(model_file)
    with Project(folder, workspace) as project:
        ids = {item.path: item.id for item in project.items if not item.missing}
        if done is None:
            done = _predict_paths(predictor, project.folder, list(ids), desc="predicting every image", ray=ray,
                                  model_file=model_file)
        done = [(path, output) for path, _, output, *_ in done if path in ids]
        probs = np.stack([output.numpy() for _, output in done]) if done else np.zeros((0, len(predictor.labels)))
        project.store.set_predictions(model_id, [ids[path] for path, _ in done], list(predictor.labels), probs)
    return {"model_id": model_id, "items": len(done)}


def _check_classifier(predictor, model_file) -> None:
    task = predictor.task
    if not task.per_label_scores:
        raise InputError(f"{model_file} is a {task.name} model; only classifiers (classify, multilabel) give class "
                         f"probabilities to store. Run `labeler predict` without --store to list its predictions.")


def _predict_paths(predictor, folder: Path, paths: list[str], targets=None, desc: str = "predicting",
                   batch_size: int = PREDICT_BATCH, workers: int | None = None, ray: str | None = None,
                   model_file=None):
    """`Predictor.labeled_outputs` for the folder's images, with a progress bar; with `ray` (an address) the
    forward passes run on that Ray cluster (`engine.ray_predict`, the exported `model_file` sent to its workers),
    or here when Ray is not installed."""
    from engine.ray_embed import ray_or_say_why_not
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        if ray is not None and model_file is not None and ray_or_say_why_not("predicting"):
            from engine.ray_predict import ray_outputs
            for path, size, output, target, _ in ray_outputs(model_file, folder, paths, targets, address=ray,
                                                             batch_size=batch_size, progress=bar.update):
                yield path, size, output, target
            return
        yield from predictor.labeled_outputs(folder, paths, targets, batch_size=batch_size, workers=workers,
                                             progress=bar.update)
