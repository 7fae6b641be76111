"""A page gone mid-answer is one line in the server log (labeler/ui/_disconnects.py); other errors keep their
tracebacks. The exceptions are raised by the real Bokeh and tornado code that raises them in a served app."""
import io
import logging

import pytest
from bokeh.server.connection import ServerConnection
from tornado.websocket import WebSocketClosedError

from labeler.ui._disconnects import GONE, GonePageFilter, install


def _log(name: str, error: BaseException, message: str = "error handling message") -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"test-disconnects.{name}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.filters[:] = [GonePageFilter()]
    try:
        raise error
    except BaseException:
        logger.exception(message)
    return out.getvalue()


def _detached_session_error() -> AssertionError:
    """What Bokeh raises for a message handled after the page's connection lost its session."""
    connection = object.__new__(ServerConnection)
    connection._session = None
    try:
        connection.session
    except AssertionError as err:
        return err
    raise AssertionError("Bokeh no longer asserts on a detached session: revisit _disconnects")


@pytest.mark.parametrize("error", [_detached_session_error(), WebSocketClosedError()],
                         ids=["detached session", "closed websocket"])
def test_a_gone_page_is_one_warning_line(error):
    said = _log("gone", error)
    assert said == f"WARNING test-disconnects.gone: {GONE}\n"


def test_any_other_error_keeps_its_traceback():
    said = _log("other", AssertionError("a real bug"))
    assert said.startswith("ERROR test-disconnects.other: error handling message") and "Traceback" in said
    assert "a real bug" in said


def test_install_adds_the_filter_once_to_the_loggers_that_report_gone_pages():
    install()
    install()
    for name in ("bokeh.server.protocol_handler", "tornado.application", "asyncio"):
        assert sum(isinstance(f, GonePageFilter) for f in logging.getLogger(name).filters) == 1
