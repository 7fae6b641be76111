"""A test split that no choice sees, for `labeler train`: held out before the train/validation split, scored once
at the end with a bootstrap 95% interval.

Recipes are chosen on validation (its metrics are what `lr_find`, the epochs and the settings were tuned by);
a figure to report is the test split's. The test split has its own seed (`--test-seed`, 0 by default), so trying
recipes with other `--seed`s never moves it; `--test-list` names it instead (a file of names, as `--valid-list`),
and with `--group-regex` a group (a person, a sequence) is never split between test and the rest. Nothing is
tuned on the test images: a multi-label model keeps the threshold it chose on validation
(`Task.held_out_metrics`).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np

from engine.errors import InputError


def add_test_options(parser) -> None:
    group = parser.add_argument_group("test split (held out from every choice; scored once, at the end)")
    group.add_argument("--test-pct", type=float, default=0.0, metavar="FRACTION",
                       help="share of the images held out as a test split before the validation split (default 0: "
                            "none); groups stay whole with --group-regex")
    group.add_argument("--test-list", metavar="TXT", help="file names of the test images, one a line")
    group.add_argument("--test-seed", type=int, default=0,
                       help="fixes the test split whatever --seed is (default %(default)s)")


def choose_splitter(listed, pct: float, group_regex: str | None, seed: int):
    """The split a list of names gives (`ListSplit`), else one keeping `group_regex`'s groups whole (`GroupSplit`),
    else a seeded random one: `pct` of the items go to the second part (validation, or test)."""
    from engine import GroupSplit, ListSplit, RandomSplit
    if listed:
        return ListSplit(listed)
    if group_regex:
        pattern = re.compile(group_regex)
        return GroupSplit(lambda item: group_of(pattern, item), valid_pct=pct, seed=seed)
    return RandomSplit(pct, seed=seed)


def split_off_test(args, items: list[str]) -> tuple[list[str], list[str]]:
    """(the images left for training and validation, the test images), in their order."""
    if not args.test_list and not args.test_pct:
        return items, []
    if args.test_list and args.test_pct:
        raise InputError("Give --test-list or --test-pct, not both.")
    if args.test_list and not Path(args.test_list).is_file():
        raise InputError(f"--test-list {args.test_list!r} does not exist. Check the path.")
    if not args.test_list and not 0 < args.test_pct < 1:
        raise InputError(f"--test-pct {args.test_pct} is not a share between 0 and 1, e.g. 0.2.")
    rest, test = choose_splitter(args.test_list, args.test_pct, args.group_regex, args.test_seed)(items)
    if not len(test):
        raise InputError(f"The test split holds none of the {len(items)} images: check --test-list or --test-pct.")
    return [items[i] for i in rest], [items[i] for i in test]


def group_of(pattern: re.Pattern, item: str) -> str:
    """The group `pattern`'s first group finds in the file name's stem (the whole stem when it finds none)."""
    match = pattern.search(Path(item).stem)
    return match.group(1) if match and match.groups() else Path(item).stem


def test_scores(learner, folder: Path, test_items: list[str], labeler, *, tta: bool = False) -> dict:
    """{"images", "metrics", "intervals"} of the trained `learner` on the test images, scored as validation scores
    (validation's pipeline at the model's size, over the whole set at once; `engine.predictor`) but tuning nothing;
    `tta` adds, where they apply to the task, "metrics_tta" (each output averaged with the mirrored image's) and,
    for a task whose output is about the whole image, "metrics_tta_zoom" (with a zoomed centre crop too:
    `engine.tta`); "baseline" is the task's image-blind predictor on them (most common training class, every tag
    and the tag-frequency ranking, the mean point)."""
    import torch

    from engine.metrics import bootstrap_intervals
    from engine.predictor import Predictor
    from engine.tta import REPORTED, applies
    predictor = Predictor.from_learner(learner)
    targets = {item: labeler(item) for item in test_items}
    task = copy.deepcopy(learner.task)

    def scored(views):
        rows = list(predictor.labeled_outputs(folder, test_items, targets, workers=0, tta=views))
        if not rows:
            raise InputError("No test image could be read: nothing to score.")
        return torch.stack([row[2] for row in rows]), torch.stack([row[3] for row in rows])
    outputs, truth = scored(False)
    metrics = task.held_out_metrics(outputs, truth)
    intervals = bootstrap_intervals(task.held_out_metrics, outputs, truth) if len(truth) > 1 else {}
    scores = {"images": int(len(truth)), "metrics": _rounded(metrics),
              "intervals": {k: [round(a, 4), round(b, 4)] for k, (a, b) in intervals.items() if k != "threshold"}}
    train_targets = learner.data.train.dataset.label_targets()
    if train_targets is not None and (baseline := task.baseline(train_targets, truth)) is not None:
        scores["baseline"] = _rounded(baseline)    # the image-blind predictor fitted on training, on these images
    for mode, key in REPORTED.items():
        if tta and applies(task, mode):
            scores[key] = _rounded(task.held_out_metrics(*scored(mode)))
    return scores


def _rounded(metrics: dict) -> dict:
    return {k: round(float(v), 4) if np.isfinite(float(v)) else None for k, v in metrics.items()}
