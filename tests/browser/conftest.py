"""A served app on a small folder of real images, and a headless Chromium page on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from labeler.testing import (CHROMIUM_FLAGS, assert_no_traceback, chromium_path, copy_demo_digits, start_server,
                             stop_server)


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory) -> Path:
    """300 real handwritten digits from the built-in demo (30 per class), in a fresh folder."""
    return copy_demo_digits(tmp_path_factory.mktemp("digits"), per_class=30)


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
