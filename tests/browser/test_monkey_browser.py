"""A seeded monkey in the served app (bench/monkey.py): random clicks, keys, lassos, typed labels, tab switches,
reloads and undo bursts, pressed without waiting for the work they start, on 300 real digits.

After each run: no page error or dialog, no traceback in the server log, the page still answers (it reloads
and downloads its labels CSV), no label name became HTML, and the labels the page shows equal the store's.
Each seed runs LABELER_MONKEY_ACTIONS actions (250 by default, to keep the suite's time; the README's table is
`bench/monkey.py --seeds 0 1 2 --actions 500`).
"""
import os
import sys
from pathlib import Path

import pytest

from labeler.testing import assert_no_traceback, start_server, stop_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from monkey import Monkey, fresh_copy, prepared_workspace, problems, store_counts_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ACTIONS = int(os.environ.get("LABELER_MONKEY_ACTIONS", "250"))


@pytest.fixture(scope="module")
def prepared(small_digits, tmp_path_factory):
    return prepared_workspace(small_digits, tmp_path_factory.mktemp("monkey") / "prepared")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_seeded_monkey_leaves_no_error_and_the_page_equal_to_the_store(small_digits, prepared, browser, tmp_path,
                                                                         seed):
    workspace = fresh_copy(prepared, tmp_path / "workspace")
    proc, url = start_server(small_digits, workspace)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        monkey = Monkey(context.new_page(), url, seed, server=proc)
        run = monkey.go(ACTIONS)
        monkey.settle_and_compare(store_counts_for(small_digits, workspace))
    finally:
        context.close()
        log = stop_server(proc)
    assert_no_traceback(log)
    assert run.total == ACTIONS
    assert not problems(run), problems(run)
    assert sum(run.store.values()) > 0, "the monkey labeled nothing: its actions no longer reach the app"
