"""Running the policies: one shared workspace of features, a fresh label store per policy, the judge's
milestones per policy and the ratios between them."""
from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine import Workspace, embed
from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from labeler.project import Project
from labeler.session import Session

from .annotator import Annotator
from .cost import LEVELS, Desk, Judge, Oracle, PeekError
from .policy import POLICIES, Policy
from .truth import TruthError

ONE_AT_A_TIME = "one at a time"
POLICY_NAMES = (*POLICIES, ONE_AT_A_TIME)          # annotator, one view, one at a time
BASELINES = ("one view", ONE_AT_A_TIME)            # what the ratios compare each policy with


class PolicyError(ValueError):
    """A policy name that is not one of POLICY_NAMES."""


def prepare(folder: Path, workspace: Path, backbone: str, size: int, **embed_args) -> Workspace:
    """The shared workspace: items and features of every layer (embedded once, then reused)."""
    base = Workspace(folder, workspace)
    result = embed(base, backbone=backbone, size=size, **embed_args)
    if result.skipped:
        print(f"{len(result.skipped)} unreadable image(s) left out", file=sys.stderr)
    base.cache_dir("projections")
    return base


def fresh_project(base: Workspace, name: str, *, backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE
                  ) -> Project:
    """An empty label store for one policy, beside the shared features and projection cache; its map
    shows the features of `backbone` at `size`."""
    root = base.root / "runs" / name.replace(" ", "-")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "features").mkdir()      # the backbone's features are shared; a fine-tuned model's layer is the run's
    for cache in (base.root / "features").iterdir():
        (root / "features" / cache.name).symlink_to(cache, target_is_directory=True)
    (root / "projections").symlink_to(base.root / "projections", target_is_directory=True)
    source, target = sqlite3.connect(base.db_path), sqlite3.connect(root / base.db_path.name)
    with target:
        source.backup(target)
        for table in ("assignments", "predictions", "events", "exclusions", "label_defs", "checks", "decisions"):
            if target.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                target.execute(f"DELETE FROM {table}")
    source.close()
    target.close()
    return Project(base.folder, root, actor=name, backbone=backbone, size=size)


def lasso_policy(name: str, max_cost: float | None = None, drop_odd: bool = False) -> Policy:
    """The lasso policy called `name`, with the command line's changes to it."""
    policy = POLICIES[name]
    if max_cost is not None:
        policy = replace(policy, max_cost=max_cost)
    if drop_odd:
        policy = replace(policy, label_odd=False)
    return policy


def run_policy(name: str, base: Workspace, truth_by_path: dict[str, str], *, backbone: str, size: int,
               max_cost: float | None = None, drop_odd: bool = False, seed: int = 0,
               goal: float = LEVELS[-1], progress=None, fine_tune_spec=None) -> dict:
    """One policy from an empty store to `goal` labeled; the judge notes each level's actions and accuracy."""
    progress = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    with fresh_project(base, name, backbone=backbone, size=size) as project:
        session = Session(project)
        truth = _truth_by_row(project, session, truth_by_path)
        judge = Judge(truth, session)
        desk = judge.desk = Desk(session, judge, seed)
        desk.fine_tune_spec = fine_tune_spec
        oracle = Oracle(truth, session)
        if name == ONE_AT_A_TIME:
            order = np.random.default_rng(seed).permutation(session.rows)
            for item in order[:int(np.ceil(goal * len(order)))]:
                desk.label_one(int(item), oracle)
            extra = {}
        else:
            annotator = Annotator(lasso_policy(name, max_cost, drop_odd), session, desk, oracle, goal, progress)
            annotator.run()
            extra = _annotator_report(annotator)
        if not oracle.looked <= desk.shown:
            raise PeekError("the oracle showed items that were never in the review grid")
        progress(f"{name}: {desk.actions} actions, {judge.labeled_fraction:.1%} labeled, "
                 f"{time.perf_counter() - started:.0f} s")
        return {"policy": name, "items": len(session.rows), "actions": desk.actions,
                "actions_by_kind": dict(desk.by_kind), "looked_at": len(oracle.looked),
                "milestones": [judge.milestones.get(level, {"level": level, "actions": None, "labeled": None,
                                                            "accuracy": None}) for level in LEVELS],
                "seconds": round(time.perf_counter() - started, 1),
                "fine_tune_seconds": [round(t, 1) for t in desk.fine_tune_seconds], **extra}


def _truth_by_row(project: Project, session: Session, truth_by_path: dict[str, str]) -> dict[int, str]:
    """The true label of every drawn item, by item id."""
    paths = {item.id: item.path for item in project.items}
    unknown = [paths[int(i)] for i in session.rows if paths[int(i)] not in truth_by_path]
    if unknown:
        raise TruthError(f"{len(unknown)} image(s) have no true label, e.g. {unknown[:3]}")
    return {int(i): truth_by_path[paths[int(i)]] for i in session.rows}


def _annotator_report(annotator: Annotator) -> dict:
    """What a lasso policy learned on the way: its lassos per view, find similar per layer, checks, trainings."""
    return {"views": {f"{k[0]} / {k[1]}": o.to_json() for k, o in annotator.outcomes.items() if o.lassos},
            "find_similar": {k: o.to_json() for k, o in annotator.similar.items() if o.lassos},
            "checks": {f">= {t}": o.to_json() for t, o in annotator.checks_by_rung.items()},
            "trains": annotator.trains, "fine_tunes": annotator.fine_tunes}


def useful_layers(result: dict) -> list[dict]:
    """Per layer: items labeled there by lassos and find similar, and the purity of its lassos."""
    per_layer = defaultdict(lambda: {"labeled": 0, "free": 0, "majority": 0})
    for key, out in result.get("views", {}).items():
        layer = key.split(" / ")[0]
        per_layer[layer]["labeled"] += out["labeled"]
    for layer, out in result.get("find_similar", {}).items():
        per_layer[layer]["labeled"] += out["labeled"]
    return sorted(({"layer": k, **v} for k, v in per_layer.items()), key=lambda row: -row["labeled"])


def benchmark(folder: Path, truth_by_path: dict[str, str], workspace: Path, *, backbone: str = DEFAULT_BACKBONE,
              size: int = DEFAULT_SIZE, policies=POLICY_NAMES, progress=None,
              max_cost: float | None = None, drop_odd: bool = False, seed: int = 0, fine_tune_spec=None,
              **embed_args) -> dict:
    """Every policy on the same folder and features; the report that `--json` prints."""
    unknown = [name for name in policies if name not in POLICY_NAMES]
    if unknown:
        raise PolicyError(f"unknown policy {unknown[0]!r}; choose from {', '.join(map(repr, POLICY_NAMES))}")
    base = prepare(folder, workspace, backbone, size, **embed_args)
    results = {name: run_policy(name, base, truth_by_path, backbone=backbone, size=size, progress=progress,
                                max_cost=max_cost, drop_odd=drop_odd, seed=seed, fine_tune_spec=fine_tune_spec)
               for name in policies}
    ratios = {}
    for name, result in results.items():
        for other in BASELINES:
            if other in results and other != name:
                ratios.setdefault(name, {})[f"vs {other}"] = [
                    _ratio(b["actions"], a["actions"]) for a, b in zip(result["milestones"], results[other]["milestones"])]
    classes = Counter(truth_by_path[p] for p in truth_by_path)
    return {"folder": str(folder), "backbone": backbone, "size": size, "seed": seed, "levels": list(LEVELS),
            "classes": dict(sorted(classes.items())), "results": results, "ratios": ratios,
            "useful_layers": useful_layers(results.get("annotator", {}))}


def _ratio(baseline, ours):
    return None if not baseline or not ours else round(baseline / ours, 2)
