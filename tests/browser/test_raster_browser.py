"""The server-drawn map (labeler/ui/raster.py) in Chromium: `labeler serve --raster-from 0` draws every map as one
image per view, as a map of 50k points and more is drawn. A lasso selects from Python (the review fills and the
image shows the selection), a label recolours the image, the pointer resting on a point previews its image, and
zooming redraws the image for the new view."""
import re
import sys
from pathlib import Path

import pytest

from labeler.testing import (assert_no_traceback, canvases, lasso, map_image_url, open_server_drawn_map, start_server,
                             stop_server, wait_until, watched_page)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from monkey import fresh_copy, prepared_workspace, store_counts_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_server_drawn_map_selects_labels_previews_and_zooms(small_digits, browser, tmp_path):
    workspace = fresh_copy(prepared_workspace(small_digits, tmp_path / "prepared"), tmp_path / "workspace")
    proc, url = start_server(small_digits, workspace, options=["--raster-from", "0"])
    context, page, errors = watched_page(browser)
    try:
        drawn = open_server_drawn_map(page, url)

        lasso(page)
        selected = page.get_by_text(re.compile(r"\d+ selected")).first
        selected.wait_for(timeout=30_000)
        count = int(re.search(r"(\d+) selected", selected.inner_text()).group(1))
        assert count > 3
        wait_until(lambda: map_image_url(page) != drawn)          # the selection is drawn into the image
        shown = map_image_url(page)

        field = page.get_by_placeholder("new label, then Enter")
        field.fill("middle")
        field.press("Enter")
        page.get_by_text(f"Labeled {count} images").wait_for(timeout=30_000)
        wait_until(lambda: map_image_url(page) != shown)          # recoloured
        assert store_counts_for(small_digits, workspace)() == {"middle": count}

        # the pointer resting on the lassoed region previews the image under it
        box = canvases(page)[0]
        preview = page.locator("img[src^='data:image/jpeg']").filter(visible=True)
        before = preview.count()
        # (a few hundred points leave gaps wider than the hover's reach: rest at places 10 px apart till one hits)
        for dx, dy in [(dx, dy) for dx in range(-50, 51, 10) for dy in range(-30, 31, 10)]:
            page.mouse.move(box["x"] + box["width"] * 0.5 + dx, box["y"] + box["height"] * 0.5 + dy)
            page.wait_for_timeout(250)
            if preview.count() > before:
                break
        assert preview.count() > before, ("no preview for the point under the pointer",
                                          page.evaluate("() => Bokeh.documents[0].get_model_by_name('pointer').text"))

        # zooming in redraws the points for the new view
        zoomed = map_image_url(page)
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.mouse.wheel(0, -600)
        wait_until(lambda: map_image_url(page) != zoomed, timeout=30)
    finally:
        context.close()
        log = stop_server(proc)
    assert_no_traceback(log)
    assert errors == []
