"""Small helpers the Panel views share: user-facing errors, running on the document's tick, downloads."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import panel as pn

from .errors import USER_ERRORS  # noqa: F401  (the views catch these)


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


def export_to_buffer(export, project) -> io.BytesIO:
    """The bytes `export(project, path)` writes, for a download button."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.csv"
        export(project, out)
        return io.BytesIO(out.read_bytes())
