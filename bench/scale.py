"""The whole workflow at 10k, 30k and 100k real photos, through the CLI and the served app: time and memory.

For each size, a folder of distinct photos made from ../shared/data (bench/make_folder.py), then:

1. `labeler embed FOLDER` (the CLI): every offered layer's features; time and the process's peak RSS.
2. `labeler serve FOLDER` and a page in headless Chromium: the opening (thumbnails; the features are
   cached) until the first map shows.
3. In the page, as a person would: step the view to the layer's UMAP; lasso a box of a fifth of the map's
   side (4% of its area; the next box where one holds no point) and label it (the map recoloured); lasso
   another, "Find similar", label it; "Train"; "Check predictions"; "Accept all above"; download the labels
   CSV. A lasso's time is the box that selected (not the empty ones before it).

Each size starts cold: the folder's workspace (FOLDER/.labeler) is removed first.

Each step's wall time is printed with the server's resident memory after it and its peak so far (VmRSS and
VmHWM of its process), and the memory the mapped features take (`features MB`: what the server may not grow
beyond, by design). Maps of 50k points and more are drawn by the server (labeler/ui/raster.py).

    python bench/scale.py --sizes 10000,30000,100000 [--work /tmp/labeler-scale]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_folder import make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT_S = 1800       # any one step of the page; the opening of 100k images takes longer than the others


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


def embed(folder: Path) -> dict:
    """`labeler embed FOLDER` in a child process: seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "labeler.cli", "embed", str(folder)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"labeler embed failed: {proc.stderr.read()[-2000:]}")
    return dict(step="labeler embed (CLI)", seconds=time.perf_counter() - start, rss=None,
                peak=usage.ru_maxrss / 1024)


def features_mb(folder: Path) -> float:
    cache = folder / ".labeler"
    return sum(p.stat().st_size for p in cache.rglob("*.npy")) / 2**20 if cache.is_dir() else 0.0


def app_steps(folder: Path, log) -> list[dict]:
    """The served app's steps in one page; each row: step, seconds, server RSS after, peak so far."""
    from playwright.sync_api import sync_playwright

    from labeler.testing import CHROMIUM_FLAGS, chromium_path, lasso, start_server, stop_server
    rows = []
    start = time.perf_counter()
    proc, url = start_server(folder, timeout=3600.0)
    try:
        def step(name: str, action) -> None:
            log(f"    {name} …")
            began = time.perf_counter()
            try:
                took = action()         # the action's own time, where it is not all of the call
            except Exception:
                page.screenshot(path=str(folder.parent / "scale-stuck.png"))
                raise
            rss, peak = memory_mb(proc.pid)
            rows.append(dict(step=name, seconds=took if took is not None else time.perf_counter() - began,
                             rss=rss, peak=peak))
            log(f"    {name}: {rows[-1]['seconds']:.1f} s, server {rss:.0f} MB (peak {peak:.0f} MB)")

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(STEP_TIMEOUT_S * 1000)

            def opened():
                page.goto(url)
                page.get_by_text(re.compile(r"^Layer: ")).first.wait_for()
                page.wait_for_function("() => Bokeh.documents.some((doc) => { const s = doc.get_model_by_name("
                                       "'map-image'); const u = s && (s.data instanceof Map ? s.data.get('url') "
                                       ": s.data.url); return u && u.length > 0; })")
            began = time.perf_counter() - start
            opened()
            rss, peak = memory_mb(proc.pid)
            rows.append(dict(step="serve: opening until the first map", seconds=time.perf_counter() - start,
                             rss=rss, peak=peak))
            log(f"    opening: {rows[-1]['seconds']:.1f} s ({began:.0f} s to start the server)")

            def umap():
                view = page.get_by_text(re.compile(r"^View: ")).first
                page.locator("body").click(position={"x": 5, "y": 990})
                page.keyboard.press("ArrowDown")
                # "View: UMAP (computing…)" at once (computed in the background), "View: UMAP" once drawn
                page.wait_for_function("(el) => el.innerText.trim() === 'View: UMAP'", arg=view.element_handle())

            def select(start):
                """Lasso boxes of a fifth of the map's side, from `start` on a 4x4 grid, until one selects."""
                def act():
                    cells = [(0.08 + 0.2 * i, 0.14 + 0.2 * j) for j in range(4) for i in range(4)]
                    for left, top in cells[start:] + cells[:start]:
                        began = time.perf_counter()
                        lasso(page, left, left + 0.2, top, top + 0.2)
                        try:
                            found = page.get_by_text(re.compile(r"[1-9]\d* selected")).first
                            found.wait_for(timeout=20_000)
                            took = time.perf_counter() - began
                            log(f"      {found.inner_text().split(',')[0]}")
                            return took
                        except Exception:
                            continue
                    raise RuntimeError("no lasso of the map selected anything")
                return act

            def label(name):
                def act():
                    field = page.get_by_placeholder("new label, then Enter")
                    field.fill(name)
                    field.press("Enter")
                    page.get_by_text(re.compile(rf"Labeled \d+ images “{name}”")).first.wait_for()
                return act

            def similar():
                page.get_by_role("button", name="Find similar").click()
                page.get_by_text(re.compile(r"Added \d+ similar images")).first.wait_for()

            def train():
                page.get_by_role("button", name="Train").click()
                page.get_by_text(re.compile(r"\d+% accurate \(95% interval")).first.wait_for()

            def check():
                page.get_by_role("button", name="Check predictions").click()
                shown = page.get_by_role("button", name="Accept shown").first.element_handle()
                page.wait_for_function("(button) => !button.disabled", arg=shown)     # a sample is shown

            def accept():
                page.get_by_role("button", name="Accept all above").click()
                page.get_by_text(re.compile(r"Accepted \d+ predictions")).first.wait_for()

            def export():
                with page.expect_download() as download:
                    page.get_by_role("button", name="Download labels CSV").click()
                rows_in_file = len(Path(download.value.path()).read_text().splitlines()) - 1
                log(f"    the labels CSV holds {rows_in_file:,} rows")

            step("UMAP of the layer (view ↓)", umap)
            step("lasso (selection shown, review filled)", select(5))
            step("label it (map recoloured)", label("first"))
            step("lasso another region", select(10))
            step("find similar", similar)
            step("label it", label("second"))
            step("Train", train)
            step("Check predictions", check)
            step("Accept all above", accept)
            step("export labels CSV", export)
            browser.close()
    finally:
        log_text = stop_server(proc)
        if "Traceback" in log_text:
            log(log_text[-3000:])
    return rows


def run(sizes: list[int], work: Path, log=print) -> list[dict]:
    results = []
    for n in sizes:
        folder = work / f"photos-{n}"
        log(f"{n:,} images in {folder}")
        began = time.perf_counter()
        make_folder(folder, n, log=lambda m: None)
        shutil.rmtree(folder / ".labeler", ignore_errors=True)      # cold: features, thumbnails, labels made anew
        log(f"  folder ready ({time.perf_counter() - began:.0f} s)")
        rows = [embed(folder)]
        log(f"  embed: {rows[0]['seconds']:.0f} s, peak {rows[0]['peak']:.0f} MB")
        rows += app_steps(folder, log)
        for row in rows:
            row.update(n=n, features=features_mb(folder))
        results += rows
    return results


def table(results: list[dict]) -> str:
    lines = ["| images | step | seconds | server RSS after, MB | peak RSS so far, MB | features on disk, MB |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in results:
        rss = "–" if r["rss"] is None else f"{r['rss']:.0f}"
        lines.append(f"| {r['n']:,} | {r['step']} | {r['seconds']:.1f} | {rss} | {r['peak']:.0f} | "
                     f"{r['features']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/labeler-scale"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = run(sizes, args.work, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
