"""The map usable at 100k real images (issue 18): a folder of LABELER_SCALE_IMAGES distinct photos made from
../shared/data by bench/make_folder.py, embedded by `labeler embed`, served, and in Chromium a lasso and a label.

Opt-in: the embedding alone takes about 15 minutes at 100k on 2 cores, so the suite skips it unless
LABELER_SCALE_IMAGES is set (e.g. 100000). The folder and its workspace are kept under LABELER_SCALE_WORK
(default /tmp/labeler-scale, the folders `bench/scale.py` makes): a second run reuses the features, thumbnails
and projections and only labels again. What it checks: the map is the server-drawn image (past 50k points), a
lasso selects and the page says how many, the image shows the selection, a typed label reaches the store for
exactly those images, and the image is recoloured; no page error, no traceback in the server log.

    LABELER_SCALE_IMAGES=100000 .venv/bin/python -m pytest tests/browser/test_scale_browser.py
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeler.testing import (assert_no_traceback, lasso, map_image_url, open_server_drawn_map, start_server, stop_server,
                             wait_until, watched_page)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from make_folder import SHARED, make_folder  # noqa: E402
from monkey import store_counts_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
IMAGES = int(os.environ.get("LABELER_SCALE_IMAGES", "0") or 0)
WORK = Path(os.environ.get("LABELER_SCALE_WORK", "/tmp/labeler-scale"))


@pytest.fixture(scope="module")
def embedded_folder():
    if not IMAGES:
        pytest.skip("set LABELER_SCALE_IMAGES (e.g. 100000) to run the map at scale: about 15 minutes of embedding")
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the folder is made from its photos")
    folder = WORK / f"photos-{IMAGES}"
    make_folder(folder, IMAGES, log=lambda message: None)
    embedded = subprocess.run([sys.executable, "-m", "labeler.cli", "embed", str(folder)], cwd=ROOT,
                              capture_output=True, text=True, timeout=7200)
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    return folder


def _labels(folder: Path) -> dict[str, int]:
    return store_counts_for(folder, folder / ".labeler")()


def test_a_lasso_and_a_label_on_the_map_of_a_hundred_thousand_images(embedded_folder, browser):
    name = f"scale-{int(time.time())}"
    before = _labels(embedded_folder)
    proc, url = start_server(embedded_folder, timeout=3600.0)
    context, page, errors = watched_page(browser)
    try:
        drawn = open_server_drawn_map(page, url, timeout_s=1800)
        for box in ((0.3, 0.7, 0.3, 0.7), (0.1, 0.5, 0.1, 0.5), (0.5, 0.9, 0.5, 0.9)):     # till one selects
            lasso(page, *box)
            selected = page.get_by_text(re.compile(r"[1-9]\d* selected")).first
            try:
                selected.wait_for(timeout=60_000)
                break
            except Exception:
                continue
        count = int(re.search(r"(\d+) selected", selected.inner_text()).group(1))
        assert count >= 100
        wait_until(lambda: map_image_url(page) != drawn, timeout=60)         # the selection drawn into the image
        shown = map_image_url(page)
        page.screenshot(path=str(WORK / f"scale-{IMAGES}-selected.png"))

        field = page.get_by_placeholder("new label, then Enter")
        field.fill(name)
        field.press("Enter")
        page.get_by_text(f"Labeled {count} images").first.wait_for(timeout=120_000)
        wait_until(lambda: map_image_url(page) != shown, timeout=60)         # recoloured
        page.screenshot(path=str(WORK / f"scale-{IMAGES}-labeled.png"))
        after = _labels(embedded_folder)
        assert after.get(name) == count
        # (single-label: images of the lasso that had another label now have this one; no other image changed)
        relabeled = sum(before.values()) + count - sum(after.values())
        assert 0 <= relabeled <= count and all(after.get(k, 0) <= v for k, v in before.items())
        assert not errors, errors
    finally:
        context.close()
        log = stop_server(proc)
    assert_no_traceback(log)
