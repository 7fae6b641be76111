"""bench/tasks.py's table: the test-time augmentation reported is the one validation chose."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "tasks.py"
_spec = importlib.util.spec_from_file_location("bench_tasks", BENCH)
tasks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tasks)


def _row(metric: str, valid: tuple, test: tuple) -> dict:
    keys = ("metrics", "metrics_tta", "metrics_tta_zoom")
    return {"task": "classify", "metric": metric, "time_s": 10.0, "train": 30, "valid": 10,
            **{key: {metric: value} for key, value in zip(keys, valid)},
            "test": {"images": 20, "intervals": {metric: [0.5, 0.7]}, "baseline": {metric: 0.1},
                     **{key: {metric: value} for key, value in zip(keys, test)}}}


def test_the_views_are_chosen_on_validation_and_reported_on_test():
    # zoom is best on test, but validation chose flips: flips' test figure is the one reported
    row = _row("accuracy", (0.70, 0.75, 0.74), (0.60, 0.65, 0.90))
    assert tasks.chosen_views(row) == ("flips", 0.65)
    assert "| flips: 0.6500 |" in tasks.table([row]) and "0.7000, 0.7500, 0.7400" in tasks.table([row])
    # an error: lower is better; a tie goes to fewer views; a task without zoom chooses among the others
    assert tasks.chosen_views(_row("point_error_px", (4.0, 3.5, 3.5), (5.0, 4.5, 4.0))) == ("flips", 4.5)
    no_zoom = _row("point_error_px", (4.0, 4.4), (5.0, 4.5))
    assert tasks.chosen_views(no_zoom) == ("none", 5.0) and "4.0000, 4.4000, -" in tasks.table([no_zoom])
