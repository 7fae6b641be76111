"""Many sessions on one project: browser pages labeling at the same time, and what each of them saw.

Serves `labeler serve FOLDER` on 127.0.0.1 (by default 300 real digits of the built-in demo), opens one
headless Chromium with one browser context per session (its own cookies and page: a person's tab), and
lets every page label at once for a fixed time: lasso a random rectangle of the map (some pages on
another layer, so the selections overlap in some places and not in others), type a label, press Enter,
and wait for the page's acknowledgement `Labeled N images “name”`. Measured:

* latency of a label action: Enter pressed to the acknowledgement shown (Python's clock around
  Playwright's press and wait, so it includes the browser's work on the update);
* throughput: acknowledged label actions per second over all pages;
* the server's resident memory (`VmRSS` of its process) before any page, after the baseline and at
  the end;
* lost labels: every image of an acknowledged action (its ids read from the page's selection) must end
  with that action's label, unless another acknowledged action on it began after this one began and
  could be the later write (overlapping selections: the last write wins); no image may carry a label
  that no acknowledged action gave it; the store's labels must be what its history's last write of each
  image says; and a fresh page's label buttons must show the store's counts;
* errors: page errors and console errors in any page, an error message shown by the app, an
  acknowledgement that never came, a traceback in the server log.

A baseline runs first on the same server and project: one page alone for `--baseline-seconds`; the
table gives the figures with N sessions beside it and their ratio. Then two fresh pages check what
one tab sees of another's labels (`cross_tab`): B says "Another tab labeled N images" at its next
lasso and shows A's label among its buttons, and B's undo takes back B's action, not A's.

The pages of a phase open one after another (as people open tabs), then label together. Pages opened
in the same moment (`--burst`, last) are a known problem apart: some of them ask Panel's CDN for its
stylesheets (README, Known issues); the table says how many, and their errors are not counted above.

    python bench/sessions.py [--sessions 20] [--seconds 90] [--seed 0] [--baseline-seconds 20] [--burst 8]
                             [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labeler.testing import (CHROMIUM_FLAGS, chromium_path, copy_demo_digits, run_coroutine_in_a_thread,  # noqa: E402
                             start_server, stop_server)

OPEN_TIMEOUT_MS = 300_000        # the first page prepares the project (thumbnails, features)
ACTION_TIMEOUT_MS = 120_000      # an acknowledgement later than this counts as an error
SELECT_TIMEOUT_MS = 120_000      # the page's "N selected", after its map selected N
EMPTY_LASSO_CHECKS = 10          # looks at the map's selection, 0.2 s apart, before calling a lasso empty
MAX_EMPTY_LASSOS = 20            # in a row: the map is not there
LAYER = re.compile(r"^Layer: ")
SELECTED = re.compile(r"(\d+) selected")
BUTTON = re.compile(r"^(?:\d+: )?(.+) \((\d+)\)$")
VIEWPORT = {"width": 1400, "height": 1000}


@dataclass
class Action:
    """One acknowledged label action of one page."""

    session: int
    name: str
    ids: list[int]          # the images the page had selected
    entered: float          # perf_counter when Enter was pressed
    acked: float            # and when the acknowledgement showed
    latency_ms: float


@dataclass
class Phase:
    """One timed run of `sessions` pages labeling at once."""

    sessions: int
    seconds: float                  # asked: no page starts an action later, once it has labeled
    actions: list[Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    empty_lassos: int = 0
    open_seconds: float = 0.0       # until every page showed its map, opened one after another
    server_cpu: float = 0.0         # the server's CPU time while the pages labeled, in seconds per second
    elapsed: float = 0.0            # until the last page's last acknowledgement

    @property
    def throughput(self) -> float:
        return len(self.actions) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile([a.latency_ms for a in self.actions], q)) if self.actions else float("nan")


@dataclass
class Report:
    baseline: Phase
    load: Phase
    rss_mb: dict[str, float]
    lost: list[str]
    fresh_page_mismatch: dict
    server_tracebacks: int
    cross_tab: dict
    workdir: Path
    burst: dict

    @property
    def errors(self) -> list[str]:
        return self.baseline.errors + self.load.errors + [f"server log: {self.server_tracebacks} traceback(s)"] * bool(
            self.server_tracebacks)


# ---- one page ------------------------------------------------------------------------------

def _watch(page, session: int, errors: list[str]) -> None:
    page.on("pageerror", lambda err: errors.append(f"session {session}: page error: {err}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(
        f"session {session}: console: {msg.text} ({msg.location.get('url')})"))
    page.on("requestfailed", lambda request: errors.append(
        f"session {session}: request failed: {request.url[:200]} ({request.failure})"))


async def open_page(browser, url: str, session: int, errors: list[str]):
    """A fresh context (a person's tab) on the app, the map drawn."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    _watch(page, session, errors)
    await page.goto(url, timeout=OPEN_TIMEOUT_MS)          # the server builds every page's app in turn
    await page.get_by_text(LAYER).wait_for(timeout=OPEN_TIMEOUT_MS)
    return page


async def step_layers(page, session: int, layer_steps: int) -> None:
    """`layer_steps` layers to the right (→), each step's map drawn before the next."""
    layer = page.get_by_text(LAYER)
    await page.locator("body").click(position={"x": 5, "y": 950})
    for _ in range(layer_steps):
        before = await layer.inner_text()
        await page.keyboard.press("ArrowRight")
        deadline = time.perf_counter() + ACTION_TIMEOUT_MS / 1000
        while await layer.inner_text() == before:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"session {session}: the layer stayed {before!r} after →")
            await asyncio.sleep(0.2)


async def message(page) -> str:
    """The app's status line as shown (empty when hidden)."""
    shown = page.locator(".labeler-message")
    return " / ".join(await shown.all_inner_texts())


async def lasso(page, fx0: float, fx1: float, fy0: float, fy1: float) -> None:
    """Drag a lasso around a rectangle given in fractions of the map (async twin of labeler.testing.lasso)."""
    boxes = [await c.bounding_box() for c in await page.locator("canvas").all() if await c.is_visible()]
    box = sorted((b for b in boxes if b and b["width"] > 300), key=lambda b: b["y"])[0]
    x0, x1 = box["x"] + box["width"] * fx0, box["x"] + box["width"] * fx1
    y0, y1 = box["y"] + box["height"] * fy0, box["y"] + box["height"] * fy1
    await page.mouse.move(x0, y0)
    await page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        await page.mouse.move(x, y, steps=8)
    await page.mouse.up()


SELECTED_IDS_JS = """() => {
  for (const doc of Bokeh.documents) {
    const points = doc.get_model_by_name("points");
    if (points) {
      const source = points.data_source;
      return Array.from(source.selected.indices, (i) => Number(source.data.id[i]));
    }
  }
  return [];
}"""


async def select(page, region) -> list[int]:
    """Lasso `region`; the ids of the images the map selected ([] when none), once the page says how many."""
    await lasso(page, *region)
    ids: list[int] = []
    for _ in range(EMPTY_LASSO_CHECKS):     # the map selects in the page at once; the server answers later
        ids = await page.evaluate(SELECTED_IDS_JS)
        if ids:
            break
        await asyncio.sleep(0.2)
    if ids:
        await page.get_by_text(f"{len(ids)} selected").first.wait_for(timeout=SELECT_TIMEOUT_MS)
    return ids


async def label(page, name: str, count: int) -> tuple[float, float]:
    """Type `name`, press Enter, wait for `Labeled count images “name”`; (perf_counter at Enter, at the text)."""
    field_ = page.get_by_placeholder("new label, then Enter")
    await field_.fill(name)
    start = time.perf_counter()
    await field_.press("Enter")
    await page.get_by_text(f"Labeled {count} images “{name}”").first.wait_for(timeout=ACTION_TIMEOUT_MS)
    return start, time.perf_counter()


def random_region(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A rectangle of the map, a quarter to a half of it on each side (below the toolbar)."""
    w, h = rng.uniform(0.25, 0.5, size=2)
    x0, y0 = rng.uniform(0.03, 0.97 - w), rng.uniform(0.12, 0.97 - h)
    return x0, x0 + w, y0, y0 + h


async def labeling_session(page, session: int, names: list[str], deadline: float, phase: Phase, seed: int) -> None:
    """Lasso and label until `deadline`, and at least once; consecutive actions use different names, so each
    acknowledgement is new."""
    rng = np.random.default_rng([seed, session])
    turn = empty = 0
    while time.perf_counter() < deadline or not turn:
        name = names[turn % len(names)]
        try:
            ids = await select(page, random_region(rng))
            if not ids:
                phase.empty_lassos, empty = phase.empty_lassos + 1, empty + 1
                if empty > MAX_EMPTY_LASSOS:
                    raise RuntimeError(f"{empty} lassos in a row selected nothing")
                continue
            empty = 0
            turn += 1
            entered, acked = await label(page, name, len(ids))
        except Exception as err:    # no selection or no acknowledgement: an error of this session, which stops
            shown = await message(page)
            phase.errors.append(f"session {session}: {type(err).__name__} labeling “{name}”: {err}; "
                                f"its message: {shown[:300]!r}")
            return
        phase.actions.append(Action(session, name, ids, entered, acked, 1000 * (acked - entered)))


# ---- phases --------------------------------------------------------------------------------

def session_names(session: int) -> list[str]:
    """Digit labels shared by all sessions (as people share class names), three per session, rotating."""
    return [f"d{(session + k) % 10}" for k in range(3)]


async def run_phase(browser, url: str, sessions: int, seconds: float, seed: int, first: int, pid: int,
                    note) -> Phase:
    """`sessions` fresh pages (every third one step right of the default layer, every third two), opened one
    after another, label at once for `seconds`; `note(when)` notes the server's memory once they are open."""
    phase = Phase(sessions, seconds)
    ids = range(first, first + sessions)
    start = time.perf_counter()
    pages = [await open_page(browser, url, k, phase.errors) for k in ids]      # one after another
    phase.open_seconds = time.perf_counter() - start
    await asyncio.gather(*(step_layers(page, k, k % 3) for k, page in zip(ids, pages)))
    note(f"{sessions} page(s) open")
    cpu, start = cpu_seconds(pid), time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(labeling_session(page, k, session_names(k), deadline, phase, seed)
                           for k, page in zip(ids, pages)))
    phase.elapsed = time.perf_counter() - start
    phase.server_cpu = (cpu_seconds(pid) - cpu) / phase.elapsed
    await asyncio.gather(*(page.context.close() for page in pages))
    return phase


async def fresh_page_counts(browser, url: str, errors: list[str]) -> dict[str, int]:
    """The label buttons of a fresh page: {label: count}."""
    page = await open_page(browser, url, -1, errors)
    counts = await label_buttons(page)
    await page.context.close()
    return counts


async def burst(browser, url: str, pages: int) -> dict:
    """`pages` pages opened in the same moment: how many of them asked for anything off this machine
    (Panel's stylesheets from its CDN: unstyled widgets offline). Their errors are counted here, apart."""
    errors: list[str] = []
    opened = await asyncio.gather(*(open_page(browser, url, 200 + k, errors) for k in range(pages)))
    await asyncio.gather(*(page.context.close() for page in opened))
    offsite = {err.split(":")[0] for err in errors if "request failed: http" in err and "127.0.0.1" not in err}
    return {"pages": pages, "pages_asking_off_machine": len(offsite), "errors": len(errors)}


async def cross_tab(browser, url: str, errors: list[str]) -> dict:
    """Two fresh pages: what B says and shows after A labeled, and what B's undo takes back (B's own label, A's
    stays): the texts seen."""
    a = await open_page(browser, url, 100, errors)
    b = await open_page(browser, url, 101, errors)
    seen: dict = {}
    n_a = len(await select(a, (0.05, 0.55, 0.15, 0.6)))
    await label(a, "crossA", n_a)
    n_b = len(await select(b, (0.45, 0.95, 0.5, 0.95)))        # B's next action, after A's
    told = b.get_by_text(re.compile(r"Another tab labeled \d+ images? since your last action"))
    await told.first.wait_for(timeout=ACTION_TIMEOUT_MS)
    seen["b_told"] = await told.first.inner_text()
    crossa = b.get_by_role("button", name=re.compile(rf"crossA \({n_a}\)"))
    await crossa.wait_for(timeout=ACTION_TIMEOUT_MS)
    seen["b_button"] = await crossa.inner_text()
    await label(b, "crossB", n_b)
    await b.get_by_role("button", name="Undo").click()
    undid = b.get_by_text(re.compile(r"^Undid: "))
    await undid.first.wait_for(timeout=ACTION_TIMEOUT_MS)
    seen["b_undid"] = await undid.first.inner_text()
    try:
        await b.get_by_role("button", name=re.compile(r"crossB \(")).wait_for(state="detached", timeout=30_000)
    except Exception:           # Playwright's TimeoutError: the buttons below say what stayed
        pass
    seen["b_buttons_after_undo"] = {name: count for name, count in (await label_buttons(b)).items()
                                    if name.startswith("cross")}
    seen.update(n_a=n_a, n_b=n_b)
    await asyncio.gather(a.context.close(), b.context.close())
    return seen


async def label_buttons(page) -> dict[str, int]:
    """The page's label buttons: {label: count}."""
    counts = {}
    for button in await page.get_by_role("button").all():
        found = BUTTON.match((await button.inner_text()).strip())
        if found:
            counts[found.group(1)] = int(found.group(2))
    return counts


# ---- the store: was anything acknowledged lost? ---------------------------------------------------

def lost_labels(workspace: Path, acknowledged: list[Action]) -> list[str]:
    """What the store lost or invented of the acknowledged actions ([] when nothing): see the module's doc."""
    from labeler.store import LabelStore
    with LabelStore(workspace / "labels.sqlite", actor="bench") as store:
        stored = store.assignments()
    last = history_last_writes(workspace / "labels.sqlite")
    now = dict(zip(stored["item_id"].tolist(), stored["label"].tolist()))
    covering = collections.defaultdict(list)
    for action in acknowledged:
        for item in action.ids:
            covering[item].append(action)
    problems = []
    for item, actions in sorted(covering.items()):
        latest_start = max(a.entered for a in actions)
        could_be_last = {a.name for a in actions if a.acked >= latest_start}
        if now.get(item) not in could_be_last:
            problems.append(f"image {item}: stored {now.get(item)!r}, acknowledged last: {sorted(could_be_last)}")
    problems += [f"image {item}: stored {name!r} by no acknowledged action" for item, name in now.items()
                 if item not in covering]
    problems += [f"image {item}: the history's last write says {name!r}, the store {now.get(item)!r}"
                 for item, name in last.items() if now.get(item) != name]
    return problems


def history_last_writes(db_path: Path) -> dict[int, str | None]:
    """Per image, the label its last write in the store's history (events not undone) left; read with sqlite3
    itself, not through the store under test."""
    import sqlite3
    from labeler._changes import Changes
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = dict(conn.execute("SELECT id, name FROM label_defs"))
        payloads = [row[0] for row in conn.execute("SELECT payload FROM events WHERE state=0 ORDER BY id")]
    finally:
        conn.close()
    last: dict[int, str | None] = {}
    for payload in payloads:
        for item, _, after in Changes.decode(payload).assign:
            last[item] = names[after[0][0]] if after else None
    return last


def store_counts(workspace: Path) -> dict[str, int]:
    from labeler.store import LabelStore
    with LabelStore(workspace / "labels.sqlite", actor="bench") as store:
        return store.counts()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used, from /proc (Linux)."""
    import os
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the whole run ---------------------------------------------------------------------------

async def drive(url: str, pid: int, workspace: Path, sessions: int, seconds: float, seed: int,
                baseline_seconds: float, burst_pages: int) -> tuple:
    from playwright.async_api import async_playwright
    rss = {"server started": rss_mb(pid)}

    def note(when: str) -> None:
        rss[when] = rss_mb(pid)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        warm: list[str] = []
        await (await open_page(browser, url, -2, warm)).context.close()    # the first page prepares the project
        note("project prepared")
        baseline = await run_phase(browser, url, 1, baseline_seconds, seed, 0, pid, note)
        note("after the baseline")
        load = await run_phase(browser, url, sessions, seconds, seed, 1, pid, note)
        note(f"after {sessions} sessions")
        extra: list[str] = []
        lost = lost_labels(workspace, baseline.actions + load.actions)
        counts = await fresh_page_counts(browser, url, extra)
        stored = store_counts(workspace)
        mismatch = {name: (counts.get(name), stored.get(name)) for name in set(counts) | set(stored)
                    if counts.get(name) != stored.get(name)}
        seen = await cross_tab(browser, url, extra)
        load.errors.extend(warm + extra)
        opened_at_once = await burst(browser, url, burst_pages) if burst_pages else {}
        await browser.close()
    rss["end"] = rss_mb(pid)
    return baseline, load, rss, lost, mismatch, seen, opened_at_once


def run(folder: Path | None = None, *, sessions: int = 20, seconds: float = 90, seed: int = 0,
        baseline_seconds: float = 20, burst_pages: int = 0, workdir: Path | None = None) -> Report:
    """Serve a project, run the baseline and the load, check the store; the server's log must hold no traceback."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="labeler-sessions-"))
    folder = folder or copy_demo_digits(workdir / "digits", per_class=30)
    workspace = workdir / "workspace"
    proc, url = start_server(folder, workspace)
    try:
        baseline, load, rss, lost, mismatch, seen, opened_at_once = run_coroutine_in_a_thread(
            drive(url, proc.pid, workspace, sessions, seconds, seed, baseline_seconds, burst_pages))
    finally:
        log = stop_server(proc)
        (workdir / "server.log").write_text(log)
    return Report(baseline, load, rss, lost, mismatch, log.count("Traceback"), seen, workdir, opened_at_once)


def table(report: Report) -> str:
    base, load = report.baseline, report.load
    rows = [("sessions", f"{base.sessions}", f"{load.sessions}", ""),
            ("seconds: asked, until the last acknowledgement", f"{base.seconds:.0f}, {base.elapsed:.0f}",
             f"{load.seconds:.0f}, {load.elapsed:.0f}", ""),
            ("label actions", f"{len(base.actions)}", f"{len(load.actions)}", "")]
    rows.append(("actions / s", f"{base.throughput:.2f}", f"{load.throughput:.2f}",
                 f"{load.throughput / base.throughput:.1f}x" if base.throughput else ""))
    for q in (50, 95, 99):
        b, n = base.percentile(q), load.percentile(q)
        rows.append((f"latency p{q} (ms)", f"{b:.0f}", f"{n:.0f}", f"{n / b:.1f}x" if b else ""))
    rows.append(("opening the pages one after another (s)", f"{base.open_seconds:.1f}", f"{load.open_seconds:.1f}",
                 ""))
    rows.append(("server CPU while labeling (cores)", f"{base.server_cpu:.2f}", f"{load.server_cpu:.2f}", ""))
    rows.append(("empty lassos", f"{base.empty_lassos}", f"{load.empty_lassos}", ""))
    rows.append(("errors", f"{len(base.errors)}", f"{len(load.errors)}", ""))
    lines = ["| measure | 1 session (baseline) | many sessions | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    rss = ", ".join(f"{k} {v:.0f} MB" for k, v in report.rss_mb.items())
    lines += ["", f"server RSS: {rss}", f"lost labels: {len(report.lost)}",
              f"fresh page differs from the store: {len(report.fresh_page_mismatch)} labels",
              f"server log tracebacks: {report.server_tracebacks} ({report.workdir / 'server.log'})",
              f"cross-tab: {json.dumps(report.cross_tab, ensure_ascii=False)}",
              f"pages opened in the same moment: {json.dumps(report.burst)}"]
    kinds = collections.Counter(re.sub(r"^session -?\d+: ", "", err) for err in report.errors)
    lines += [f"error ({times}x): {err}" for err, times in kinds.most_common(20)]
    lines += [f"lost: {problem}" for problem in report.lost[:20]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--burst", type=int, default=8, help="then open this many pages in the same moment")
    parser.add_argument("--folder", type=Path, help="image folder (default: 300 digits of the demo)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.folder, sessions=args.sessions, seconds=args.seconds, seed=args.seed,
                 baseline_seconds=args.baseline_seconds, burst_pages=args.burst)
    if args.json:
        print(json.dumps({**asdict(report), "errors": report.errors}, indent=1, ensure_ascii=False, default=str))
    else:
        print(table(report))
    return 0 if not report.errors and not report.lost and not report.fresh_page_mismatch else 1


if __name__ == "__main__":
    sys.exit(main())
