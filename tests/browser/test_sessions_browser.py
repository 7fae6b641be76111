"""Twenty browser pages labeling one project at once (bench/sessions.py's driver, for a shorter time): nothing an
acknowledgement promised is lost, no page or server error, and one tab shows and says another's labels."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from labeler.testing import chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sessions", ROOT / "bench" / "sessions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


def test_twenty_sessions_labeling_at_once_lose_nothing_and_each_tab_sees_the_others(small_digits, tmp_path):
    pytest.importorskip("playwright.async_api")
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (bash setup.sh --dev installs it)")
    bench = _bench()
    report = bench.run(small_digits, sessions=20, seconds=20, seed=0, baseline_seconds=5, workdir=tmp_path)
    print(bench.table(report))

    assert report.errors == [] and report.server_tracebacks == 0
    assert len(report.load.actions) >= 20                       # every page labeled while the others did
    assert len({action.session for action in report.load.actions}) == 20
    assert report.lost == [] and report.fresh_page_mismatch == {}
    # overlapping selections were really written by several pages (the last write wins, checked above)
    touched = [set(action.ids) for action in report.load.actions]
    assert any(a & b for i, a in enumerate(touched) for b in touched[i + 1:])

    seen = report.cross_tab
    assert seen["b_told"] == f"Another tab labeled {seen['n_a']} images since your last action (shown here now)."
    assert re.fullmatch(rf"(\d+: )?crossA \({seen['n_a']}\)", seen["b_button"])     # its label button, A's count
    assert seen["b_undid"].startswith(f"Undid: label {seen['n_b']} items 'crossB'")   # B's own action, not A's
    assert seen["b_buttons_after_undo"] == {"crossA": seen["n_a"]}
