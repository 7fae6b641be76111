"""Cleaning on ../shared/data/cifar10 with the real weights: flipped labels and planted copies are found.

A copy of the session's embedded cifar10 is made per module (the shared data is never written); the
helpers are bench/clean.py's, so the test measures what the benchmark reports.
"""
import importlib.util
import shutil
from pathlib import Path

import pytest

from engine import embed
from engine.clean import DEFAULT_DUPLICATE_THRESHOLD
from labeler.cleaning import build_queues
from labeler.io import import_folders
from labeler.project import Project

pytestmark = [pytest.mark.slow, pytest.mark.weights, pytest.mark.data]

_spec = importlib.util.spec_from_file_location("bench_clean", Path(__file__).resolve().parents[1] / "bench" / "clean.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def cifar(embedded_cifar10, tmp_path_factory):
    """A copy of the session's embedded cifar10 (its features come along: copies are planted here) labeled by
    folder, 5% of the labels flipped (seed 0): (folder, flipped ids)."""
    folder = tmp_path_factory.mktemp("clean_real") / "cifar10"
    shutil.copytree(embedded_cifar10, folder)      # file times kept: the features stay valid
    with Project(folder) as project:
        import_folders(project, folder)
        flipped = bench.flip_labels(project, 0.05, seed=0)
        embed(project.workspace)        # nothing left to compute: the fixture did
    return folder, flipped


def test_cifar10_flipped_labels_fill_most_of_the_top_150_label_issues(cifar):
    folder, flipped = cifar
    with Project(folder) as project:
        ranked = build_queues(project, queues=("label_issues",))["label_issues"]["item_id"].tolist()
    scores = bench.ranking_scores(ranked, flipped)
    print(f"cifar10, {len(flipped)} flipped: precision at 150 {scores['precision_at_150']:.3f}, "
          f"recall at 300 {scores['recall_at_300']:.3f}")
    assert len(flipped) == 150 and len(ranked) == 3000
    assert scores["precision_at_150"] >= 0.60


def test_cifar10_planted_copies_are_all_found_with_few_false_pairs(cifar):
    folder, _ = cifar
    with Project(folder) as project:
        before = build_queues(project, queues=("duplicates",))["duplicates"]
        planted = bench.plant_copies(folder, [item.path for item in project.items], n=50, seed=1)
        project.refresh_items(rescan=True)
        queue = build_queues(project, queues=("duplicates",))["duplicates"]
    scores = bench.duplicate_scores(queue, planted, bench.group_pairs(before))
    print(f"cifar10 (candidates from {DEFAULT_DUPLICATE_THRESHOLD}): {scores['found']}/{scores['planted']} planted "
          f"pairs found, {scores['false_pairs']} false of {scores['pairs']} pairs; {len(before)} listed before")
    assert len(before) < 30                               # under 1% of the 3000 photos
    assert scores["found"] == scores["planted"] == 50     # resized, JPEG, both, shifted, cropped, brighter
    assert scores["false_share"] < 0.01
