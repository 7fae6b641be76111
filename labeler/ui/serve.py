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
    import panel as pn

    from .app import LabelApp

    def app():
        return LabelApp(folder, workspace=workspace, backbone=backbone, size=size, backend=backend, actor=actor)

    logger.info("serving %s on http://%s:%d", folder or "the demo", address, port)
    pn.serve({"/": app}, port=port, address=address, show=show, websocket_origin=_origins(address, port),
             title="labeler", threaded=False)


def serve_in_background(folder=None, *, port: int | None = None, address: str = "127.0.0.1", **app_args) -> str:
    """Serve the app from a thread of this process (a notebook's kernel) and return its address at once;
    every tab gets its own LabelApp(folder, **app_args)."""
    import panel as pn

    from .app import LabelApp
    port = port or _free_port(address)
    pn.serve({"/": lambda: LabelApp(folder, **app_args)}, port=port, address=address, show=False,
             websocket_origin=_origins(address, port), title="labeler", threaded=True)
    return f"http://{address}:{port}/"


def _origins(address: str, port: int) -> list[str]:
    return [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]


def _free_port(address: str) -> int:
    import socket
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
