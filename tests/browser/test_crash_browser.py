"""Kill the served app with SIGKILL while Chromium labels in it: no label the page acknowledged is lost.

Drives `bench/crash.py` (the benchmark runs 20 kills; this test runs 6, each of the three moments twice):
labels by lasso and by a label's key, kills right after Enter (before the acknowledgement), right
after it, or a while later, restarts `labeler serve` on the same workspace each time, and reads the store
through its own API.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")]

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_crash", ROOT / "bench" / "crash.py")
crash = sys.modules["bench_crash"] = importlib.util.module_from_spec(_spec)   # dataclasses look it up there
_spec.loader.exec_module(crash)

KILLS = 6


def test_every_label_the_page_acknowledged_survives_sigkill_of_the_server(small_digits, tmp_path, page):
    report = crash.run(small_digits, tmp_path / "workspace", page, kills=KILLS, seed=0)
    cycles = report.cycles
    table = crash.table(report)
    assert len(cycles) == KILLS
    assert sorted(c.moment for c in cycles) == sorted(crash.MOMENTS * (KILLS // len(crash.MOMENTS)))
    assert sum(c.acked_images for c in cycles) > 0, table
    assert [c.lost for c in cycles] == [0] * KILLS, table
    assert [c.extra for c in cycles] == [0] * KILLS, table
    assert [c.integrity for c in cycles] == ["ok"] * KILLS, table
    in_flight = [c.in_flight for c in cycles if c.moment == "in-flight"]
    assert in_flight and "TORN" not in in_flight, table      # each in-flight action: all of its images or none
    assert [c.page_matches for c in cycles[1:]] == [True] * (KILLS - 1) and report.final_page_matches, table
    assert not any(c.traceback for c in cycles), table
