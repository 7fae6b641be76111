"""The cleaning view in headless Chromium against `labeler serve`: keys decide, decisions stay, cleaned.csv."""
import csv
import io
import re

import pytest
from _helpers import colour_folder

from labeler.project import Project
from labeler.testing import assert_no_traceback, start_server, stop_server, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]
FLIPPED = 3          # labels given wrong on purpose: the likeliest label errors


@pytest.fixture
def labeled_colours(tmp_path):
    """40 red / blue images labeled by their folder, FLIPPED of them with the wrong colour."""
    folder = colour_folder(tmp_path / "colours")
    with Project(folder, tmp_path / "workspace") as project:
        blue = [item.id for item in project.items if item.path.startswith("blue/")]
        red = [item.id for item in project.items if item.path.startswith("red/")]
        project.store.assign(blue[FLIPPED:], "blue")
        project.store.assign(red + blue[:FLIPPED], "red")
    return folder, tmp_path / "workspace"


@pytest.fixture
def served_colours(labeled_colours):
    proc, url = start_server(*labeled_colours)
    yield url
    assert_no_traceback(stop_server(proc))


def _open_clean_tab(page, url):
    page.goto(url)
    page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=180_000)
    page.locator(".bk-tab", has_text="Clean").click()
    page.get_by_text(re.compile(r"^Found \d+ likely label errors")).wait_for(timeout=180_000)


def _card(page, name):
    return page.locator(".clean-card").filter(has=page.locator(".name", has_text=name))


def _page_to(page, name):
    """Page through the queue (the "page ▶" button) until the card of `name` is shown."""
    for _ in range(10):
        if _card(page, name).count():
            return _card(page, name)
        shown = page.get_by_text(re.compile(r"· page \d+ of \d+")).first
        first = page.locator(".clean-card .name").first
        before, first_before = shown.inner_text(), first.inner_text()
        page.get_by_role("button", name="page ▶").click()
        # the page's number and its cards come in separate updates: a busy machine showed the one before the other
        wait_until(lambda: shown.inner_text() != before and first.inner_text() != first_before)
    raise AssertionError(f"{name} is on none of the queue's pages")


def test_keyboard_decisions_survive_switching_queues_and_reloading_and_reach_cleaned_csv(served_colours, page):
    _open_clean_tab(page, served_colours)
    cards = page.locator(".clean-card")
    first, second = cards.nth(0), cards.nth(1)
    first_name = first.locator(".name").inner_text()
    second_name = second.locator(".name").inner_text()
    given = first.locator(".given").inner_text().removeprefix("given: ")
    other, number = ("red", "2") if given == "blue" else ("blue", "1")   # labels in display order: blue, red

    # relabel the focused (first) item with the keyboard; the focus moves on; exclude the next one
    page.get_by_text(re.compile(r"Likely label errors: 1–")).click()   # focus the page, not a field
    page.keyboard.press(number)
    _card(page, first_name).locator(".badge", has_text=f"relabeled: {other}").wait_for(timeout=20_000)
    assert "focused" in second.get_attribute("class")
    page.keyboard.press("x")
    _card(page, second_name).locator(".badge", has_text="excluded").wait_for(timeout=20_000)

    # another queue and back, by click and by key: both decisions are still shown
    page.get_by_role("button", name=re.compile(r"^Duplicates \(\d+\)")).click()
    page.get_by_text(re.compile(r"^Duplicates: ")).wait_for(timeout=20_000)
    page.keyboard.press("[")
    page.get_by_text(re.compile(r"^Top losses: ")).wait_for(timeout=20_000)
    page.keyboard.press("[")
    page.get_by_text(re.compile(r"^Likely label errors: ")).wait_for(timeout=20_000)
    _card(page, first_name).locator(".badge", has_text=f"relabeled: {other}").wait_for(timeout=20_000)
    _card(page, second_name).locator(".badge", has_text="excluded").wait_for(timeout=20_000)
    page.screenshot(path="/tmp/clean_view.png")

    # a reload computes the queues again (ranked anew); the decisions come back from the store
    _open_clean_tab(page, served_colours)
    _page_to(page, first_name).locator(".badge", has_text=f"relabeled: {other}").wait_for(timeout=20_000)
    _open_clean_tab(page, served_colours)
    _page_to(page, second_name).locator(".badge", has_text="excluded").wait_for(timeout=20_000)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download cleaned.csv").click()
    assert download_info.value.suggested_filename == "cleaned.csv"
    rows = list(csv.reader(io.StringIO(download_info.value.path().read_text())))
    tags = dict(rows[1:])
    assert rows[0] == ["image_name", "tags"] and len(rows) == 1 + 39
    assert tags[first_name] == other and second_name not in tags
