"""Hostile names stay text, and buttons pressed at the wrong time say why: headless Chromium against `labeler serve`.

Label names and file names come from files people share. A labels CSV whose label is
`<img src=x onerror=...>` once ran its script on page load (Bokeh's MultiChoice renders option
labels as HTML, Panel's Alert renders Markdown). Here such names are imported with `labeler
import`, every tab is opened, the app trains and checks, and no script may run, no element may
come from a name, and every name must show literally.
"""
import csv
import re
import shutil

import pytest

from engine.demo import demo_truth
from labeler.cli import main as labeler_cli
from labeler.project import Project
from labeler.testing import (assert_no_traceback, canvases, injected_elements, lasso, start_server, stop_server,
                             wait_until)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMG = "<img src=x onerror=\"document.title='PWNED'\">"
BOLD = "<b>x</b>"
SCRIPT = "<script>document.title='PWNED2'</script>"
TYPED = "<i>typed</i>"
HOSTILE_FILE = "<img src=x onerror=document.title='FILE'> {:03d}.png"   # no slash: a legal file name


@pytest.fixture
def hostile_project(small_digits, tmp_path):
    """120 digits (0-3); the 3s have file names that are HTML; 0, 1 and 2 labeled with HTML names by `labeler import`."""
    folder, workspace = tmp_path / "digits", tmp_path / "workspace"
    folder.mkdir()
    with open(demo_truth(), newline="") as f:
        truth = {name: digit for name, digit in list(csv.reader(f))[1:] if (small_digits / name).exists()}
    names = {"0": IMG, "1": BOLD, "2": SCRIPT}
    rows = []
    for index, (name, digit) in enumerate(sorted(truth.items())):
        if digit == "3":
            shutil.copy(small_digits / name, folder / HOSTILE_FILE.format(index))
        elif digit in names:
            shutil.copy(small_digits / name, folder / name)
            rows.append((name, names[digit]))
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "tags"), *rows])
    assert labeler_cli(["import", str(folder), str(labels), "--workspace", str(workspace)]) == 0
    return folder, workspace


@pytest.fixture
def served_hostile(hostile_project):
    proc, url = start_server(*hostile_project)
    yield url, proc
    assert_no_traceback(stop_server(proc))


def _watch(page) -> dict:
    seen = {"dialogs": [], "errors": []}
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    return seen


def _assert_nothing_ran(page, seen) -> None:
    assert page.title() == "labeler", f"a name ran as HTML: the title became {page.title()!r}"
    assert injected_elements(page) == {"images_with_src_x": 0, "bold_x": 0, "scripts_with_pwned": 0,
                                       "italic_typed": 0}
    assert not seen["dialogs"] and not seen["errors"], seen


def test_label_and_file_names_from_files_show_as_text_in_every_tab(served_hostile, hostile_project, page):
    url, proc = served_hostile
    seen = _watch(page)
    page.goto(url)
    page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=180_000)
    _assert_nothing_ran(page, seen)

    # label buttons, in the store's order, show each name literally
    # (plain strings, not regular expressions: Playwright's selectors trip over the slashes in these names)
    for name in (IMG, BOLD, SCRIPT):
        page.get_by_role("button").filter(has_text=f"{name} (30)").wait_for(timeout=20_000)
    # the Separate chooser (Choices.js renders option labels as HTML unless escaped)
    page.locator(".choices").first.click()
    page.get_by_role("option", name=IMG).click()
    page.locator(".choices").first.click()
    page.get_by_role("option", name=BOLD).click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Separate", exact=True).click()
    page.get_by_text(f"View: Separate {IMG}, {BOLD}").wait_for(timeout=60_000)
    _assert_nothing_ran(page, seen)

    # a typed label in the success message; the Train report's table
    lasso(page, 0.3, 0.7, 0.3, 0.7)
    page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=20_000)
    field = page.get_by_placeholder("new label, then Enter")
    field.fill(TYPED)
    field.press("Enter")
    page.get_by_text(f"images “{TYPED}”").first.wait_for(timeout=20_000)
    page.get_by_role("button", name="Train").click()
    page.get_by_text(re.compile(r"\d+% accurate \(95% interval")).wait_for(timeout=60_000)
    for name in (IMG, BOLD, SCRIPT, TYPED):
        page.locator("td", has_text=name).first.wait_for(timeout=20_000)

    # a check of predictions (captions drawn on the grid's canvas), then the hover preview of a hostile file
    page.get_by_role("button", name="Check predictions").click()
    page.get_by_text(re.compile(r"Checking \d+ random predictions")).wait_for(timeout=30_000)
    with Project(*hostile_project) as project:
        hostile_id = next(item.id for item in project.items if item.path.startswith("<img"))
        hostile_path = project.items[hostile_id].path
    page.evaluate("(id) => { Bokeh.documents[0].get_model_by_name('hover-id').text = String(id); }", hostile_id)
    page.get_by_text(hostile_path).wait_for(timeout=20_000)
    _assert_nothing_ran(page, seen)

    # the Clean tab: cards, the focused item's details, a relabel's message
    page.locator(".bk-tab", has_text="Clean").click()
    page.get_by_text(re.compile(r"^Found \d+ likely label errors")).wait_for(timeout=180_000)
    page.locator(".clean-card .given").first.wait_for(timeout=20_000)
    given = page.locator(".clean-card .given").all_inner_texts()
    assert any(name in text for text in given for name in (IMG, BOLD, SCRIPT)), given
    page.get_by_text(re.compile(r"Likely label errors: 1–")).click()
    page.keyboard.press("2")
    said = page.get_by_text("Relabeled ").first
    said.wait_for(timeout=20_000)
    assert any(f"“{name}”" in said.inner_text() for name in (IMG, BOLD, SCRIPT, TYPED)), said.inner_text()
    page.get_by_role("button", name=re.compile(r"^Odd files")).click()
    page.get_by_text(re.compile(r"^Odd files: ")).wait_for(timeout=20_000)
    _assert_nothing_ran(page, seen)


def _message(page, pattern: str) -> None:
    page.get_by_text(re.compile(pattern)).first.wait_for(timeout=30_000)


def test_buttons_pressed_at_the_wrong_time_say_why_and_the_app_keeps_working(served, page):
    seen = _watch(page)
    page.goto(served)
    page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=180_000)

    # nothing labeled, nothing selected, no model
    page.get_by_role("button", name="Find similar").click()
    _message(page, r"Select a few images first")
    page.get_by_role("button", name="Train").click()
    _message(page, r"Training needs at least two labels with two images each")
    page.get_by_role("button", name="Check predictions").click()
    _message(page, r"Checking predictions needs a trained model")
    page.get_by_role("button", name="Accept all above").click()
    _message(page, r"Accepting predictions needs a trained model")
    page.get_by_role("button", name="Separate", exact=True).click()
    _message(page, r"Choose two or more labels to separate")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download labels CSV").click()
    assert download_info.value.path().read_text().splitlines() == ["image_name,tags"]
    _message(page, r"No labels yet: labels.csv holds only its header row")
    page.get_by_role("button", name="Download predictions CSV").click()
    _message(page, r"Nothing to download: No predictions are stored yet")
    # keys at the wrong time too: find similar, train, a label number, undo with nothing to undo
    page.locator("body").click(position={"x": 5, "y": 990})
    page.keyboard.press("s")
    _message(page, r"Select a few images first")
    page.keyboard.press("1")
    page.keyboard.press("Control+z")
    _message(page, r"Nothing to undo")
    page.keyboard.press("t")
    _message(page, r"Training needs at least two labels")

    # one label: still too few to train or separate
    lasso(page, 0.3, 0.7, 0.3, 0.7)
    page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=20_000)
    page.keyboard.press("Escape")
    wait_until(lambda: "selected" not in page.get_by_text(re.compile(r"Lasso a group|selected")).first.inner_text())
    lasso(page, 0.3, 0.7, 0.3, 0.7)
    field = page.get_by_placeholder("new label, then Enter")
    field.fill("a")
    field.press("Enter")
    _message(page, r"Labeled \d+ images “a”")
    page.get_by_role("button", name="Train").click()
    _message(page, r"there are 1 label\(s\) in use")
    page.locator(".choices").first.click()
    page.get_by_role("option", name="a").click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Separate", exact=True).click()
    _message(page, r"Choose two or more labels to separate")

    # and then the app works as usual
    lasso(page, 0.02, 0.28, 0.12, 0.97)
    page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=20_000)
    field.fill("b")
    field.press("Enter")
    _message(page, r"Labeled \d+ images “b”")
    page.get_by_role("button", name="Train").click()
    _message(page, r"\d+% accurate \(95% interval")
    page.get_by_role("button", name="Accept all above").click()
    _message(page, r"Accepted \d+ predictions above 0\.90")
    assert len(canvases(page)) >= 1
    assert not seen["dialogs"] and not seen["errors"], seen


_IN_A_KERNEL = """
import sys, time
from labeler.ui.serve import serve_in_background
print("URL", serve_in_background(sys.argv[1], workspace=sys.argv[2]), flush=True)
time.sleep(600)
"""


def test_a_tab_of_its_own_from_a_kernel_and_a_missing_folder_said_on_the_page(small_digits, tmp_path, page):
    """`serve_in_background` (what `app.open_in_tab()` runs) serves from a thread of a running process
    and answers at once; a folder that is not there is a message on the page, not a traceback."""
    import subprocess
    import sys
    for folder, expect in ((small_digits, r"^Layer: "), (tmp_path / "not-here", r"not-here: not a folder of images")):
        log = tmp_path / f"{folder.name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-c", _IN_A_KERNEL, str(folder), str(tmp_path / "workspace")],
                                    stdout=subprocess.PIPE, stderr=out, text=True)
        try:
            lines = iter(proc.stdout.readline, "")
            url = next((line.split()[1] for line in lines if line.startswith("URL ")), "")
            assert url.startswith("http://127.0.0.1:"), log.read_text()[-2000:]
            page.goto(url)
            page.get_by_text(re.compile(expect)).first.wait_for(timeout=180_000)
        finally:
            proc.kill()
            proc.wait()
        assert "Traceback" not in log.read_text()
