"""Opening a folder in the app: make thumbnails and embed in the background, with a progress bar.

A project whose features and thumbnails are cached opens at once. Otherwise the work runs
in a thread while the page shows progress. Thumbnails come first (they are ~10x quicker than
features); the map opens as soon as the first EARLY_ROWS images have features (the engine
makes computed rows visible every few seconds), and grows as the rest arrive: `on_more`
callbacks hear about it. One lock per workspace (shared by all sessions of this process)
keeps two tabs from embedding the same folder twice; it holds no user state.
"""
from __future__ import annotations

import logging
import threading
import time

import panel as pn

from engine.embedding import embed, rows_to_compute
from engine.features import FeatureCache

logger = logging.getLogger(__name__)
EARLY_ROWS = 1000        # images with features before the map opens while the rest are computed
GROWTH_TO_REDRAW = 0.1   # share of the images that must arrive before an open map is redrawn
_WORKSPACE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _workspace_lock(root) -> threading.Lock:
    with _LOCKS_GUARD:
        return _WORKSPACE_LOCKS.setdefault(str(root), threading.Lock())


class Opening:
    """The state of opening one project; `on_ready(callback)` calls back with (project, thumbs)."""

    def __init__(self, folder, *, workspace=None, backbone="mobilenet_v2", size=160):
        from engine.demo import demo_folder
        from labeler.project import Project
        from labeler.thumbs import ThumbCache
        self.backbone, self.size = backbone, size
        self._project = Project(folder if folder else demo_folder(), workspace)
        self.thumbs = ThumbCache(self._project.workspace)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", name="opening-progress")
        self.text = pn.pane.HTML(f"Opening {self._project.folder}…")
        self.panel = pn.Column(self.text, self.progress, sizing_mode="stretch_width", max_width=700)
        self._state = {"stage": "starting", "done": 0, "total": 0, "error": None, "finished": False}
        self._listeners: list = []

    def project(self):
        return self._project

    def needs_work(self) -> bool:
        cache = FeatureCache(self._project.workspace.features_dir(self.backbone, self.size),
                             backbone=self.backbone, size=self.size)
        items = self._project.items          # the Project scanned the folder when it opened
        return bool(rows_to_compute(items, cache)) or not self.thumbs.done_mask().all() and any(
            not item.missing for item in items)

    def on_ready(self, callback) -> None:
        """Call `callback(project, thumbs)` once the map can be drawn (at once when everything is cached)."""
        if not self.needs_work():
            callback(self._project, self.thumbs)
            return
        threading.Thread(target=self._work, daemon=True, name="labeler-opening").start()
        started = time.time()
        shown = {"built": False, "rows": 0}

        def poll():
            state = self._state
            if state["error"]:
                self._tell_error(state["error"], shown["built"])
                periodic.stop()
                return
            rows = self._rows_with_features()
            early = state["stage"].startswith("Computing") and rows >= min(EARLY_ROWS, len(self._project.items))
            if not shown["built"] and (state["finished"] or early):
                shown.update(built=True, rows=rows)
                callback(self._project, self.thumbs)
            elif shown["built"] and (state["finished"] or rows - shown["rows"] >= GROWTH_TO_REDRAW * len(self._project.items)):
                shown["rows"] = rows
                for listener in self._listeners:
                    listener(rows, len(self._project.items), state["finished"], None)
            if state["finished"]:
                periodic.stop()
            elif not shown["built"]:
                total = max(1, state["total"])
                self.progress.value = int(100 * state["done"] / total)
                self.text.object = (f"{state['stage']}: {state['done']:,} of {state['total']:,} images "
                                    f"({time.time() - started:.0f} s)")
        periodic = pn.state.add_periodic_callback(poll, period=400)

    def on_more(self, listener) -> None:
        """`listener(rows_with_features, n_items, finished, error)` as features arrive after the map opened."""
        self._listeners.append(listener)

    def _rows_with_features(self) -> int:
        cache = FeatureCache(self._project.workspace.features_dir(self.backbone, self.size),
                             backbone=self.backbone, size=self.size)
        return int(cache.done_mask().sum())

    def _tell_error(self, error: str, built: bool) -> None:
        self.text.object = f"<b>Could not open the folder</b>: {error}"
        if built:
            for listener in self._listeners:
                listener(self._rows_with_features(), len(self._project.items), True, error)

    def _work(self) -> None:
        from labeler.errors import USER_ERRORS

        def progress(stage):
            def report(done, total):
                self._state.update(stage=stage, done=done, total=total)
            return report
        try:
            with _workspace_lock(self._project.workspace.root):
                self.thumbs.build(progress=progress("Making thumbnails"))
                embed(self._project.workspace, backbone=self.backbone, size=self.size,
                      progress=progress(f"Computing features ({self.backbone})"))
            self._project.refresh_items()
            self._state["finished"] = True
        except USER_ERRORS as err:
            self._state["error"] = str(err)


def open_project(folder, **kwargs) -> Opening:
    return Opening(folder, **kwargs)
