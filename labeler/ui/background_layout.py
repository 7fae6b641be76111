"""The map's positions for a view that takes seconds (UMAP), computed off the server's main thread.

A UMAP of a layer takes seconds (DESIGN.md: ~5 s at 20k rows), and numba compiles it on its first use in
each process (10-30 s more). Computed on the server's main thread, as every other action is, it stopped the
server from answering anything meanwhile, on every page: a label clicked then was acknowledged only after
it (`bench/map_wait.py`). Here it runs in a thread (numba's code lets the main thread run: under a second's
gap at 8k rows), while the page keeps the map it shows and keeps answering; the map redraws when the
positions are ready, if they are still the ones wanted. Pressing on meanwhile asks for the newest layer and
view only (one computation at a time); what was computed stays cached for when the person comes back.
"""
from __future__ import annotations

from collections.abc import Callable

from labeler.jobs import Job

from ._panel import poll_job

SLOW_METHODS = frozenset({"umap"})     # projections of seconds; PCA, LDA and the Predicted view are drawn at once
POLL_MS = 250


class BackgroundLayout:
    """Computes the session's current layer and view in the background when that takes a while.

    `on_ready(reset_view)` is called (on the server's tick, through `run`) once the current layer and view
    can be drawn at once; `on_failed(message)` when their computation failed. `poll` watches a started job
    (`labeler.ui._panel.poll_job`; tests pass their own).
    """

    def __init__(self, session, run: Callable, on_ready: Callable[[bool], None], on_failed: Callable[[str], None],
                 poll: Callable = poll_job):
        self.session, self._run, self._on_ready, self._on_failed, self._poll = session, run, on_ready, on_failed, poll
        self._waiting = False      # a job started whose end has not been handled yet
        self._reset = False        # a redraw asked meanwhile wanted the view reset

    def needed(self) -> bool:
        """The current layer and view take a while and are not computed yet."""
        session = self.session
        return session.view.method in SLOW_METHODS and not session.is_ready()

    @property
    def computing(self) -> bool:
        """A computation runs, or has ended and waits for the server's tick to be handled."""
        return self._waiting

    def request(self, reset_view: bool = False) -> None:
        """Compute the current layer and view (unless a computation runs: its end looks at what is current)."""
        self._reset = self._reset or reset_view
        if not self.computing:
            self._start()

    def _start(self) -> None:
        session = self.session
        work = session.coords_work(session.layer, session.view)      # reads rows and labels here, in this thread
        self._waiting = True
        job = Job(lambda job: work(), name="labeler-layout").start()
        self._poll(job, on_done=lambda job: self._run(self._done, job), period_ms=POLL_MS)

    def _done(self, job: Job) -> None:
        self._waiting = False
        if job.error is not None:
            self._reset = False
            self._on_failed(job.error)
        elif self.needed():          # the person went on to another slow view, or the rows changed, meanwhile
            self._start()
        else:
            reset, self._reset = self._reset, False
            self._on_ready(reset)
