"""A served app on a small folder of real images, and a headless Chromium page on it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeler.testing import CHROMIUM_FLAGS, assert_no_traceback, chromium_path, start_server, stop_server


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory) -> Path:
    """300 real handwritten digits from the built-in demo (30 per class), in a fresh folder."""
    import csv
    from engine.demo import demo_folder, demo_truth
    source = demo_folder()
    with open(demo_truth(), newline="") as f:
        rows = list(csv.reader(f))[1:]
    folder = tmp_path_factory.mktemp("digits")
    taken: dict[str, int] = {}
    for name, digit in rows:
        if taken.get(digit, 0) < 30:
            shutil.copy(source / name, folder / name)
            taken[digit] = taken.get(digit, 0) + 1
    return folder


@pytest.fixture
def served(small_digits, tmp_path):
    proc, url = start_server(small_digits, tmp_path / "workspace")
    yield url
    assert_no_traceback(stop_server(proc))


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (bash setup.sh --dev installs it)")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()
