"""The example notebooks in a real JupyterLab and Notebook 7, driven in Chromium: not only nbclient.

Each test starts the Jupyter server on 127.0.0.1, opens an example notebook, runs all cells from
the Run menu as a person would, and uses the widget: a lasso fills a review grid of full-size tiles,
a click drops a tile, a label's key labels the tile under the mouse, arrows flip layers and views
without moving Jupyter's active cell. Every request to anything but this machine is counted; the
count must stay 0 (Panel's JavaScript and stylesheets must all be local). Saved, the label notebook
must stay under 2 MB (Panel's JavaScript comes from the Jupyter server, not into an output).
"""
import json
import os
import re
import shutil
import urllib.request
import warnings
from pathlib import Path

import pytest

from labeler.testing import canvases, hover_review_cell, lasso, start_jupyter, stop_server, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PATHS = {"lab": "lab/tree", "notebook": "notebooks"}
SHOTS = os.environ.get("LABELER_SCREENSHOTS")


def _served_examples(kind, small_digits, tmp_path, **env):
    """(process, (kind, server URL, token, notebook folder)): a Jupyter server of this kind on a copy of the
    examples; `env` goes to its kernels."""
    root, folder = tmp_path / "notebooks", tmp_path / "digits"
    root.mkdir()
    shutil.copytree(small_digits, folder, ignore=shutil.ignore_patterns(".labeler"))
    for notebook in EXAMPLES.glob("*.ipynb"):
        shutil.copy(notebook, root)
    env = {"LABELER_EXAMPLE_FOLDER": str(folder), "LABELER_CACHE": str(tmp_path / "cache"), **env}
    proc, url, token = start_jupyter(kind, root, tmp_path / "jupyter", env)
    return proc, (kind, url, token, root)


@pytest.fixture(params=["lab", "notebook"])
def jupyter(request, small_digits, tmp_path):
    """(kind, server URL, token, notebook folder): a Jupyter server of this kind on a copy of the examples."""
    proc, served = _served_examples(request.param, small_digits, tmp_path)
    yield served
    stop_server(proc)


@pytest.fixture
def local_page(browser):
    """A page that lists in `page.outside` every request it makes to anything but this machine."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside, errors = [], []

    def leaves_the_machine(url: str) -> bool:
        host = url.split("/")[2].split(":")[0] if "://" in url else ""
        return not url.startswith(("data:", "blob:")) and host not in ("127.0.0.1", "localhost")

    # every request is seen and those that leave the machine are listed (this machine has no internet, so
    # they also fail). Not routed: with any `context.route` set, JupyterLab's notebook save never completes
    context.on("request", lambda request: outside.append(request.url) if leaves_the_machine(request.url) else None)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack}"))
    # Jupyter's own scripts may fail on their own (Notebook 7.6 logs a settings-schema TypeError from its
    # core bundle at start-up here); the app's errors come from Bokeh, Panel or this project
    page.app_errors = lambda: [error for error in errors if "/static/notebook/" not in error
                               and "/static/lab/" not in error]
    page.outside, page.errors = outside, errors
    yield page
    context.close()


def _kernel_for(url, token, name, runtime: Path) -> None:
    """Start the notebook's kernel through Jupyter's REST API and wait until it answers, before the page opens
    the notebook (which then joins that session). A page that opens the notebook first connects while the
    kernel is still starting, and here JupyterLab often closed that first websocket while the server was
    preparing it (a 500 in the server's log: 'NoneType' object has no attribute 'kernel_ws_protocol'); the
    outputs never came, and the test waited four minutes before restarting the kernel as a person would (CI
    rehearsals, 2026-12-04). `runtime`: the server's runtime folder, where the kernel's connection file is."""
    from jupyter_client import BlockingKernelClient
    request = urllib.request.Request(f"{url}api/sessions", method="POST", headers={"Authorization": f"token {token}"},
                                     data=json.dumps({"path": name, "name": name, "type": "notebook",
                                                      "kernel": {"name": "python3"}}).encode())
    with urllib.request.urlopen(request, timeout=60) as answer:
        kernel = json.load(answer)["kernel"]["id"]
    connection = runtime / f"kernel-{kernel}.json"
    wait_until(connection.exists, timeout=60)
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
    finally:
        client.stop_channels()


def _run_all(page, kind, url, token, name, root: Path) -> None:
    _kernel_for(url, token, name, root.parent / "jupyter" / "runtime")     # where _served_examples put it
    page.goto(f"{url}{PATHS[kind]}/{name}?token={token}")
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(timeout=120_000)
    first = page.locator(".jp-CodeCell .jp-InputArea-prompt").first
    for _ in range(5):      # Run All does nothing until the kernel's session is fully connected: try again
        _answer_dialogs(page)
        try:
            page.locator(".lm-MenuBar-item", has_text="Run").first.click(timeout=10_000)
            page.get_by_role("menuitem", name=re.compile("Run All Cells")).first.click(timeout=10_000)
        except PlaywrightTimeout:     # a dialog came up in between: answer it and try again
            continue
        try:
            wait_until(lambda: first.inner_text().strip() not in ("", "[ ]:"), timeout=15)
        except TimeoutError:
            page.keyboard.press("Escape")
            continue
        # the first cell must really run: a kernel replaced while the cells wait (a late kernel choice) drops
        # them, and the prompt goes back to [ ]: then, as a person would, answer any dialog and run all again
        def settled() -> bool:
            _answer_dialogs(page)
            text = first.inner_text().strip()
            return text == "[ ]:" or bool(re.fullmatch(r"\[\d+\]:", text))
        try:
            wait_until(settled, timeout=180)
        except TimeoutError:
            if not _lost(page, first):
                return                  # still running after 3 minutes: the test's own waits decide
            _restart_and_run_all(page)  # waiting on a kernel that was replaced: as a person would
            wait_until(lambda: re.fullmatch(r"\[\d+\]:", first.inner_text().strip()), timeout=180)
            return
        if first.inner_text().strip() != "[ ]:":
            return
    raise AssertionError("Run All Cells never started the notebook")


def _lost(page, first) -> bool:
    """The first cell (imports) still waits ([*]) while the kernel says it is idle: JupyterLab sent the cells to
    a kernel it replaced right after opening the notebook (its log: two 'Kernel started', one shut down)."""
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() > 0
    return idle and first.inner_text().strip() == "[*]:"


def _shown(page, locator, what: str, timeout_ms: int) -> None:
    """Wait for the app's `locator`; when it does not come, restart the kernel and run all once more, as a person
    would (here the Jupyter server sometimes fails the kernel's first websocket: its log shows a 500 on
    /api/kernels/.../channels, 'NoneType' object has no attribute 'kernel_ws_protocol', and the outputs never
    come), then fail with what the notebook shows."""
    try:
        locator.wait_for(timeout=timeout_ms)
        return
    except PlaywrightTimeout:
        first_look = _notebook_state(page)
    _restart_and_run_all(page)
    try:
        locator.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(f"{what} never showed, also after a kernel restart; first {first_look}; then "
                             f"{_notebook_state(page)}") from None
    warnings.warn(f"{what} showed only after a kernel restart; before it: {first_look}")


def _restart_and_run_all(page) -> None:
    page.keyboard.press("Escape")
    page.locator(".lm-MenuBar-item", has_text="Kernel").first.click(timeout=10_000)
    page.get_by_role("menuitem", name=re.compile("Restart Kernel and Run All Cells")).first.click(timeout=10_000)
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").first.click(timeout=30_000)    # "Restart"


def _notebook_state(page) -> str:
    """The cells' prompts and any error output, in words (what a failed wait saw); a screenshot where
    LABELER_SCREENSHOTS says."""
    _shot(page, "jupyter-stuck.png")
    prompts = [text.strip() for text in page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
                          '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').all_inner_texts()
    status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
    return f"prompts {prompts}, kernel {status}, error output {[text[:300] for text in errors]}"


def _answer_dialogs(page) -> None:
    """Pick the notebook's own kernel when JupyterLab asks (it sometimes does when its kernel list arrives
    after the notebook opens), as a person would; any other dialog fails the test."""
    dialog = page.locator(".jp-Dialog")
    if not dialog.count():
        return
    text = dialog.first.inner_text()
    if not text.startswith("Select Kernel") or "Python 3 (ipykernel)" not in text:
        raise AssertionError(f"Jupyter shows a dialog: {text!r}")
    dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(timeout=120_000)


def _wait_until_run(page) -> None:
    """Every code cell has run: the last prompt has its number and none is waiting ([*]) or unrun ([ ]);
    a prompt scrolled far out of view is empty (JupyterLab draws only the cells near the view)."""
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt")

    def finished() -> bool:
        texts = [text.strip() for text in prompts.all_inner_texts()]
        return bool(texts) and re.fullmatch(r"\[\d+\]:", texts[-1]) and not {"[*]:", "[ ]:"} & set(texts)
    wait_until(finished, timeout=300)


def _grid(page) -> dict:
    """The review grid's canvas: the first one well below the map's."""
    boxes = canvases(page)
    return [box for box in boxes if box["y"] > boxes[0]["y"] + 100][0]


def _active_cell(page) -> int:
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'))
                                       .findIndex((cell) => cell.classList.contains('jp-mod-active'))""")


def _shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, name))


def test_the_label_app_in_jupyter(jupyter, local_page):
    kind, url, token, root = jupyter
    page = local_page
    _run_all(page, kind, url, token, "label_in_jupyter.ipynb", root)
    layer = page.get_by_text(re.compile(r"^Layer: ")).first
    _shown(page, layer, f"{kind}: the app's layer", 240_000)
    _wait_until_run(page)
    # the map at the top of the notebook's view, wherever Jupyter left it scrolled (after a kernel restart and run
    # all, "if needed" left the map half in view and the grid below the window: a failed CI rehearsal, 2026-12-04)
    page.locator("canvas").first.evaluate("(canvas) => canvas.scrollIntoView({block: 'start'})")

    # a lasso fills a review grid with several rows of full-size tiles (72 px), below the map, in view
    lasso(page, 0.3, 0.7, 0.3, 0.7)
    page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=30_000)
    wait_until(lambda: _grid(page)["height"] >= 3 * 72)
    grid, viewport = _grid(page), page.viewport_size["height"]
    assert grid["y"] + 3 * 72 <= viewport, (grid, viewport)
    _shot(page, f"jupyter_{kind}_lasso.png")

    # a click drops a tile; typing a label labels the rest
    page.mouse.click(grid["x"] + 36, grid["y"] + 36)
    page.get_by_text("1 dropped").first.wait_for(timeout=20_000)
    field = page.get_by_placeholder("new label, then Enter")
    field.fill("round")
    field.press("Enter")
    page.get_by_text(re.compile(r"Labeled \d+ images “round”")).first.wait_for(timeout=30_000)
    # the dropped one stays selected: its label's key over it labels it alone
    hover_review_cell(page, _grid(page))
    page.keyboard.press("1")
    page.get_by_text("Lasso a group of images to review it here.").first.wait_for(timeout=20_000)

    # arrows flip layers and views, and Jupyter's active cell stays where it is
    page.get_by_text(re.compile(r"^View: ")).first.click()
    cell, before = _active_cell(page), layer.inner_text()
    page.keyboard.press("ArrowRight")
    wait_until(lambda: layer.inner_text() != before, timeout=30)
    view = page.get_by_text(re.compile(r"^View: ")).first
    before_view = view.inner_text()
    page.keyboard.press("ArrowDown")
    wait_until(lambda: view.inner_text() != before_view, timeout=60)
    assert _active_cell(page) == cell
    # a UMAP is computed in the background ("View: UMAP (computing…)"), then drawn: the kernel answers meanwhile
    wait_until(lambda: "computing" not in view.inner_text(), timeout=300)
    _shot(page, f"jupyter_{kind}_layer_by_key.png")

    # a click outside the app gives the keys back to Jupyter: ArrowUp moves its active cell, not the view
    page.locator(".jp-CodeCell .jp-InputPrompt").last.click()
    cell, shown = _active_cell(page), view.inner_text()
    page.keyboard.press("ArrowUp")
    wait_until(lambda: _active_cell(page) == cell - 1)
    assert view.inner_text() == shown
    assert page.outside == [], page.outside
    assert not page.app_errors(), page.errors

    # saved, the notebook stays small: Panel's JavaScript came from the Jupyter server, not into an output
    saved = root / "label_in_jupyter.ipynb"
    page.locator(".lm-MenuBar-item", has_text="File").first.click()
    page.get_by_role("menuitem", name=re.compile(r"^Save( Notebook)?( and Checkpoint)?\b")).first.click()
    wait_until(lambda: re.search(r'"execution_count": \d', saved.read_text()), timeout=180)
    text = saved.read_text()
    assert "panel-preview/static/js/bokeh.min.js" in text
    assert len(text.encode()) < 2_000_000, f"the saved notebook is {len(text.encode()):,} bytes"

    # the Model tab in the notebook: a folder of masks shows its fields, the class weights among them
    page.locator(".bk-tab", has_text="Model").first.click()
    page.get_by_role("button", name="Fine-tune").first.wait_for(timeout=30_000)
    page.get_by_label("Train on", exact=True).first.select_option(label="a folder of masks (segmentation)")
    page.get_by_label("Class weights", exact=True).first.wait_for(state="visible", timeout=30_000)
    _shot(page, f"jupyter_{kind}_model.png")
    assert not page.app_errors(), page.errors


def test_the_clean_view_in_jupyter(jupyter, local_page):
    kind, url, token, root = jupyter
    page = local_page
    _run_all(page, kind, url, token, "clean_in_jupyter.ipynb", root)
    cards = page.locator(".clean-card")
    _shown(page, cards.first, f"{kind}: the clean view's cards", 300_000)
    _wait_until_run(page)
    page.locator(".clean-cards").first.scroll_into_view_if_needed()

    def in_focus(index: int) -> bool:
        return "focused" in (cards.nth(index).get_attribute("class") or "")

    cards.nth(2).click()
    wait_until(lambda: in_focus(2))
    cell = _active_cell(page)
    page.keyboard.press("ArrowRight")        # the kernel moves the focus and redraws
    wait_until(lambda: in_focus(3), timeout=30)
    page.keyboard.press("k")
    cards.nth(3).locator(".badge", has_text="kept").wait_for(timeout=20_000)
    assert _active_cell(page) == cell
    _shot(page, f"jupyter_{kind}_clean.png")
    assert page.outside == [], page.outside
    assert not page.app_errors(), page.errors


def test_the_server_drawn_map_in_jupyterlab(small_digits, tmp_path, local_page):
    """A map drawn by the server (as past 50k points; here LABELER_RASTER_FROM=0 makes every map so): in
    JupyterLab a lasso selects (its geometry reaches Python through a model property) and a label labels."""
    proc, (kind, url, token, root) = _served_examples("lab", small_digits, tmp_path, LABELER_RASTER_FROM="0")
    page = local_page
    try:
        _run_all(page, kind, url, token, "label_in_jupyter.ipynb", root)
        _shown(page, page.get_by_text(re.compile(r"^Layer: ")).first, "the image map's layer", 240_000)
        _wait_until_run(page)
        page.locator("canvas").first.scroll_into_view_if_needed()
        wait_until(lambda: page.evaluate("""() => Bokeh.documents.some((doc) => {
            const source = doc.get_model_by_name('map-image');
            const url = source && (source.data instanceof Map ? source.data.get('url') : source.data.url);
            return Boolean(url && url.length && String(url[0]).startsWith('data:image/jpeg'));
        })"""), timeout=60)
        lasso(page, 0.3, 0.7, 0.3, 0.7)
        selected = page.get_by_text(re.compile(r"\d+ selected")).first
        selected.wait_for(timeout=30_000)
        count = int(re.search(r"(\d+) selected", selected.inner_text()).group(1))
        field = page.get_by_placeholder("new label, then Enter")
        field.fill("round")
        field.press("Enter")
        page.get_by_text(f"Labeled {count} images “round”").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)         # the recoloured image arrives after the message
        _shot(page, "jupyter_lab_server_drawn_map.png")
        assert page.outside == [], page.outside
        assert not page.app_errors(), page.errors
    finally:
        stop_server(proc)
