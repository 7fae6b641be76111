"""`labeler serve`: the app in a Bokeh/Panel server on this machine only, unless told otherwise."""
from __future__ import annotations

import logging

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE

logger = logging.getLogger(__name__)


def serve(folder=None, *, port: int = 5006, address: str = "127.0.0.1", workspace=None, show: bool = False,
          backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE, backend: str = "webgl",
          actor: str | None = None) -> None:
    """Serve the app; every browser tab gets its own LabelApp (its own selection and view)."""
    from ._panel import serve_pages
    from .app import LabelApp

    def app():
        return LabelApp(folder, workspace=workspace, backbone=backbone, size=size, backend=backend, actor=actor)

    logger.info("serving %s on http://%s:%d", folder or "the demo", address, port)
    serve_pages(app, port=port, address=address, show=show)


def serve_in_background(folder=None, *, port: int | None = None, address: str = "127.0.0.1", **app_args) -> str:
    """Serve the app from a thread of this process (a notebook's kernel) and return its address at once;
    every tab gets its own LabelApp(folder, **app_args)."""
    from ._panel import serve_pages
    from .app import LabelApp
    return serve_pages(lambda: LabelApp(folder, **app_args), port=port, address=address, threaded=True)
