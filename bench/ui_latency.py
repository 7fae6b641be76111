"""Lasso-to-recoloured-plot latency in a real browser, beside Bokeh's own redraw time.

Serves the app's own map (``labeler.ui.map.map_figure``: LassoSelectTool
(continuous=False), color/alpha columns, ``selected.on_change("indices", ...)`` in Python which
"labels" the selection and recolours via ``source.data.update(color=..., alpha=...)``, like the
app's ``_recolour``) with ``pn.serve`` on 127.0.0.1, drives it with Playwright + Debian Chromium and
measures, per number of points N and per output backend:

* lasso: ``performance.now()`` at pointer-up (capture listener on window) to the recoloured plot.
  "Recoloured" = the end of the first Bokeh plot paint after the data change arrived (the plot
  view's ``paint`` is wrapped in the page), plus one ``requestAnimationFrame`` (next frame, so the
  painted frame has been handed to the compositor). Split into up -> data arrived (selection to
  server, Python callback, message back, deserialisation; recorded by a ``CustomJS`` on
  ``source.js_on_change("data", ...)``) and data arrived -> shown.
  The brief's simpler "two requestAnimationFrame after the data arrived" mark is recorded too
  (``raf2``); it can fire before Bokeh's throttled paint, so it is not the headline number.
* baseline: Bokeh alone. In the page, replace the colour column of all N points with a
  precomputed array and ``source.change.emit()`` (no server, no Python), timed to the same
  "paint end + one frame" mark.

Each is the median over 3 repetitions. With ``--during-fine-tune``, every size is measured twice: idle,
then while the Model tab's fine-tune (``labeler.finetune``: a child process at a lower priority) trains
mobilenet_v2 on 300 cifar10 images of ``../shared/data`` in the background; the table gives both rows
and their ratio. Usage::

    python bench/ui_latency.py [--sizes 10000,50000,100000] [--backend canvas|webgl|both] [--during-fine-tune] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import statistics
import sys
import time

import numpy as np

REPS = 3
N_BLOBS = 10
SIGMA = 0.03
PLOT_PX = 700
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
UNLABELED = "#bbbbbb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Python-side callback durations, keyed by (backend, n); written by the server thread.
PY_TIMES: dict[tuple[str, int], list[float]] = {}
SELECT_TIMES: dict[tuple[str, int], list[float]] = {}   # the raster map: the lasso's geometry to the selection image
SELECTED: dict[tuple[str, int], list[int]] = {}
RASTER = "image"      # the map past its threshold: points drawn by the server (labeler/ui/raster.py)


def blob_centres() -> np.ndarray:
    """Ten centres on a 4x3 grid (two cells empty), far enough apart that a 3.5-sigma lasso takes one blob."""
    cells = [(i, j) for j in range(3) for i in range(4)][:N_BLOBS]
    return np.array([(0.14 + 0.24 * i, 0.18 + 0.32 * j) for i, j in cells])


def make_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = blob_centres()
    which = np.arange(n) % N_BLOBS
    return (centres[which] + rng.normal(0, SIGMA, (n, 2))).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app():
    import panel as pn
    from bokeh.models import ColumnDataSource, CustomJS

    from labeler.ui.map import map_figure

    def app():
        args = pn.state.session_args
        n = int(args["n"][0])
        backend = args["backend"][0].decode()
        if backend == RASTER:
            return raster_app(n)
        xy = make_points(n)
        colour = np.full(n, UNLABELED, dtype=object)
        alpha = np.full(n, 0.9, dtype=np.float32)
        source = ColumnDataSource(dict(x=xy[:, 0], y=xy[:, 1], id=np.arange(n), color=colour.copy(), alpha=alpha.copy()),
                                  name="map-source")
        # the app's own map (labeler.ui.map), at a fixed size so the lasso geometry is known (the app stretches)
        plot, _ = map_figure(source, backend, width=PLOT_PX, height=PLOT_PX)
        source.js_on_change("data", CustomJS(code="if (window.__bench_data) window.__bench_data();"))
        state = dict(label=0)

        def on_select(attr, old, new):
            if not len(new):
                return
            t0 = time.perf_counter()
            # What labeling does: give the selection a label colour, then replace the colour columns.
            colour[np.asarray(new, dtype=np.int64)] = PALETTE[state["label"] % len(PALETTE)]
            state["label"] += 1
            source.data.update(color=colour.copy(), alpha=alpha.copy())
            PY_TIMES.setdefault((backend, n), []).append((time.perf_counter() - t0) * 1000)

        source.selected.on_change("indices", on_select)
        return pn.pane.Bokeh(plot)

    return app


def raster_app(n: int):
    """The app's own MapView past its threshold (server-drawn points), without thumbnails: a lasso's geometry goes
    to Python, which computes the selection and sends the image with it drawn; then, as labeling does, the
    selection gets a label colour and the image is sent again recoloured."""
    import panel as pn
    from bokeh.models import CustomJS

    from labeler.ui.map import MapView
    xy = make_points(n)
    colour = np.full(n, UNLABELED, dtype=object)
    alpha = np.full(n, 0.9, dtype=np.float32)
    state = dict(label=0)

    def on_select(ids):
        t0 = time.perf_counter()
        doc = pn.state.curdoc

        def label():       # the next tick, as the app's label runs: the selection image goes out first
            t1 = time.perf_counter()
            colour[np.asarray(ids, dtype=np.int64)] = PALETTE[state["label"] % len(PALETTE)]
            state["label"] += 1
            view.recolour(colour, alpha, None)
            PY_TIMES.setdefault((RASTER, n), []).append((time.perf_counter() - t1) * 1000)
        SELECT_TIMES.setdefault((RASTER, n), []).append((time.perf_counter() - t0) * 1000)
        SELECTED.setdefault((RASTER, n), []).append(len(ids))
        doc.add_next_tick_callback(label)

    view = MapView(None, "canvas", on_select=on_select, on_hover=lambda item: None, raster_from=0)
    view.plot.sizing_mode, view.plot.width, view.plot.height = "fixed", PLOT_PX, PLOT_PX
    view.draw(xy, np.arange(n), n, colour, alpha, None)
    view._tiles.js_on_change("data", CustomJS(code="if (window.__bench_image) window.__bench_image();"))
    return pn.pane.Bokeh(view.plot)


# --- page-side instrumentation -------------------------------------------------------------
JS_SETUP = """() => {
  const pv = Bokeh.index.query_one(v => v.model && v.model.name === 'map');
  if (!pv) return false;
  const B = window.__bench = {up: null, sel: null, data: null, raf2: null, painted: null, shown: null, armed: false, t0: null};
  const orig = pv.paint.bind(pv);
  pv.paint = function (...a) {
    const r = orig(...a);
    const t = performance.now();
    if (B.armed && B.up != null && B.sel == null && B.data == null && t >= B.up) B.sel = t;
    const start = B.data != null ? B.data : B.t0;
    if (B.armed && start != null && B.painted == null && t >= start) {
      B.painted = t;
      requestAnimationFrame(() => { B.shown = performance.now(); });
    }
    return r;
  };
  window.addEventListener('pointerup', () => { if (B.armed && B.up == null) B.up = performance.now(); }, true);
  window.__bench_data = () => {
    if (!B.armed || B.data != null) return;
    B.data = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => { B.raf2 = performance.now(); }));
  };
  window.__bench_pv = pv;
  return true;
}"""

JS_RASTER_SETUP = """() => {
  const pv = Bokeh.index.query_one(v => v.model && v.model.name === 'map');
  if (!pv) return false;
  const rv = [...pv.renderer_views.values()].find(r => r.model.data_source && r.model.data_source.name === 'map-image');
  const B = window.__bench = {up: null, images: [], armed: false};
  const orig = pv.paint.bind(pv);
  pv.paint = function (...a) {
    const r = orig(...a);
    const t = performance.now();
    // an image is shown by the first paint after it has loaded (ImageURL loads a new url asynchronously)
    for (const im of B.images) {
      if (im.shown == null && rv.glyph.image[0] && rv.glyph.image[0].src === im.url) {
        im.painted = t;
        requestAnimationFrame(() => { im.shown = performance.now(); });
      }
    }
    window.__last_paint = t;
    return r;
  };
  window.addEventListener('pointerup', () => { if (B.armed && B.up == null) B.up = performance.now(); }, true);
  window.__bench_image = () => {
    if (!B.armed) return;
    const data = rv.model.data_source.data;
    const url = data instanceof Map ? data.get('url')[0] : data.url[0];
    B.images.push({url, arrived: performance.now(), painted: null, shown: null});
  };
  window.__bench_pv = pv;
  pv.__idlehook = true;
  return true;
}"""

JS_ARM = """() => { Object.assign(window.__bench, {up: null, sel: null, data: null, raf2: null, painted: null, shown: null, t0: null, armed: true}); }"""

JS_LASSO_PATH = """([cx, cy, r, k]) => {
  const pv = window.__bench_pv, f = pv.frame;
  const rect = pv.canvas_view.el.getBoundingClientRect();
  const pts = [];
  for (let i = 0; i <= k; i++) {
    const a = 2 * Math.PI * i / k;
    pts.push([rect.left + f.x_scale.compute(cx + r * Math.cos(a)), rect.top + f.y_scale.compute(cy + r * Math.sin(a))]);
  }
  return pts;
}"""

JS_BASELINE = """(colour) => {
  const src = Bokeh.documents[0].get_model_by_name('map-source');
  const n = src.get_length();
  const arr = new Array(n).fill(colour);
  const B = window.__bench;
  Object.assign(B, {up: null, sel: null, data: null, raf2: null, painted: null, shown: null, armed: true});
  B.t0 = performance.now();
  if (src.data instanceof Map) src.data.set('color', arr); else src.data.color = arr;
  src.change.emit();
}"""


def wait_idle(page, quiet_ms: int = 400, timeout_s: float = 60) -> None:
    """Wait until no Bokeh paint has happened for quiet_ms (initial render, previous run)."""
    page.evaluate("""() => { const pv = window.__bench_pv; if (pv && !pv.__idlehook) {
        const o = pv.paint; pv.paint = function (...a) { const r = o.apply(this, a); window.__last_paint = performance.now(); return r; };
        pv.__idlehook = true; window.__last_paint = performance.now(); } }""")
    page.wait_for_function(f"() => performance.now() - (window.__last_paint || 0) > {quiet_ms}", timeout=timeout_s * 1000)


def lasso_around(page, rep: int) -> None:
    cx, cy = blob_centres()[rep]
    pts = page.evaluate(JS_LASSO_PATH, [float(cx), float(cy), 3.5 * SIGMA, 32])
    page.mouse.move(*pts[0])
    page.mouse.down()
    for p in pts[1:]:
        page.mouse.move(*p, steps=2)
    page.mouse.up()


def measure_raster(page, n: int, timeout_s: float) -> dict:
    """The server-drawn map: pointer-up to the selection's image shown, and to the recoloured image shown."""
    runs = []
    for rep in range(REPS):
        wait_idle(page)
        page.evaluate("() => Object.assign(window.__bench, {up: null, images: [], armed: true})")
        lasso_around(page, rep)
        page.wait_for_function("() => window.__bench.images.length >= 2 && window.__bench.images[1].shown != null",
                               timeout=timeout_s * 1000)
        b = page.evaluate("() => window.__bench")
        selection, recoloured = b["images"][0], b["images"][1]
        runs.append(dict(selection=selection["shown"] - b["up"], recoloured=recoloured["shown"] - b["up"],
                         to_data=selection["arrived"] - b["up"], label=recoloured["shown"] - selection["arrived"]))
    med = lambda key: statistics.median(r[key] for r in runs)
    py, sel = PY_TIMES.get((RASTER, n), []), SELECT_TIMES.get((RASTER, n), [])
    return dict(backend=RASTER, n=n, selected=int(statistics.median(SELECTED.get((RASTER, n), [0]))), lasso_ms=med("recoloured"), up_to_data_ms=med("to_data"),
                data_to_shown_ms=None, selection_paint_ms=med("selection"), lasso_raf2_ms=None,
                python_cb_ms=statistics.median(py) if py else None, baseline_ms=None, baseline_paint_ms=None,
                lasso_runs_ms=[round(r["recoloured"], 1) for r in runs], baseline_runs_ms=[],
                select_cb_ms=statistics.median(sel) if sel else None, ratio=None, label_ms=med("label"))


def measure(page, backend: str, n: int, timeout_s: float) -> dict:
    if backend == RASTER:
        return measure_raster(page, n, timeout_s)
    centres = blob_centres()
    lasso, base, counts = [], [], []
    for rep in range(REPS):
        wait_idle(page)
        cx, cy = centres[rep]
        pts = page.evaluate(JS_LASSO_PATH, [float(cx), float(cy), 3.5 * SIGMA, 32])
        page.evaluate(JS_ARM)
        page.mouse.move(*pts[0])
        page.mouse.down()
        for p in pts[1:]:
            page.mouse.move(*p, steps=2)
        page.mouse.up()
        page.wait_for_function("() => window.__bench.shown != null && window.__bench.raf2 != null", timeout=timeout_s * 1000)
        b = page.evaluate("() => window.__bench")
        counts.append(page.evaluate("() => Bokeh.documents[0].get_model_by_name('map-source').selected.indices.length"))
        lasso.append(dict(total=b["shown"] - b["up"], to_data=b["data"] - b["up"], data_to_shown=b["shown"] - b["data"],
                          raf2=b["raf2"] - b["up"], sel=(b["sel"] - b["up"]) if b["sel"] is not None else None))
    for rep in range(REPS):
        wait_idle(page)
        page.evaluate(JS_BASELINE, PALETTE[(rep + 3) % len(PALETTE)])
        page.wait_for_function("() => window.__bench.shown != null", timeout=timeout_s * 1000)
        b = page.evaluate("() => window.__bench")
        base.append(dict(painted=b["painted"] - b["t0"], shown=b["shown"] - b["t0"]))
    med = lambda rows, key: statistics.median(r[key] for r in rows)
    py = PY_TIMES.get((backend, n), [])
    res = dict(backend=backend, n=n, selected=int(statistics.median(counts)),
               lasso_ms=med(lasso, "total"), up_to_data_ms=med(lasso, "to_data"),
               data_to_shown_ms=med(lasso, "data_to_shown"),
               selection_paint_ms=statistics.median(sels) if (sels := [r["sel"] for r in lasso if r["sel"] is not None]) else None, lasso_raf2_ms=med(lasso, "raf2"),
               python_cb_ms=statistics.median(py) if py else None,
               baseline_ms=med(base, "shown"), baseline_paint_ms=med(base, "painted"),
               lasso_runs_ms=[round(r["total"], 1) for r in lasso], baseline_runs_ms=[round(r["shown"], 1) for r in base])
    res["ratio"] = res["lasso_ms"] / res["baseline_ms"] if res["baseline_ms"] > 0 else None
    return res


@contextlib.contextmanager
def fine_tuning(folder, log=print):
    """A fine-tune of `folder`'s project running in the background (as the Model tab starts it) until the block
    ends; entered once it trains (its first batch has been reported)."""
    from labeler.finetune import TrainSpec, start_training
    from labeler.project import Project
    with Project(folder) as project:
        run = start_training(project, TrainSpec(size=128, freeze_epochs=1, epochs=50))
        deadline = time.monotonic() + 600
        while run.running and not run.step and time.monotonic() < deadline:
            time.sleep(0.2)
        if not run.step:
            raise RuntimeError(f"the fine-tune did not start training: {run.error or run.stage}")
        log(f"  fine-tune running (batch {run.step} of {run.steps})")
        try:
            yield run
        finally:
            run.stop()
            run.join(600)
            log(f"  fine-tune stopped after {run.step} batches")


def fine_tune_folder(root, per_class: int = 30):
    """A project of `per_class` cifar10 photos per class from ../shared/data, labels imported (made once)."""
    from pathlib import Path

    from labeler.io import import_folders
    from labeler.project import Project
    source = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
    if not source.is_dir():
        raise SystemExit(f"{source} is absent: --during-fine-tune needs ../shared/data/cifar10")
    folder = Path(root) / f"cifar10-{per_class}"
    if not folder.exists():
        for label in sorted(p for p in source.iterdir() if p.is_dir()):
            (folder / label.name).mkdir(parents=True)
            for image in sorted(label.glob("*.jpg"))[:per_class]:
                shutil.copy(image, folder / label.name / image.name)
        with Project(folder) as project:
            import_folders(project, folder)
    return folder


def run(sizes: list[int], backends: list[str], timeout_s: float, log=print, fine_tune=None) -> list[dict]:
    import panel as pn
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("chromium not found on PATH")
    port = free_port()
    server = pn.serve({"bench": make_app()}, port=port, address="127.0.0.1", show=False, threaded=True,
                      websocket_origin=[f"127.0.0.1:{port}"], websocket_max_message_size=200 * 2**20)
    results = []
    try:
        for _ in range(100):  # wait for the server thread to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
            try:
                for backend in backends:
                    for n in sizes:
                        results.append(_one(browser, port, backend, n, timeout_s, log))
                        if fine_tune is not None:
                            with fine_tuning(fine_tune, log):
                                results.append({**_one(browser, port, backend, n, timeout_s, log),
                                                "condition": "during fine-tune"})
            finally:
                browser.close()
    finally:
        server.stop()
    return results


def _one(browser, port: int, backend: str, n: int, timeout_s: float, log) -> dict:
    """One page at `n` points: the lasso measured (or the error, so the other sizes still run)."""
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        t = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/bench?n={n}&backend={backend}", timeout=timeout_s * 1000)
        page.wait_for_function(
            "() => window.Bokeh && Bokeh.documents.length && Bokeh.index.query_one(v => v.model && v.model.name === 'map')",
            timeout=timeout_s * 1000)
        if not page.evaluate(JS_RASTER_SETUP if backend == RASTER else JS_SETUP):
            raise RuntimeError("plot view not found")
        res = measure(page, backend, n, timeout_s)
        res["page_s"] = time.perf_counter() - t
        log(f"  {backend:6s} n={n:>7d}: selection {res['selection_paint_ms'] or 0:.0f} ms, recoloured "
            f"{res['lasso_ms']:.0f} ms ({res['page_s']:.1f} s)")
        return res
    except Exception as err:  # report and go on with the other sizes
        log(f"  {backend:6s} n={n:>7d}: FAILED {type(err).__name__}: {err}")
        return dict(backend=backend, n=n, error=f"{type(err).__name__}: {err}")
    finally:
        page.close()


def markdown(results: list[dict]) -> str:
    """The app's own path first: after a lasso it shows the selection in the browser (Bokeh's selection
    glyphs) while Python only fills the review grid; recolouring from Python happens when a label is applied."""
    f = lambda v: "–" if v is None else f"{v:.0f}"
    ratio = lambda a, b: "–" if a is None or not b else f"{a / b:.1f}×"
    lines = ["| backend | N | while | selected | lasso→selection shown ms (the app's lasso) | vs redraw "
             "| Python-recoloured ms | vs redraw | vs idle | label→recoloured ms | Bokeh redraw alone ms | Python cb ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    idle = {}
    for r in results:
        condition = r.get("condition", "idle")
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['n']} | {condition} | failed: {r['error'][:80]} | | | | | | | | |")
            continue
        if condition == "idle":
            idle[r["backend"], r["n"]] = r["lasso_ms"]
        sel = r.get("selection_paint_ms")
        lines.append(f"| {r['backend']} | {r['n']} | {condition} | {r['selected']} | {f(sel)} "
                     f"| {ratio(sel, r['baseline_ms'])} | {f(r['lasso_ms'])} | {ratio(r['lasso_ms'], r['baseline_ms'])} "
                     f"| {ratio(r['lasso_ms'], idle.get((r['backend'], r['n'])))} | {f(r.get('label_ms'))} "
                     f"| {f(r['baseline_ms'])} "
                     f"| {f(r['python_cb_ms'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of points")
    ap.add_argument("--backend", choices=["canvas", "webgl", RASTER, "both", "all"], default="all",
                    help="the browser's scatter (canvas, webgl; both), the server-drawn map (image), or all three")
    ap.add_argument("--json", action="store_true", help="print results as JSON instead of a markdown table")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for any one step")
    ap.add_argument("--during-fine-tune", action="store_true",
                    help="measure each size again while a fine-tune runs (300 cifar10 images of ../shared/data)")
    ap.add_argument("--work", default="/tmp/labeler-bench", help="where the fine-tune's project is made (once)")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    backends = {"both": ["webgl", "canvas"], "all": [RASTER, "canvas", "webgl"]}.get(a.backend, [a.backend])
    log = lambda m: print(m, file=sys.stderr, flush=True)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # Panel's server thread prints "Launching server at ..."
        fine_tune = fine_tune_folder(a.work) if a.during_fine_tune else None
        results = run(sizes, backends, a.timeout, log=log, fine_tune=fine_tune)
    if a.json:
        print(json.dumps(results, indent=2), file=out)
    else:
        print(markdown(results))
        print("\nlasso→selection shown: pointer-up to the end of the first paint (Bokeh's selection highlight, drawn "
              "in the browser while Python fills the review grid): what the app's lasso costs; "
              f"median of {REPS} lassos, each round one blob (~10% of the points).\n"
              "Python-recoloured: pointer-up to the first paint after new colours for every point came from Python "
              "(what labeling the selection costs), + 1 frame.\n"
              "label→recoloured (the image map): from the selection's image arriving in the page (when Python "
              "starts the label) to the recoloured image shown; the other rows label at the lasso itself, so their "
              "Python-recoloured column is their label→recoloured.\n"
              "image: the map past its threshold (labeler/ui/raster.py): the server draws the points into the view's "
              "JPEG (no thumbnails here, as in the other rows).\n"
              "Bokeh redraw alone: the same colour-column replacement done in the page (no server, no Python).\n"
              "while: idle, or during a fine-tune (mobilenet_v2, 128 px, 300 cifar10 images, the Model tab's child "
              "process); vs idle: the Python-recoloured time against the idle row of the same size.\n"
              "Chromium runs with --disable-gpu, so WebGL is software-rendered here.")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
