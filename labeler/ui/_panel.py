"""What the Panel views share: text that stays text, messages, the document lock, jobs, downloads, the server.

Text that comes from files or people (label names, file names, reasons, CSV cells) reaches the
page only escaped (`esc`) or through a widget that shows text as text. `Message` is the views'
status line: plain text in an alert box, never HTML or Markdown (Panel's `Alert` renders
Markdown, so a label such as `<img onerror=...>` would have run).

`guarded(show)` wraps every action a person can trigger: user errors become a message, and a
bug becomes a brief message too, with its traceback in the server log, so no button can leave
the page hanging or show a traceback.
"""
from __future__ import annotations

import contextlib
import functools
import html
import io
import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import panel as pn
import param
from panel.io.resources import COMPONENT_PATH
from panel.io.server import ComponentResourceHandler
from tornado.web import HTTPError

from labeler.errors import USER_ERRORS

logger = logging.getLogger(__name__)

KINDS = ("info", "success", "warning", "danger")
# packages whose components may serve the resource files they list at /components/ (none of labeler's do yet)
COMPONENT_PACKAGES = ("panel", "bokeh", "labeler")
# a notebook output has no height of its own: the app takes this much (the map, and the review grid
# under it with room for several rows of full-size tiles)
NOTEBOOK_HEIGHT = 1050
_MESSAGE_CSS = """
:host { display: block; }
.labeler-message { border-radius: 6px; padding: 8px 12px; font: 14px/1.4 system-ui, sans-serif;
                   border: 1px solid transparent; white-space: pre-wrap; overflow-wrap: anywhere; }
.labeler-message.info { background: #e7f1fb; border-color: #b9d6f3; color: #0c4a7e; }
.labeler-message.success { background: #e6f4ea; border-color: #b7dfc2; color: #1b5e20; }
.labeler-message.warning { background: #fff6db; border-color: #f5df9a; color: #6b4e00; }
.labeler-message.danger { background: #fde8e8; border-color: #f5b8b8; color: #8b1a1a; }
"""


def esc(value) -> str:
    """`value` as text inside HTML: every <, >, & and quote escaped."""
    return html.escape(str(value), quote=True)


def html_table(header: Sequence[str], rows: Iterable[Sequence], **attrs) -> str:
    """An HTML table whose every cell is escaped text."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    extra = "".join(f' {name}="{esc(value)}"' for name, value in attrs.items())
    return f"<table{extra}><tr>{head}</tr>{body}</table>"


class Message(pn.viewable.Viewer):
    """A status line: plain text in a coloured box, hidden while empty."""

    text = param.String(default="", doc="the message, shown as text (never as HTML)")
    kind = param.Selector(default="info", objects=list(KINDS), doc="info, success, warning or danger")

    def __init__(self, **params):
        super().__init__(**params)
        self._pane = pn.pane.HTML("", sizing_mode="stretch_width", visible=False, stylesheets=[_MESSAGE_CSS],
                                  margin=(5, 10))
        self.param.watch(self._render, ["text", "kind"])
        self._render()

    def show(self, text: str, kind: str = "info") -> None:
        self.param.update(text=text, kind=kind)

    def _render(self, *_) -> None:
        self._pane.object = (f'<div class="labeler-message {self.kind}" role="status">{esc(self.text)}</div>'
                             if self.text else "")
        self._pane.visible = bool(self.text)

    def __panel__(self):
        return self._pane


class NotebookAware:
    """A view that lays itself out for a notebook output when it is displayed there.

    A served page gives the view the whole window and its keys; a notebook output is as high as
    its content and belongs to Jupyter, so there the view takes a fixed height and listens to keys
    only while it has the focus. Subclasses say what changes in `_for_notebook`.
    """

    in_notebook = False
    _notebook_document = None

    def _repr_mimebundle_(self, include=None, exclude=None):
        self.in_notebook = True
        self._for_notebook()
        bundle = super()._repr_mimebundle_(include, exclude)
        documents = [model.document for model, _ in self.__panel__()._models.values() if model.document]
        self._notebook_document = documents[-1] if documents else None
        keep_stylesheets_local(self.__panel__())
        return bundle

    def _in_document(self):
        """A context in which this view's notebook document is the current one, where nothing else is: Panel
        leaves `state.curdoc` unset in a notebook's Bokeh callbacks, and models made then would miss the
        document's caches (its local stylesheets). A no-op in a served app, which always has one."""
        from panel.io.state import set_curdoc, state
        return set_curdoc(self._notebook_document if state.curdoc is None else None)

    def _for_notebook(self) -> None:
        raise NotImplementedError


def keep_stylesheets_local(viewable) -> None:
    """Widgets made after a notebook output was rendered get their stylesheets inline, not from a CDN.

    `pn.extension(inline=True)` inlines Panel's stylesheets in the first render only. Models made
    later (a new label's button, a message) take Panel's cached stylesheet objects, which point at
    cdn.holoviz.org: offline, 3 failed requests and unstyled widgets per change (seen in JupyterLab
    4.6 and Notebook 7.6 with Panel 1.9). Panel looks those objects up by URL in a cache per
    document; this puts an inline copy of each of Panel's own files under its URLs there, so every
    later model carries the CSS itself. It relies on a Panel internal (`state._stylesheets`); the
    notebook browser test counts requests that leave the machine, so a Panel release that changes it
    shows up there.
    """
    from bokeh.models import InlineStyleSheet
    from panel.io.state import state
    for model, _ in list(viewable._models.values()):
        if model.document is None:
            continue
        cache = state._stylesheets.setdefault(model.document, {})
        for urls, css in _panel_css().items():          # a model belongs to one document: one copy each
            sheet = InlineStyleSheet(css=css)
            cache.update(dict.fromkeys(urls, sheet))


@functools.lru_cache(maxsize=1)
def _panel_css() -> dict[tuple[str, ...], str]:
    """Every CSS file Panel ships, by each URL Panel may name it with: on its CDN or its server's static
    path (later rewritten to the CDN in a notebook), with and without the version suffix."""
    from panel.io.resources import CDN_DIST, DIST_DIR, JS_VERSION, LOCAL_DIST
    files = {}
    for path in DIST_DIR.rglob("*.css"):
        name = path.relative_to(DIST_DIR).as_posix()
        urls = (CDN_DIST + name, LOCAL_DIST + name)
        files[urls + tuple(f"{url}?v={JS_VERSION}" for url in urls)] = path.read_text(encoding="utf-8")
    return files


def guarded(show: Callable[[str, str], None], context: Callable = contextlib.nullcontext):
    """A runner for actions: `run(action, *args)` returns its result, or None after showing why it failed.

    The action runs inside `context()` (a view's `_in_document`).
    """
    def run(action, *args):
        try:
            with context():
                return action(*args)
        except USER_ERRORS as err:
            show(str(err), "warning")
        except Exception as err:  # a bug: the person gets a message, the log the traceback
            logger.exception("%s failed", getattr(action, "__name__", "an action"))
            show(f"Something went wrong ({type(err).__name__}: {err}); the server log has the details.", "danger")
        return None
    return run


def with_document_lock(action) -> None:
    """Run `action` on the server's next tick (holding the document lock), or now outside a server."""
    doc = pn.state.curdoc
    if doc is not None and getattr(doc, "session_context", None) is not None:
        doc.add_next_tick_callback(action)
    else:
        action()


def locked(action):
    """A widget callback that runs `action()` under the document lock.

    Panel hands a widget event to its callback outside the lock when other changes from the
    page are still being processed; Panel's own objects cope with that, but Bokeh models the
    app changes directly (plot sources, the review grid) must only change under the lock.
    """
    return lambda event=None: with_document_lock(action)


def poll_job(job, *, on_progress: Callable | None = None, on_done: Callable, period_ms: int = 400) -> None:
    """Watch a started `labeler.jobs.Job` on the server's tick: `on_progress(job)` while it runs,
    `on_done(job)` once when it has finished (with `job.error` or `job.result`)."""
    holder = {}

    def tick():
        if job.finished:
            holder["callback"].stop()
            on_done(job)
        elif on_progress is not None:
            on_progress(job)
    holder["callback"] = pn.state.add_periodic_callback(tick, period=period_ms)


def export_to_buffer(export, project, show: Callable[[str, str], None] | None = None,
                     empty: str = "") -> io.BytesIO:
    """The bytes `export(project, path)` writes, for a download button.

    With `show`, a download that cannot be made gives an empty file and the reason as a message,
    and one with no rows says `empty` (a download callback has no other way to tell the person).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.csv"
        try:
            report = export(project, out)
        except USER_ERRORS as err:
            if show is None:
                raise
            show(f"Nothing to download: {err}", "warning")
            return io.BytesIO(b"")
        rows = report if isinstance(report, int) else getattr(report, "rows", None)
        if show is not None and empty and rows == 0:
            show(empty, "warning")
        elif show is not None and (left_out := left_out_of_export(report)):
            # the label buttons count every labeled image; the file leaves these out: say why the two differ
            show(f"The file holds {rows} labeled image{'s' * (rows != 1)}; left out: {left_out}.", "info")
        return io.BytesIO(out.read_bytes())


def left_out_of_export(report) -> str:
    """The labeled items an export left out, in words ('' when none): excluded ones and missing files."""
    parts = []
    if excluded := getattr(report, "skipped_excluded", 0):
        parts.append(f"{excluded} excluded in the Clean tab")
    if missing := getattr(report, "skipped_missing", 0):
        parts.append(f"{missing} whose file{'s are' if missing != 1 else ' is'} missing")
    return ", ".join(parts)


def serve_pages(make_page: Callable, *, port: int | None = None, address: str = "127.0.0.1", show: bool = False,
                threaded: bool = False, websocket_origins: Sequence[str] = (), **login) -> str:
    """Serve `make_page()` (one per browser tab) at http://address:port/ and return that address; with
    `threaded`, from a thread of this process (a notebook's kernel) at once, otherwise until stopped.

    Only pages from this server (at `address`, localhost or 127.0.0.1) and from `websocket_origins` may open its
    websocket; `login` goes to Panel unchanged (`basic_auth`, `cookie_secret`, `oauth_*`: see `serve.Access`).
    """
    from ._disconnects import install
    install()                                 # a page gone mid-answer: one log line, not a library's traceback
    port = port or _free_port(address)
    url = f"http://{address}:{port}/"

    def page():
        try:
            return make_page()
        except USER_ERRORS as error:          # e.g. a folder that is not there: say so on the page
            return Message(text=str(error), kind="danger")

    # Bokeh names origins HOST:PORT, so an IPv6 literal or a wildcard address cannot be one
    own = [f"{host}:{port}" for host in dict.fromkeys((address, "localhost", "127.0.0.1"))
           if host and ":" not in host and host != "0.0.0.0"]
    pn.serve({"/": page}, port=port, address=address, show=show, title="labeler", threaded=threaded,
             websocket_origin=[*own, *websocket_origins], extra_patterns=[_COMPONENT_ROUTE], **login)
    if threaded:                              # the address is returned once it answers
        _wait_for_port(address, port)
    return url


class _PackageComponentResources(ComponentResourceHandler):
    """Panel's /components/ route for the modules of `COMPONENT_PACKAGES` only.

    Panel's handler imports whatever module the URL names before it checks that the file is one the
    component lists, and it asks for no login: any visitor could import any module on the server's
    path and run its import-time code (`/components/apps.label/...` built a whole app). Given first,
    this route answers 404 for every other module and hands the rest to Panel's handler.
    """

    def parse_url_path(self, path: str) -> str:
        module = path.split("/", 1)[0]
        if not (_MODULE_NAME.fullmatch(module) and module.split(".")[0] in COMPONENT_PACKAGES):
            raise HTTPError(404, "Module not found")
        return super().parse_url_path(path)


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_COMPONENT_ROUTE = (f"/{COMPONENT_PATH}(.*)", _PackageComponentResources, {})


def _wait_for_port(address: str, port: int, timeout: float = 30.0) -> None:
    import socket
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the server on {address}:{port} did not start in {timeout:.0f} s")


def _free_port(address: str) -> int:
    import socket
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
