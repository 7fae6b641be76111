"""`labeler serve`: the app in a Bokeh/Panel server on this machine only, unless told otherwise."""
from __future__ import annotations

import logging

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE

logger = logging.getLogger(__name__)


def serve(folder=None, *, port: int = 5006, address: str = "127.0.0.1", workspace=None, show: bool = False,
          backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE, backend: str = "webgl") -> None:
    """Serve the app; every browser tab gets its own LabelApp (its own selection and view)."""
    import panel as pn

    from .app import LabelApp

    def app():
        return LabelApp(folder, workspace=workspace, backbone=backbone, size=size, backend=backend)

    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    logger.info("serving %s on http://%s:%d", folder or "the demo", address, port)
    pn.serve({"/": app}, port=port, address=address, show=show, websocket_origin=origins, title="labeler",
             threaded=False)
