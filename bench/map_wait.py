"""Labels while a page's map computes a UMAP: does the served app keep answering?

A UMAP of a layer takes seconds (DESIGN.md: ~5 s at 20k rows) and numba compiles it on its first use in
every fresh server process (~10-30 s). Serves `labeler serve FOLDER` on 127.0.0.1 (by default 2,000 real
digits of the built-in demo, prepared beforehand), opens two pages in one headless Chromium (two people's
tabs, A and B) and measures:

* B's label action, from the start of its lasso (of a random rectangle; then type a label, Enter) until
  `Labeled N images “name”` shows,
  first with nothing else going on (the baseline), then while A's map computes its first UMAP (A pressed
  ↓, from PCA 1-2 to UMAP), then while A's map computes a second layer's UMAP (A pressed →);
* A's own label action right after it pressed ↓ (on the map it still shows);
* B's label action while A's Train fits the first model (A pressed t), and how long A waited for its report;
* how long A waited for its UMAP map (↓ pressed to the map's points moved, the view named UMAP and no
  "Computing" message).

The table gives each phase's latencies beside the baseline's, and their ratio. Errors (page errors, an
acknowledgement that never came, a server traceback) are listed and make the exit status 1.

    python bench/map_wait.py [--images 2000] [--actions 3] [--seed 0]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from labeler.testing import (CHROMIUM_FLAGS, MAP_POINTS_X, chromium_path, copy_demo_digits,  # noqa: E402
                             run_coroutine_in_a_thread, start_server, stop_server)
from monkey import prepared_workspace  # noqa: E402
from sessions import label, message, open_page, random_region, select  # noqa: E402

UMAP_TIMEOUT_S = 600
UMAP_NAME = re.compile(r"^View: UMAP$")


async def _umap_shown(page) -> bool:
    """A's map shows UMAP: its view is named so (not "UMAP (computing…)"), and no message says one is computed."""
    named = await page.get_by_text(UMAP_NAME).count()
    return bool(named) and "Computing" not in await message(page)


async def wait_for_umap(page, pressed: float, drawn: list) -> float:
    """Seconds from `pressed` until `page` shows its UMAP map: named so, and its points moved from `drawn` (the
    names can change before the map does; the map's points are the browser's below 50,000 of them)."""
    while not await _umap_shown(page) or await page.evaluate(MAP_POINTS_X) == drawn:
        if time.perf_counter() - pressed > UMAP_TIMEOUT_S:
            raise TimeoutError(f"no UMAP map {UMAP_TIMEOUT_S} s after the key")
        await asyncio.sleep(0.1)
    return time.perf_counter() - pressed


async def label_actions(page, who: str, count: int, rng, errors: list[str], turn: list[int]) -> list[float]:
    """`count` lasso-and-label actions; each one's latency (ms): the lasso's start to the label's acknowledgement
    (the page's "N selected" is the server's answer to the lasso: a busy server delays it as much as the label)."""
    latencies = []
    while len(latencies) < count:
        began = time.perf_counter()
        ids = await select(page, random_region(rng))
        if not ids:
            continue
        turn[0] += 1
        name = f"{who}{turn[0]}"
        try:
            _, acked = await label(page, name, len(ids))
        except Exception as err:
            errors.append(f"{who}: {type(err).__name__} labeling {name}: {err}; message {await message(page)!r}")
            return latencies
        latencies.append(1000 * (acked - began))
    return latencies


async def drive(url: str, actions: int, seed: int) -> dict:
    from playwright.async_api import async_playwright
    rng, errors, turn = np.random.default_rng(seed), [], [0]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        a = await open_page(browser, url, 0, errors)
        b = await open_page(browser, url, 1, errors)
        for page in (a, b):
            await page.locator("body").click(position={"x": 5, "y": 950})
        result = {"idle": await label_actions(b, "b", actions, rng, errors, turn)}
        # A: ↓ (PCA 1-2 -> UMAP); A labels on the map it shows, and B labels, while A's UMAP is computed
        drawn = await a.evaluate(MAP_POINTS_X)
        await a.keyboard.press("ArrowDown")
        pressed = time.perf_counter()
        waited, own, during = await asyncio.gather(wait_for_umap(a, pressed, drawn),
                                                   label_actions(a, "a", 1, rng, errors, turn),
                                                   label_actions(b, "b", actions, rng, errors, turn))
        result.update(own=own, first_umap=during, first_wait=waited)
        # A: → (the next layer's UMAP: numba has compiled by now)
        await a.locator("body").click(position={"x": 5, "y": 950})
        drawn = await a.evaluate(MAP_POINTS_X)
        await a.keyboard.press("ArrowRight")
        pressed = time.perf_counter()
        waited, during = await asyncio.gather(wait_for_umap(a, pressed, drawn),
                                              label_actions(b, "b", actions, rng, errors, turn))
        result.update(second_umap=during, second_wait=waited)
        # A: t (Train: the first model on the labels so far, fitted and predicted for every image)
        await a.locator("body").click(position={"x": 5, "y": 950})
        await a.keyboard.press("t")
        pressed = time.perf_counter()

        async def trained() -> float:
            await a.get_by_text(re.compile(r"^Trained\. ")).first.wait_for(timeout=UMAP_TIMEOUT_S * 1000)
            return time.perf_counter() - pressed
        waited, during = await asyncio.gather(trained(), label_actions(b, "b", actions, rng, errors, turn))
        result.update(train=during, train_wait=waited, errors=errors)
        await browser.close()
    return result


def run(images: int = 2000, actions: int = 3, seed: int = 0) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="labeler-map-wait-"))
    folder = copy_demo_digits(workdir / "digits", per_class=images // 10)
    workspace = prepared_workspace(folder, workdir / "workspace")
    proc, url = start_server(folder, workspace)
    try:
        result = run_coroutine_in_a_thread(drive(url, actions, seed))
    finally:
        log = stop_server(proc)
        (workdir / "server.log").write_text(log)
    result.update(images=images, tracebacks=log.count("Traceback"), log=str(workdir / "server.log"))
    return result


def table(result: dict) -> str:
    base = statistics.median(result["idle"]) if result["idle"] else float("nan")
    rows = [("B labels, nothing else going on (baseline)", result["idle"]),
            ("A labels right after pressing ↓ (its map still PCA)", result["own"]),
            ("B labels while A's first UMAP is computed", result["first_umap"]),
            ("B labels while A's second layer's UMAP is computed", result["second_umap"]),
            ("B labels while A's Train fits the first model", result["train"])]
    lines = [f"{result['images']:,} images; label action latency (ms), lasso to the acknowledgement", "",
             "| phase | actions | first | max | median | max / baseline median |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, values in rows:
        if values:
            lines.append(f"| {name} | {len(values)} | {values[0]:,.0f} | {max(values):,.0f} | "
                         f"{statistics.median(values):,.0f} | {max(values) / base:.1f}x |")
        else:
            lines.append(f"| {name} | 0 | | | | |")
    lines += ["", f"A waited for its UMAP map: {result['first_wait']:.1f} s (first), "
                  f"{result['second_wait']:.1f} s (second layer); for Train's report: {result['train_wait']:.1f} s "
                  f"(from t, with B's labels)",
              f"errors: {len(result['errors'])}; server tracebacks: {result['tracebacks']} ({result['log']})"]
    lines += [f"error: {err}" for err in result["errors"][:10]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="demo digits served (a tenth of them per class)")
    parser.add_argument("--actions", type=int, default=3, help="B's label actions per phase")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.images, args.actions, args.seed)
    print(table(result))
    return 0 if not result["errors"] and not result["tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
