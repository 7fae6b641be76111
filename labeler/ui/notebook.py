"""`labeler.notebook_extension()`: Panel's notebook set-up, with its JavaScript from the Jupyter server.

`pn.extension(inline=True)` works offline by putting Bokeh's and Panel's JavaScript into the
set-up cell's output: about 6 MB (twice 3 MB, once per MIME type) saved with every notebook.
`pn.extension()` keeps notebooks small by loading it from a CDN, which fails offline. Panel
also installs a Jupyter server extension that serves the same files from the Jupyter server
itself (`<base url>panel-preview/static/...`). When the kernel runs under such a server, this
loads them from there: nothing leaves the machine and the saved output is a few kB of loader.
Anywhere else (VS Code, nbclient, a server without Panel's extension) it falls back to inline.

Panel's notebook loader names the files of its "server" resources relative to a page
(`"static/js/bokeh.min.js"`); the loader's text is rewritten to the server's absolute paths
while `pn.extension` publishes it. That relies on how Panel 1.x writes the loader; the Jupyter
browser tests count requests that leave the machine and the saved notebook's size, so a Panel
release that changes it shows up there.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import urllib.request
from pathlib import Path
from unittest import mock

logger = logging.getLogger(__name__)

_RELATIVE_STATIC = re.compile(r"""(["'])static/""")


def notebook_extension(*extensions: str, inline: bool | None = None, **params) -> str:
    """Set up Panel in a notebook (as `pn.extension(*extensions, **params)`) with its JavaScript local;
    returns where it came from: "jupyter server" or "inline".

    inline: None (default) loads from the Jupyter server this kernel runs under when there is one
    with Panel's server extension, else inline; True always inline (offline anywhere, ~6 MB saved).
    """
    import panel as pn
    base = None if inline else jupyter_static_base()
    if base is None:
        pn.extension(*extensions, inline=True, **params)
        return "inline"
    with _loader_from(base):
        pn.extension(*extensions, inline=True, **params)
    return "jupyter server"


def jupyter_static_base() -> str | None:
    """`<base url>panel-preview/` of the Jupyter server that started this kernel, if it serves Panel's
    static files; None otherwise (no such server, or Panel's server extension is not enabled there)."""
    server = _parent_server()
    if server is None:
        return None
    base = "/" + server.get("base_url", "/").strip("/")
    probe = f"{server['url'].rstrip('/')}/panel-preview/static/js/bokeh.min.js"     # `url` ends in the base url
    try:
        with urllib.request.urlopen(urllib.request.Request(probe, method="HEAD"), timeout=3) as answer:
            ok = answer.status == 200
    except OSError as error:
        logger.info("Panel's files are not served by the Jupyter server (%s): inline", error)
        return None
    return f"{base.rstrip('/')}/panel-preview/" if ok else None


def _parent_server() -> dict | None:
    """The running Jupyter server (its jpserver-<pid>.json) whose process started this kernel."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    parents = {str(os.getppid()), os.environ.get("JPY_PARENT_PID", "")}
    for path in Path(jupyter_runtime_dir()).glob("jpserver-*.json"):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(path.read_text())
            if str(info.get("pid")) in parents and info.get("url"):
                return info
    return None


@contextlib.contextmanager
def _loader_from(base: str):
    """While Panel publishes its notebook loader: "server" resources, their paths made absolute under `base`."""
    import bokeh.resources
    import IPython.display
    import panel.io.notebook

    publish = IPython.display.publish_display_data

    def absolute(value):
        return _RELATIVE_STATIC.sub(lambda m: f"{m.group(1)}{base}static/", value) if isinstance(value, str) else value

    def publish_absolute(data, *args, **kwargs):
        return publish({mime: absolute(value) for mime, value in data.items()}, *args, **kwargs)

    server = bokeh.resources.Resources(mode="server", root_url=base)
    with mock.patch.object(panel.io.notebook, "INLINE", server), \
            mock.patch.object(IPython.display, "publish_display_data", publish_absolute):
        yield
