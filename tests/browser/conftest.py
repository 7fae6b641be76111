"""A served app on a small folder of real images, and a headless Chromium page on it."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_server(folder: Path, workspace: Path | None = None):
    port = _free_port()
    command = [sys.executable, "-m", "labeler.cli", "serve", str(folder), "--port", str(port)]
    if workspace:
        command += ["--workspace", str(workspace)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


@pytest.fixture
def served(small_digits, tmp_path):
    proc, url = start_server(small_digits, tmp_path / "workspace")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium")
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
