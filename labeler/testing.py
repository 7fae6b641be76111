"""Driving the served app from a real browser: shared by the browser tests, benchmarks and the screenshot script."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """Debian's Chromium (the project never downloads a browser of its own)."""
    return shutil.which("chromium")


def copy_demo_digits(folder: Path, per_class: int = 30) -> Path:
    """The first `per_class` real handwritten digits of each class from the built-in demo, copied into `folder`."""
    import csv
    from engine.demo import demo_folder, demo_truth
    source = demo_folder()
    with open(demo_truth(), newline="") as f:
        rows = list(csv.reader(f))[1:]
    folder.mkdir(parents=True, exist_ok=True)
    taken: dict[str, int] = {}
    for name, digit in rows:
        if taken.get(digit, 0) < per_class:
            shutil.copy(source / name, folder / name)
            taken[digit] = taken.get(digit, 0) + 1
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, workspace: Path | None = None, timeout: float = 180.0, options: Sequence[str] = (),
                 probe: str = "", verbose: bool = False, **popen):
    """`labeler serve FOLDER [options]` on 127.0.0.1 and a free port; returns (process, url) once `url + probe`
    answers (by default the app's page, whose first visit starts preparing the project; `favicon.ico` where a
    login would redirect the probe elsewhere). `verbose` logs at INFO (e.g. websocket connections opened and closed);
    `popen` goes to `subprocess.Popen` (e.g. `cwd`)."""
    port = free_port()
    command = [sys.executable, "-m", "labeler.cli", *(["-v"] if verbose else []), "serve", str(folder), "--port",
               str(port), *options]
    if workspace:
        command += ["--workspace", str(workspace)]
    url = f"http://127.0.0.1:{port}/"
    return _launch(command, "labeler serve", url + probe, timeout, **popen), url


def exported_classifier(path, classes: Sequence[str], *, backbone: str = "mobilenet_v2", size: int = 128,
                        pretrained: bool = True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        seed: int = 0) -> Path:
    """A classifier of `classes` as the Model tab exports one, untrained (its body pretrained on ImageNet with
    `pretrained`, its head random, seeded), written to `path`: a real model to serve or predict with, in a second."""
    from types import SimpleNamespace

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from engine.learner import Learner
    from engine.models import create_model
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, size, size), torch.arange(2) % len(classes)), batch_size=2)
    data = SimpleNamespace(task="classify", classes=list(classes), codes=None, void_code=None, n_out=len(classes),
                           train=loader, valid=loader, size=size, mean=tuple(mean), std=tuple(std))
    model = create_model("classify", backbone, len(classes), pretrained=pretrained)
    return Learner(data, model, device="cpu").export(path)


def start_model_server(model_file, options: Sequence[str] = (), timeout: float = 120.0):
    """`labeler serve-model MODEL [options]` on 127.0.0.1 and a free port; returns (process, url without a trailing
    slash) once its /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "labeler.cli", "serve-model", str(model_file), "--port", str(port), *options]
    url = f"http://127.0.0.1:{port}"
    return _launch(command, "labeler serve-model", url + "/health", timeout), url


def start_jupyter(kind: str, root_dir: Path, state_dir: Path, env: dict | None = None, timeout: float = 180.0):
    """JupyterLab (`kind="lab"`) or Notebook 7 (`"notebook"`) on 127.0.0.1 and a free port, serving `root_dir`;
    returns (process, base URL with the token) once it answers. Its settings, workspaces and runtime files
    go to `state_dir`, so a test starts from a clean JupyterLab every time."""
    import os
    import secrets
    port, token = free_port(), secrets.token_hex(16)
    state_dir.mkdir(parents=True, exist_ok=True)
    # start the notebook's own kernel without asking: JupyterLab asks "Select Kernel" when its kernel list
    # arrives after the notebook opens, and that dialog can come up under a click at any moment
    tracker = state_dir / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text('{"autoStartDefaultKernel": true}')
    environment = {**os.environ, "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"),
                   "JUPYTERLAB_SETTINGS_DIR": str(state_dir / "settings"),
                   "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "workspaces"),
                   "JUPYTER_CONFIG_DIR": str(state_dir / "config"), "IPYTHONDIR": str(state_dir / "ipython"),
                   **(env or {})}
    command = [sys.executable, "-m", "jupyter", kind, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root_dir}", "--allow-root",   # CI machines run tests as root
               "--LabApp.extension_manager=readonly"]                 # no package index lookups
    url = f"http://127.0.0.1:{port}/"
    proc = _launch(command, f"jupyter {kind}", f"{url}api/status?token={token}", timeout, env=environment,
                   cwd=root_dir)
    return proc, url, token


def _launch(command: list[str], name: str, probe: str, timeout: float, **popen) -> subprocess.Popen:
    """Start a server process and return it once `probe` answers; its output goes to `proc.log_path`
    (a file: an undrained pipe fills up and blocks the server mid-session)."""
    log = tempfile.NamedTemporaryFile(prefix=f"labeler-{name.replace(' ', '-')}-", suffix=".log", delete=False)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
    proc.log_path = log.name
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {Path(log.name).read_text()[-4000:]}")
        try:
            # one request, waited for: the app's page can take seconds to build on a busy machine, and a
            # probe that gave up and asked again would queue one more page build each time
            urllib.request.urlopen(probe, timeout=max(2.0, deadline - time.time()))
            return proc
        except urllib.error.HTTPError:      # it answered, with a refusal (a server that asks for a login)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not start in {timeout:.0f} s")


def stop_server(proc) -> str:
    """Stop a server from `start_server`; returns what it logged."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    return Path(proc.log_path).read_text(errors="replace")


def assert_no_traceback(log: str) -> None:
    """A server log without a traceback: every error a person met was a message, not a crash."""
    if "Traceback" in log:
        start = log.index("Traceback")
        raise AssertionError(f"the server logged a traceback:\n{log[max(0, start - 500):start + 3000]}")


def canvases(page) -> list[dict]:
    """Bounding boxes of the page's visible plot canvases, top first (the map, then the review grid). A hidden
    tab's plots keep their boxes (Bokeh hides them with `visibility: hidden`), so they are left out."""
    boxes = [c.bounding_box() for c in page.locator("canvas").all() if c.is_visible()]
    return sorted((b for b in boxes if b and b["width"] > 300), key=lambda b: b["y"])


def lasso(page, fx0=0.3, fx1=0.7, fy0=0.3, fy1=0.7, steps: int = 8) -> None:
    """Drag a lasso around a rectangle given in fractions of the map (keep fy0 >= 0.1: the toolbar is on top)."""
    box = canvases(page)[0]
    x0, x1 = box["x"] + box["width"] * fx0, box["x"] + box["width"] * fx1
    y0, y1 = box["y"] + box["height"] * fy0, box["y"] + box["height"] * fy1
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.2)


def map_image_url(page) -> str:
    """The url of the map's image (the view's thumbnails, and its points past the threshold) the page holds ("" before
    the first)."""
    return page.evaluate("""() => {
        for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
          const source = doc.get_model_by_name('map-image');
          if (source) {
            const url = source.data instanceof Map ? source.data.get('url') : source.data.url;
            return url && url.length ? String(url[0]) : '';
          }
        }
        return '';
      }""")


def watched_page(browser, **context):
    """(context, page, errors): a new browser context of 1400 x 1000 (or `context`'s options) with one page whose
    uncaught errors are collected in `errors`."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


def open_server_drawn_map(page, url: str, timeout_s: float = 120.0) -> str:
    """Open the app at `url` and wait for its map's first image (the map drawn by the server); returns its url."""
    import re
    page.goto(url)
    page.get_by_text(re.compile(r"^Layer: ")).first.wait_for(timeout=timeout_s * 1000)
    wait_until(lambda: map_image_url(page).startswith("data:image/jpeg;base64,"), timeout=max(60.0, timeout_s / 3))
    return map_image_url(page)


def model_value(page, name: str, attr: str = "text"):
    """An attribute of the page's Bokeh model called `name` (e.g. the hidden hover-id Divs), or None."""
    return page.evaluate("""([name, attr]) => {
        for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
          const model = doc.get_model_by_name(name);
          if (model) { return model[attr]; }
        }
        return null;
      }""", [name, attr])


def hover_review_cell(page, cell: dict, timeout: float = 20.0) -> str:
    """Move the mouse over a review grid cell and wait until the page knows which image is under it
    (its id travels to the server before any key pressed next); returns that id."""
    page.mouse.move(cell["x"] + 36, cell["y"] + 36)
    wait_until(lambda: (model_value(page, "review-pointer") or "").removeprefix("hover:").isdigit(), timeout)
    return model_value(page, "review-pointer").removeprefix("hover:")


def leave_review_grid(page, timeout: float = 20.0) -> None:
    """Move the mouse off the review grid and wait until the page has forgotten the hovered image."""
    page.mouse.move(5, 990)
    wait_until(lambda: model_value(page, "review-pointer") in ("", "hover:"), timeout)


# the x of the map's points as the page holds them (empty when the server draws them, from 50,000 on)
MAP_POINTS_X = """() => {
  for (const doc of Bokeh.documents) {
    const points = doc.get_model_by_name("points");
    if (points) { return Array.from(points.data_source.data.x); }
  }
  return null;
}"""


INJECTED_JS = """() => {
  // every element of the page, shadow roots included (Panel puts its widgets in shadow DOM)
  const all = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      all.push(el);
      if (el.shadowRoot) { walk(el.shadowRoot); }
    }
  };
  walk(document);
  return {
    images_with_src_x: all.filter((el) => el.tagName === 'IMG' && el.getAttribute('src') === 'x').length,
    bold_x: all.filter((el) => el.tagName === 'B' && el.textContent === 'x').length,
    scripts_with_pwned: all.filter((el) => el.tagName === 'SCRIPT' && el.textContent.includes('PWNED')).length,
    italic_typed: all.filter((el) => el.tagName === 'I' && el.textContent === 'typed').length,
  };
}"""


def injected_elements(page) -> dict:
    """Counts of elements that would exist only if label names had been put into the page as HTML."""
    return page.evaluate(INJECTED_JS)


LABEL_BUTTON = re.compile(r"^(?:\d: )?(.*) \((\d+)\)$", re.S)


def shown_labels(page) -> dict[str, int]:
    """The visible label buttons of the Label tab, as {name: images} (a button reads "1: name (count)")."""
    found = {}
    for button in page.locator(".bk-btn").all():
        text = button.inner_text().strip() if button.is_visible() else ""
        if match := LABEL_BUTTON.match(text):
            found[match.group(1)] = int(match.group(2))
    return found


def run_coroutine_in_a_thread(coroutine):
    """`asyncio.run(coroutine)` in a thread of its own, returning its result or raising its error: the caller's
    thread may already run an event loop (the browser tests' sync Playwright does), inside which asyncio.run
    refuses to start."""
    import asyncio
    import threading
    result = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as err:   # noqa: BLE001 - raised again in the caller's thread
            result["error"] = err
    thread = threading.Thread(target=target, name="labeler-coroutine")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
