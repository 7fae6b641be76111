"""Crash safety end to end: SIGKILL the served app while a real Chromium session labels in it, then restart it.

A seeded driver. Each cycle starts `labeler serve` on the same folder and workspace, opens the page, labels a
few groups (a lasso, then a name typed in the new-label field and Enter) or single images (a label's number
key over an image of the review), and kills the server with SIGKILL at one of three moments:

* in-flight: right after Enter or the key, before the page acknowledged the label (0-0.4 s later). That
  action may be in the store or not, but whole: all of its images or none of them.
* after-ack: as soon as the page acknowledged the last label.
* idle: a while (0.2-3 s) after the last acknowledgement.

The page acknowledges a group with `Labeled N images “name”.` once the store has committed it, and a
single image by dropping it from the review. After each kill the store is checked with SQLite's
`PRAGMA integrity_check` and read through its own API (`LabelStore.assignments`): every image's label must
be the one the acknowledged actions gave it (nothing lost, nothing extra). After the restart the page's
label buttons (`1: round (12)`) must show the store's counts.

    .venv/bin/python bench/crash.py --kills 20 --seed 0 [--folder FOLDER] [--json]

Without --folder it labels 300 real digits of the built-in demo (30 per class), copied to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labeler.store import LabelStore  # noqa: E402
from labeler.testing import (CHROMIUM_FLAGS, assert_no_traceback, canvases, chromium_path,  # noqa: E402
                             copy_demo_digits, hover_review_cell, lasso, leave_review_grid, shown_labels, start_server,
                             stop_server, wait_until)

LABELS = ("round", "corner", "thin", "wide", "loop")
MOMENTS = ("in-flight", "after-ack", "idle")
LAYER_TIMEOUT_MS = 300_000
ACK_TIMEOUT = 30.0
EMPTY_REVIEW = "Lasso a group of images to review it here."
FIRST_LABEL = re.compile(r"^1: (.+) \(\d+\)$")     # the button of the label that key 1 gives

POINTS_JS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const plot = doc.get_model_by_name('map'), points = doc.get_model_by_name('points');
    if (plot && points) {
      const data = points.data_source.data;
      return {x: Array.from(data.x), y: Array.from(data.y), x_range: [plot.x_range.start, plot.x_range.end],
              y_range: [plot.y_range.start, plot.y_range.end]};
    }
  }
  return null;
}"""
GRID_IDS_JS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const grid = doc.get_model_by_name('review-grid');
    if (!grid) { continue; }
    for (const renderer of grid.renderers) {
      const data = renderer.data_source.data;
      if (data.id !== undefined) { return Array.from(data.id); }
    }
  }
  return null;
}"""


@dataclass
class Cycle:
    """One kill: what the page acknowledged before it, and what the store and the page held after it."""
    kill: int
    moment: str
    acked_actions: int = 0     # label actions the page acknowledged in this cycle
    acked_images: int = 0      # images those actions labeled
    in_flight: str = "-"       # the unacknowledged action at the kill: applied, not applied, TORN, or -
    expected: int = 0          # labeled images the acknowledged actions (all cycles so far) leave
    found: int = 0             # of those, with the same label in the store after the kill
    lost: int = 0              # acknowledged labels missing or different in the store
    extra: int = 0             # images labeled in the store that no action labeled
    integrity: str = ""        # PRAGMA integrity_check after the kill
    restart_s: float = 0.0     # server start to the page showing the map (first cycle: the project prepares)
    page_matches: bool | None = None   # after the restart, the page's label buttons show the store's counts
    traceback: bool = False    # the server logged a traceback before the kill


@dataclass
class Report:
    cycles: list[Cycle] = field(default_factory=list)
    final_page_matches: bool | None = None
    final_restart_s: float = 0.0


# ---- the page -----------------------------------------------------------------------------------

def _review_count(page) -> int:
    """The number the review text shows as selected (0 when the review is empty)."""
    texts = page.get_by_text(re.compile(r"\d+ selected")).all_inner_texts()
    found = [re.search(r"(\d+) selected", text) for text in texts]
    return next((int(m.group(1)) for m in found if m), 0)


def _grid_ids(page) -> list[int]:
    return [int(i) for i in (page.evaluate(GRID_IDS_JS) or [])]


def _clear_selection(page) -> None:
    if _review_count(page):
        page.mouse.click(5, 990)                       # keys go to the map, not to a field
        page.keyboard.press("Escape")
        wait_until(lambda: _review_count(page) == 0, ACK_TIMEOUT)


def _points(page) -> dict:
    """The map's points (x, y) and its ranges, once it has drawn some."""
    wait_until(lambda: len((page.evaluate(POINTS_JS) or {}).get("x", [])) > 0, ACK_TIMEOUT)
    return page.evaluate(POINTS_JS)


def _region_around_a_point(page, rng: random.Random) -> tuple[float, float, float, float]:
    """A random rectangle (fractions of the map: x0, x1, y0, y1) around one randomly chosen point."""
    points = _points(page)
    index = rng.randrange(len(points["x"]))
    (x_start, x_end), (y_start, y_end) = points["x_range"], points["y_range"]
    fx = (points["x"][index] - x_start) / (x_end - x_start)
    fy = 1 - (points["y"][index] - y_start) / (y_end - y_start)
    width, height = rng.uniform(0.08, 0.25), rng.uniform(0.08, 0.25)
    x0 = min(max(fx - width / 2, 0.02), 0.98 - width)
    y0 = min(max(fy - height / 2, 0.12), 0.98 - height)   # below the toolbar
    return x0, x0 + width, y0, y0 + height


def _select(page, rng: random.Random, tries: int = 8) -> list[int]:
    """Lasso a random region with at least one image and no more than the review grid shows (240); returns
    the ids the review shows."""
    for _ in range(tries):
        _clear_selection(page)
        lasso(page, *_region_around_a_point(page, rng))
        try:
            wait_until(lambda: 0 < _review_count(page) == len(_grid_ids(page)), 5.0)
        except TimeoutError:
            continue                                   # the point was on the rectangle's edge, or too many
        return _grid_ids(page)
    raise RuntimeError(f"no lasso of {tries} found images to label")


def _open(page, url: str) -> None:
    page.goto(url)
    page.get_by_text(re.compile(r"^Layer: ")).wait_for(timeout=LAYER_TIMEOUT_MS)
    _points(page)


# ---- the actions: each returns (ids, label, acknowledge); acknowledge() waits for the page's word -------

def _label_group(page, rng: random.Random):
    ids, name = _select(page, rng), rng.choice(LABELS)
    field_ = page.get_by_placeholder("new label, then Enter")
    field_.fill(name)
    field_.press("Enter")

    def acknowledge():
        page.get_by_text(f"Labeled {len(ids)} images “{name}”").wait_for(timeout=ACK_TIMEOUT * 1000)
        page.get_by_text(EMPTY_REVIEW).first.wait_for(timeout=ACK_TIMEOUT * 1000)
    return ids, name, acknowledge


def _label_one(page, rng: random.Random):
    """Label 1's key over the first image of a fresh selection."""
    name = FIRST_LABEL.match(page.get_by_role("button", name=FIRST_LABEL).first.inner_text().strip()).group(1)
    shown = _select(page, rng)
    page.mouse.click(5, 990)                           # out of the new-label field
    leave_review_grid(page)                            # no hovered image left over from an earlier review
    boxes = canvases(page)
    grid = [box for box in boxes if box["y"] > boxes[0]["y"] + 100][0]
    item = int(hover_review_cell(page, grid))
    if item not in shown:
        raise RuntimeError(f"the page hovers image {item}, which is not in the review {shown}")
    page.keyboard.press("1")

    def acknowledge():
        wait_until(lambda: _review_count(page) == len(shown) - 1 and item not in _grid_ids(page), ACK_TIMEOUT)
    return [item], name, acknowledge


# ---- the store ----------------------------------------------------------------------------------

def integrity(db_path: Path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def stored_labels(db_path: Path) -> tuple[dict[int, str], dict[str, int]]:
    """(item -> label, label -> count) through the store's own API."""
    with LabelStore(db_path, actor="crash-check") as store:
        table = store.assignments()
        return dict(zip(table["item_id"].astype(int), table["label"])), store.counts()


def check_store(cycle: Cycle, db_path: Path, expected: dict[int, str], pending) -> dict[str, int]:
    """Fill `cycle` from the store after a kill; `expected` is updated with the in-flight action when it
    landed. Returns the store's counts per label."""
    cycle.integrity = integrity(db_path)
    actual, counts = stored_labels(db_path)
    if pending is not None:
        ids, name = pending
        applied = all(actual.get(i) == name for i in ids)
        absent = all(actual.get(i) == expected.get(i) for i in ids)
        cycle.in_flight = "applied" if applied else "not applied" if absent else "TORN"
        if applied:
            expected.update(dict.fromkeys(ids, name))
    torn = set(pending[0]) if cycle.in_flight == "TORN" else set()
    cycle.expected = len(expected)
    cycle.found = sum(actual.get(i) == name for i, name in expected.items())
    cycle.lost = cycle.expected - cycle.found
    cycle.extra = len(set(actual) - set(expected) - torn)
    return counts


# ---- the driver ---------------------------------------------------------------------------------

def _start(folder: Path, workspace: Path, page):
    """`labeler serve` and the page opened on it; returns (process, seconds from the start to the map shown).

    A page that does not open in time kills the server with SIGABRT first, so its log shows what every
    thread was doing (PYTHONFAULTHANDLER), and that goes into the error.
    """
    began = time.perf_counter()
    proc, url = start_server(folder, workspace, timeout=LAYER_TIMEOUT_MS / 1000, probe="favicon.ico",
                             env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        _open(page, url)
    except Exception as err:
        proc.send_signal(signal.SIGABRT)
        proc.wait()
        raise RuntimeError(f"the page did not open ({err}); the server's log ends:\n"
                           f"{Path(proc.log_path).read_text(errors='replace')[-6000:]}") from err
    return proc, time.perf_counter() - began


def _page_matches(page, counts: dict[str, int]) -> bool:
    try:
        wait_until(lambda: shown_labels(page) == counts, ACK_TIMEOUT)
    except TimeoutError:
        return False
    return True


def _kill(proc) -> bool:
    """SIGKILL the server; whether its log showed a traceback before."""
    proc.kill()
    proc.wait()
    return "Traceback" in Path(proc.log_path).read_text(errors="replace")


def _label_until_killed(page, proc, rng: random.Random, cycle: Cycle, expected: dict[int, str]):
    """A few label actions, then the kill at the cycle's moment; returns the unacknowledged action
    (ids, label) at the kill, or None."""
    steps = rng.randint(1, 4)
    for step in range(steps):
        has_label = bool(page.get_by_role("button", name=FIRST_LABEL).count())
        action = _label_one if has_label and rng.random() < 0.3 else _label_group
        ids, name, acknowledge = action(page, rng)
        if cycle.moment == "in-flight" and step == steps - 1:
            # at once (the keystroke may not even have reached the server), or while it is being handled
            time.sleep(rng.choice((0.0, rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.4))))
            cycle.traceback = _kill(proc)
            return ids, name
        acknowledge()
        expected.update(dict.fromkeys(ids, name))
        cycle.acked_actions += 1
        cycle.acked_images += len(ids)
    if cycle.moment == "idle":
        time.sleep(rng.uniform(0.2, 3.0))
    cycle.traceback = _kill(proc)
    return None


def run(folder: Path, workspace: Path, page, kills: int = 20, seed: int = 0, log=None) -> Report:
    """Kill the app `kills` times while `page` labels in it; see the module's docstring."""
    rng = random.Random(seed)
    moments = [MOMENTS[k % len(MOMENTS)] for k in range(kills)]
    rng.shuffle(moments)
    db_path = workspace / "labels.sqlite"
    expected: dict[int, str] = {}     # item -> label, as the acknowledged actions left it
    counts: dict[str, int] | None = None
    report, proc = Report(), None
    try:
        for kill, moment in enumerate(moments):
            cycle = Cycle(kill + 1, moment)
            proc, cycle.restart_s = _start(folder, workspace, page)
            if counts is not None:
                cycle.page_matches = _page_matches(page, counts)
            pending = _label_until_killed(page, proc, rng, cycle, expected)
            counts = check_store(cycle, db_path, expected, pending)
            report.cycles.append(cycle)
            if log:
                log(cycle)
        proc, report.final_restart_s = _start(folder, workspace, page)
        report.final_page_matches = _page_matches(page, counts or {})
    finally:
        if proc is not None and proc.poll() is None:
            assert_no_traceback(stop_server(proc))
    return report


def table(report: Report) -> str:
    """The cycles as a Markdown table, and the totals under it."""
    columns = ["kill", "moment", "acked_actions", "acked_images", "in_flight", "expected", "found", "lost", "extra",
               "integrity", "restart_s", "page_matches", "traceback"]
    cycles = report.cycles
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for cycle in cycles:
        row = {**asdict(cycle), "restart_s": f"{cycle.restart_s:.1f}"}
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if not cycles:
        return "\n".join(lines)
    restarts = sorted([c.restart_s for c in cycles[1:]] + [report.final_restart_s])
    in_flight = [c.in_flight for c in cycles if c.in_flight != "-"]
    matches = [c.page_matches for c in cycles[1:]] + [report.final_page_matches]
    lines += [
        "",
        f"kills: {len(cycles)}; labels acknowledged by the page: {sum(c.acked_images for c in cycles)} images in "
        f"{sum(c.acked_actions for c in cycles)} actions",
        f"labeled images at the end: {cycles[-1].expected} expected, {cycles[-1].found} found in the store; "
        f"lost over all kills: {sum(c.lost for c in cycles)}; extra: {sum(c.extra for c in cycles)}",
        f"in-flight actions at a kill: {in_flight.count('applied')} applied, {in_flight.count('not applied')} "
        f"not applied, {in_flight.count('TORN')} torn",
        f"integrity_check ok: {sum(c.integrity == 'ok' for c in cycles)} of {len(cycles)}; the page's label counts "
        f"match the store after the restart: {sum(bool(m) for m in matches)} of {len(matches)}",
        f"restart to map shown: median {restarts[len(restarts) // 2]:.1f} s, max {restarts[-1]:.1f} s (the first "
        f"start, which prepares the project: {cycles[0].restart_s:.1f} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="how many times to kill the server (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="images to label (default: 300 demo digits)")
    parser.add_argument("--json", action="store_true", help="print the cycles as JSON instead of a table")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright
    if chromium_path() is None:
        print("Debian's chromium is not installed (bash setup.sh --dev installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="labeler-crash-") as temp, sync_playwright() as pw:
        folder = args.folder or copy_demo_digits(Path(temp) / "digits", per_class=30)
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        log = None if args.json else (lambda cycle: print(f"kill {cycle.kill}: {cycle}", file=sys.stderr))
        report = run(folder, Path(temp) / "workspace", page, args.kills, args.seed, log)
        browser.close()
    print(json.dumps(asdict(report), indent=1) if args.json else table(report))
    bad = sum(c.lost + c.extra for c in report.cycles) or any(c.integrity != "ok" for c in report.cycles)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
