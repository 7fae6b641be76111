"""Pages that go away mid-conversation: one line in the server log instead of a library's traceback.

A reload or a closed tab closes the page's websocket while the server may still be busy with what the page
sent last. Bokeh then handles those last messages on a connection that no longer has a session (an
`AssertionError` in `ServerConnection.session`, logged with its traceback by
`bokeh.server.protocol_handler`, and again by tornado when the close is handled twice), and Panel's and
tornado's writers to that socket end in `WebSocketClosedError` ("Task exception was never retrieved" from
asyncio). Nothing of the app failed: the page is gone, and what it sent after its last acknowledged action
goes with it (the page never showed it as done). `install()` turns each such record into one line saying so;
every other record, and every other traceback, is left as it is.
"""
from __future__ import annotations

import logging

GONE = "a page went away (reload or closed tab) while the server was still answering it; its last messages " \
       "were dropped"
LOGGERS = ("bokeh.server.protocol_handler", "tornado.application", "asyncio")
_CLOSED = ("WebSocketClosedError", "StreamClosedError")


def _gone_page(record: logging.LogRecord) -> bool:
    """Whether `record` carries one of the exceptions of a page whose websocket has closed."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return False
    if type(error).__name__ in _CLOSED:
        return True
    if isinstance(error, AssertionError):
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        code = frame.tb_frame.f_code if frame is not None else None
        return bool(code and code.co_name == "session" and code.co_filename.endswith("bokeh/server/connection.py"))
    return False


class GonePageFilter(logging.Filter):
    """Rewrites the records of `_gone_page` as one warning line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _gone_page(record):
            record.msg, record.args = GONE, ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Add the filter to the loggers that report these (once; safe to call again)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, GonePageFilter) for f in logger.filters):
            logger.addFilter(GonePageFilter())
