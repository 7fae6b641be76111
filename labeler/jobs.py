"""Work in a background thread, read by polling: opening a folder, finding issues, training.

A `Job` runs `work(job)` in a daemon thread; the work reports progress with `job.report(stage,
done, total)` and may look at `job.stop_requested` to end early. Whoever shows it (a widget
polling on the server's tick, a test calling `run()` in place) reads `stage`, `done`, `total`,
`finished`, `result` and `error`. No widget is involved here, so the same job runs in a served
app, a notebook or a script.

Errors end the job, never the process: a user error (`USER_ERRORS`) becomes `error`, its message;
anything else is a bug, logged with its traceback, and `error` says so briefly. Either way
`finished` becomes True, so nothing that polls a job can spin forever.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import USER_ERRORS

logger = logging.getLogger(__name__)


class Job:
    """One piece of background work and what is known of it so far."""

    def __init__(self, work: Callable[[Job], Any], name: str = "labeler-job"):
        self.work, self.name = work, name
        self.stage, self.done, self.total = "starting", 0, 0
        self.result: Any = None
        self.error: str | None = None
        self.finished = False
        self.stop_requested = False
        self.started: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Job:
        """Run the work in a daemon thread; returns at once."""
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._thread.start()
        return self

    def run(self) -> Job:
        """Run the work here and now (scripts, tests, `wait=True`)."""
        self.started = time.monotonic()
        self._run()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a started job; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished

    @property
    def running(self) -> bool:
        return self.started is not None and not self.finished

    def report(self, stage: str, done: int, total: int) -> None:
        """Called by the work: what it is doing and how far it got."""
        self.stage, self.done, self.total = stage, done, total

    def request_stop(self) -> None:
        """Ask the work to end early (it looks at `stop_requested` between steps)."""
        self.stop_requested = True

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def _run(self) -> None:
        try:
            self.result = self.work(self)
        except USER_ERRORS as err:
            self.error = str(err)
        except Exception as err:  # a bug must not leave a view spinning: log it whole, tell the person briefly
            logger.exception("background job %s failed", self.name)
            self.error = f"{type(err).__name__}: {err} (the server log has the details)"
        finally:
            self.finished = True
