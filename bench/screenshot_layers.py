"""The map of an ImageNet layer beside the fine-tuned layer that came from it, as a user sees them.

    .venv/bin/python bench/screenshot_layers.py FOLDER --workspace WORKSPACE [--layer features.18] [--view UMAP]
        [--out docs/finetuned_layer.jpg]

Serves a project that has a fine-tuned model with its layer (e.g. the one `bench/finetuned_layer.py` leaves under
its workspace's runs/), steps to `--layer` and to the fine-tuned layer in the same view, and saves the two maps side
by side, each under its layer's name.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from labeler.testing import (CHROMIUM_FLAGS, canvases, chromium_path, start_server, stop_server,  # noqa: E402
                             wait_until)


def _step_until(page, button: str, label: str, wanted: str, limit: int = 12) -> None:
    shown = page.get_by_text(re.compile(rf"^{label}: "))
    for _ in range(limit):
        if shown.inner_text().startswith(f"{label}: {wanted}"):
            page.wait_for_timeout(2500)                # the composite of thumbnails arrives after the points
            return
        before = shown.inner_text()
        page.get_by_role("button", name=button).click()
        wait_until(lambda: shown.inner_text() != before, 300)
    raise SystemExit(f"no {label.lower()} {wanted!r}")


def _map_shot(page, path: Path) -> str:
    """The map's canvas saved to `path`; returns the layer's line ("Layer: ... (title)")."""
    box = canvases(page)[0]
    page.screenshot(path=str(path), clip=box)
    return page.get_by_text(re.compile(r"^Layer: ")).inner_text()


def main() -> None:
    from PIL import Image, ImageDraw
    from playwright.sync_api import sync_playwright
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--layer", default="features.18")
    parser.add_argument("--view", default="UMAP")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "finetuned_layer.jpg")
    args = parser.parse_args()
    from labeler.project import Project
    with Project(args.folder, args.workspace) as project:     # thumbnails before the page opens
        project.prepare()
    proc, url = start_server(args.folder, args.workspace)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=300_000)
            shots = []
            for layer in (args.layer, "fine-tuned"):
                _step_until(page, "layer ▶", "Layer", layer)
                _step_until(page, "view ▼", "View", args.view)
                path = Path(tmp) / f"{len(shots)}.png"
                shots.append((_map_shot(page, path), path))
            browser.close()
            images = [(Image.open(path).convert("RGB"), title) for title, path in shots]
            width = sum(image.width for image, _ in images) + 20
            height = max(image.height for image, _ in images) + 30
            canvas = Image.new("RGB", (width, height), "white")
            draw, x = ImageDraw.Draw(canvas), 0
            for image, title in images:
                canvas.paste(image, (x, 30))
                draw.text((x + 8, 8), f"{title} · {args.view}", fill="black")
                x += image.width + 20
            canvas.save(args.out)
    finally:
        stop_server(proc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
