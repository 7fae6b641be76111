"""The command line: read the true labels, run the policies, print a table (or `--json`)."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from engine import Workspace
from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from labeler.finetune import TrainSpec

from .runner import BASELINES, POLICY_NAMES, PolicyError, benchmark
from .truth import FACES_HIGH, FACES_LOW, TruthError, faces_direction, truth_from_csv, truth_from_folders


def table(report: dict) -> str:
    """The report as a markdown table of actions and accuracy per level, and a few lines on the annotator."""
    levels = report["levels"]
    head = ["policy"] + [f"actions to {lv:.0%}" for lv in levels] + [f"accuracy at {lv:.0%}" for lv in levels]
    head += [f"{lv:.0%}: x fewer than {other}" for other in BASELINES for lv in levels[-1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, result in report["results"].items():
        stones = result["milestones"]
        cells = [name] + [f"{m['actions']:,}" if m["actions"] is not None else "-" for m in stones]
        cells += [f"{m['accuracy']:.3f}" if m["accuracy"] is not None else "-" for m in stones]
        for other in BASELINES:
            ratio = report["ratios"].get(name, {}).get(f"vs {other}", [None])[-1]
            cells.append(f"{ratio:.2f}x" if ratio else "")
        lines.append("| " + " | ".join(cells) + " |")
    layers = ", ".join(f"{row['layer']} ({row['labeled']})" for row in report["useful_layers"])
    views = report["results"].get("annotator", {}).get("views", {})
    purity = ", ".join(f"{k} {v['purity']:.2f}" for k, v in sorted(views.items(), key=lambda kv: -kv[1]["purity"]))
    classes = ", ".join(f"{k} {v}" for k, v in report["classes"].items())
    annotator = report["results"].get("annotator", {})
    checks = ", ".join(f"{k}: {v['labeled']} labeled in {v['lassos']} checks, {v['purity']:.2f} predicted right, "
                       f"{v['actions']} actions" for k, v in annotator.get("checks", {}).items())
    tuned = report["results"].get("annotator + fine-tune", {})
    seconds = ", ".join(f"{t:.0f} s" for t in tuned.get("fine_tune_seconds", []))
    accepted = [a for t in annotator.get("trains", []) for a in t["accepted"]]
    accepts = ", ".join(f"{a['count']} at >= {a['threshold']} ({a['checked']} checked right)" for a in accepted)
    return "\n".join([f"{report['folder']}: {sum(report['classes'].values())} images ({classes})", "", *lines, "",
                      f"Items labeled per layer by the annotator's lassos and find similar: {layers}",
                      f"Purity of the annotator's lassos per view: {purity}",
                      f"The annotator's checks of predictions, by threshold: {checks or 'none'}",
                      f"Accepted unseen: {accepts or 'none'}"]
                     + ([f"Fine-tunes of 'annotator + fine-tune' (wall time on this machine, not actions): {seconds}",
                         "Its fine-tunes: " + "; ".join(f"{t['labeled']} labels, validation {t['validation']}"
                                                        for t in tuned.get("fine_tunes", [])),
                         "Its trainings: " + "; ".join(f"{t['labeled']} labels ({t['model']}), estimate {t['estimate']}, "
                                                       f"accepted {sum(a['count'] for a in t['accepted'])}"
                                                       for t in tuned.get("trains", []))] if tuned else []))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    folder = args.folder.resolve()
    workspace = args.workspace or _default_workspace(folder)
    paths = [item.path for item in Workspace(folder, workspace).sync_items()]
    try:
        if args.labels:
            truth = truth_from_csv(args.labels)
        elif args.faces_direction:
            truth = faces_direction(args.faces_direction)
        else:
            truth = truth_from_folders(paths)
        truth = {p: truth[p] for p in paths if p in truth}
        report = benchmark(folder, truth, workspace, backbone=args.backbone,
                           size=args.size, policies=[name.strip() for name in args.policies.split(",")],
                           max_cost=args.max_cost, drop_odd=args.drop_odd, seed=args.seed,
                           fine_tune_spec=TrainSpec(size=args.fine_tune_size, epochs=args.fine_tune_epochs,
                                                    augment=not args.fine_tune_no_augment, seed=args.seed,
                                                    unlabeled=args.fine_tune_unlabeled))
    except (TruthError, PolicyError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    summary = sys.modules[__package__].__doc__.split("\n")[0]       # the package docstring's first line
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument("folder", type=Path)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--labels", type=Path, metavar="CSV", help="true labels as image_name,tags (default: folder names)")
    source.add_argument("--faces-direction", type=Path, metavar="KEYPOINTS",
                        help=f"true labels: head direction from a 68-point keypoints CSV (nose tip 30 vs jaw ends 0 "
                             f"and 16: left below {FACES_LOW}, right above {FACES_HIGH})")
    parser.add_argument("--workspace", type=Path, help="where features and the policies' label stores go "
                                                       "(default: a folder under the system's temp dir)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--policies", default=",".join(POLICY_NAMES),
                        help="which policies to run, comma-separated (default: all four)")
    parser.add_argument("--max-cost", type=float, default=None,
                        help="label a lasso's majority only while (label + drops) / labeled <= this "
                             "(default inf: never leave a lasso unlabeled; 2 was the earlier rule)")
    parser.add_argument("--drop-odd", action="store_true",
                        help="drop the odd ones out of a review (one click each) instead of labeling each by itself "
                             "with its label's key")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the lassos' centres, the checks' samples and the one-at-a-time order")
    tune = parser.add_argument_group("the fine-tune action (policy 'annotator + fine-tune'; the Model tab's defaults)")
    tune.add_argument("--fine-tune-size", type=int, default=TrainSpec.size, help="image size (default %(default)s)")
    tune.add_argument("--fine-tune-epochs", type=int, default=TrainSpec.epochs,
                      help="epochs of the whole network after one of the head (default %(default)s)")
    tune.add_argument("--fine-tune-no-augment", action="store_true",
                      help="no flips, turns or zoom: for labels a mirror image changes (head direction)")
    tune.add_argument("--fine-tune-unlabeled", action="store_true",
                      help="the fine-tunes learn from the images not labeled yet too (the Model tab's 'use the "
                           "unlabeled images too')")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def _default_workspace(folder: Path) -> Path:
    return Path(tempfile.gettempdir()) / "labeler-annotate" / folder.as_posix().strip("/").replace("/", "_")
