"""Progress of long work for people at a terminal or in a notebook: one bar per stage.

    with Project("photos") as project, stage_bars() as progress:
        project.prepare(progress)          # "Making thumbnails", then "Computing features (...)"

`progress(stage, done, total)` is the callback `Project.prepare`, `build_queues` and background
jobs take. Bars go to stderr (tqdm), which a terminal and Jupyter both redraw in place.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

StageProgress = Callable[[str, int, int], None]


@contextmanager
def stage_bars(*, leave: bool = False, file=None) -> Iterator[StageProgress]:
    """A progress callback that draws one bar per stage (the previous stage's bar closes when the next
    begins); every bar is closed on leaving, also on an error. `leave` keeps finished bars shown."""
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(desc=stage, unit="img", file=file or sys.stderr, disable=None, leave=leave)
        bar = bars[stage]
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()
