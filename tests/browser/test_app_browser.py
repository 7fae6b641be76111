"""The whole labeling workflow in headless Chromium against `labeler serve`."""
import csv
import io
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _map_box(page):
    """Bounding box of the map's canvas: the topmost canvas (the review grid is below it)."""
    return _canvases(page)[0]


def _canvases(page) -> list[dict]:
    boxes = [c.bounding_box() for c in page.locator("canvas").all()]
    return sorted((b for b in boxes if b and b["width"] > 300), key=lambda b: b["y"])


def _lasso(page, fx0=0.3, fx1=0.7, fy0=0.3, fy1=0.7):
    box = _map_box(page)
    x0, x1 = box["x"] + box["width"] * fx0, box["x"] + box["width"] * fx1
    y0, y1 = box["y"] + box["height"] * fy0, box["y"] + box["height"] * fy1
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def _wait_until(condition, timeout=20.0):
    import time
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def _selected_count(page) -> int:
    text = page.get_by_text(re.compile(r"\d+ selected")).first.inner_text(timeout=20_000)
    return int(re.search(r"(\d+) selected", text).group(1))


def test_label_workflow_in_the_browser(served, page):
    page.goto(served)
    layer = page.get_by_text(re.compile(r"^Layer: "))
    layer.wait_for(timeout=120_000)
    first_layer = layer.inner_text()
    page.locator("body").click(position={"x": 5, "y": 950})
    page.keyboard.press("ArrowRight")
    _wait_until(lambda: layer.inner_text() != first_layer)
    lassoed_layer = layer.inner_text()

    # lasso a region, review it, drop one, label the rest with a new label
    _lasso(page)
    selected = _selected_count(page)
    assert selected > 3
    cell = [b for b in _canvases(page) if b["y"] > _map_box(page)["y"] + 100][0]
    page.mouse.click(cell["x"] + 36, cell["y"] + 36)
    page.get_by_text("1 dropped").wait_for(timeout=20_000)
    field = page.get_by_placeholder("new label, then Enter")
    field.fill("round")
    field.press("Enter")
    page.get_by_text(f"Labeled {selected - 1} images").wait_for(timeout=20_000)

    # labels survive a reload; undo takes the action back
    page.reload()
    page.get_by_role("button", name=re.compile(rf"round \({selected - 1}\)")).wait_for(timeout=120_000)
    page.get_by_role("button", name="Undo").click()
    page.get_by_role("button", name=re.compile(rf"round \({selected - 1}\)")).wait_for(state="detached", timeout=20_000)
    page.get_by_text("Undid").first.wait_for(timeout=20_000)
    page.get_by_role("button", name="Redo").click()
    page.get_by_role("button", name=re.compile(rf"round \({selected - 1}\)")).wait_for(timeout=20_000)

    # a second label elsewhere (same layer as the first lasso, so the regions do not overlap)
    before = layer.inner_text()
    page.keyboard.press("ArrowRight")
    _wait_until(lambda: layer.inner_text() != before)
    assert layer.inner_text() == lassoed_layer
    _lasso(page, 0.02, 0.28, 0.12, 0.97)  # the left strip (below the toolbar): none of the first selection
    n = _selected_count(page)
    page.get_by_role("button", name="Find similar").click()
    page.get_by_text(re.compile(r"Added \d+ similar images")).wait_for(timeout=30_000)
    assert _selected_count(page) > n
    field.fill("corner")
    field.press("Enter")
    page.get_by_text(re.compile(r"Labeled \d+ images")).wait_for(timeout=20_000)
    page.get_by_role("button", name="Train").click()
    page.get_by_text(re.compile(r"\d+% accurate \(95% interval")).wait_for(timeout=60_000)

    # download the labels CSV and check its rows
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download labels CSV").click()
    rows = list(csv.reader(io.StringIO(open(download_info.value.path()).read())))
    assert rows[0] == ["image_name", "tags"]
    tags = [r[1] for r in rows[1:]]
    assert tags.count("round") == selected - 1 and "corner" in tags
