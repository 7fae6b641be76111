"""Screenshot of the app on real images, as a user sees it: `.venv/bin/python bench/screenshot.py [FOLDER] [--out PNG]`.

Serves FOLDER (default ../shared/data/cifar10, else the built-in demo) with a fresh workspace,
labels two lassoed groups, trains, lassoes a third group into the review grid and saves
docs/screenshot.png.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from labeler.testing import CHROMIUM_FLAGS, chromium_path, lasso, start_server, stop_server  # noqa: E402


def label_region(page, name: str, region) -> None:
    lasso(page, *region)
    page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=30_000)
    field = page.get_by_placeholder("new label, then Enter")
    field.fill(name)
    field.press("Enter")
    page.get_by_text(f"images “{name}”").first.wait_for(timeout=90_000)


def main() -> None:
    from playwright.sync_api import sync_playwright
    from engine.demo import demo_folder
    parser = argparse.ArgumentParser(description=__doc__)
    cifar = ROOT.parent / "shared" / "data" / "cifar10"
    parser.add_argument("folder", nargs="?", default=str(cifar if cifar.exists() else demo_folder()))
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(args.folder), Path(tmp) / "workspace")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.goto(url)
                page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=300_000)
                try:
                    label_region(page, "left group", (0.03, 0.2, 0.2, 0.6))
                    label_region(page, "right group", (0.8, 0.97, 0.3, 0.7))
                except Exception:
                    page.screenshot(path="/tmp/shot_fail.png")
                    raise
                page.get_by_role("button", name="Train").click()
                page.get_by_text(re.compile(r"\d+% accurate")).wait_for(timeout=60_000)
                lasso(page, 0.4, 0.6, 0.35, 0.65)
                page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=30_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=args.out)
                browser.close()
        finally:
            stop_server(proc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
