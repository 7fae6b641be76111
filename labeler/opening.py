"""Opening a folder in the app: embed and make thumbnails in the background, with a progress bar.

A project whose features and thumbnails are cached opens at once. Otherwise the work runs
in a thread while the page shows progress; the app is built when it is done. One lock per
workspace (shared by all sessions of this process) keeps two tabs from embedding the same
folder twice; it holds no user state.
"""
from __future__ import annotations

import logging
import threading
import time

import panel as pn

from engine.embedding import embed, rows_to_compute
from engine.features import FeatureCache

logger = logging.getLogger(__name__)
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

    def project(self):
        return self._project

    def needs_work(self) -> bool:
        cache = FeatureCache(self._project.workspace.features_dir(self.backbone, self.size),
                             backbone=self.backbone, size=self.size)
        items = self._project.items          # the Project scanned the folder when it opened
        return bool(rows_to_compute(items, cache)) or not self.thumbs.done_mask().all() and any(
            not item.missing for item in items)

    def on_ready(self, callback) -> None:
        if not self.needs_work():
            callback(self._project, self.thumbs)
            return
        threading.Thread(target=self._work, daemon=True, name="labeler-opening").start()
        started = time.time()

        def poll():
            state = self._state
            if state["error"]:
                self.text.object = f"<b>Could not open the folder</b>: {state['error']}"
                periodic.stop()
            elif state["finished"]:
                periodic.stop()
                callback(self._project, self.thumbs)
            else:
                total = max(1, state["total"])
                self.progress.value = int(100 * state["done"] / total)
                self.text.object = (f"{state['stage']}: {state['done']:,} of {state['total']:,} images "
                                    f"({time.time() - started:.0f} s)")
        periodic = pn.state.add_periodic_callback(poll, period=400)

    def _work(self) -> None:
        from engine.errors import ENGINE_ERRORS
        from labeler.errors import LabelerError

        def progress(stage):
            def report(done, total):
                self._state.update(stage=stage, done=done, total=total)
            return report
        try:
            with _workspace_lock(self._project.workspace.root):
                embed(self._project.workspace, backbone=self.backbone, size=self.size,
                      progress=progress(f"Computing features ({self.backbone})"))
                self.thumbs.build(progress=progress("Making thumbnails"))
            self._project.refresh_items()
            self._state["finished"] = True
        except (LabelerError, *ENGINE_ERRORS) as err:
            self._state["error"] = str(err)


def open_project(folder, **kwargs) -> Opening:
    return Opening(folder, **kwargs)
