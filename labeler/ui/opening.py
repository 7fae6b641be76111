"""Opening a folder in the app: the project prepares its caches in the background, with a progress bar.

A project whose thumbnails and features are cached opens at once; one without images offers to download some
(`from_urls`). Otherwise `Project.prepare`
(thumbnails, then features) runs as a background `Job` while the page shows its progress; the
map opens as soon as the first EARLY_ROWS images have features (the engine makes computed rows
visible every few seconds), and grows as the rest arrive: `on_more` callbacks hear about it.
"""
from __future__ import annotations

import logging

import panel as pn

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from labeler.errors import USER_ERRORS
from labeler.jobs import Job

from ._panel import esc, poll_job

logger = logging.getLogger(__name__)
EARLY_ROWS = 1000        # images with features before the map opens while the rest are computed
GROWTH_TO_REDRAW = 0.1   # share of the images that must arrive before an open map is redrawn


class Opening:
    """The state of opening one project; `on_ready(callback)` calls back with the project."""

    def __init__(self, folder, *, workspace=None, backbone=DEFAULT_BACKBONE, size=DEFAULT_SIZE, actor=None):
        from engine.demo import demo_folder
        from labeler.project import Project
        self.project = Project(folder if folder else demo_folder(), workspace, backbone=backbone, size=size,
                               actor=actor)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", name="opening-progress")
        self.text = pn.pane.HTML(f"Opening {esc(self.project.folder)}…")
        self.panel = pn.Column(self.text, self.progress, sizing_mode="stretch_width", max_width=700)
        self._listeners: list = []
        self._ready = None
        self.urls = None             # the box that adds images from URLs, when the folder holds none
        self._shown = {"built": False, "rows": 0}
        self.computing = False       # features are being computed after the map opened
        self.job = Job(lambda job: self.project.prepare(job.report), name="labeler-opening")

    def on_ready(self, callback) -> None:
        """Call `callback(project)` once the map can be drawn (at once when everything is cached). A folder without
        images first offers to add some from URLs (`from_urls.UrlBox`), and goes on once one is saved."""
        self._ready = callback
        if not self.project.items:
            from .from_urls import UrlBox
            self.urls = UrlBox(self.project.folder, self.project.workspace.root, self._on_downloaded)
            self.panel.objects = [self.urls.panel]
            return
        if not self.project.needs_preparing():
            self._build(self._rows_with_features())
            return
        self.job.start()
        self.computing = True
        poll_job(self.job, on_progress=self._on_progress, on_done=self._on_done)

    def _on_downloaded(self) -> None:
        self.project.refresh_items(rescan=True)
        self.panel.objects = [self.text, self.progress, self.urls.status]
        self.on_ready(self._ready)

    def on_more(self, listener) -> None:
        """`listener(rows_with_features, n_items, finished, error)` as features arrive after the map opened."""
        self._listeners.append(listener)

    def _rows_with_features(self) -> int:
        return int(self.project.features().done_mask().sum())

    def _on_progress(self, job: Job) -> None:
        rows, n_items = self._rows_with_features(), len(self.project.items)
        if not self._shown["built"]:
            if job.stage.startswith("Computing") and rows >= min(EARLY_ROWS, n_items):
                self._build(rows)
                return
            self.progress.value = int(100 * job.done / max(1, job.total))
            self.text.object = (f"{esc(job.stage)}: {job.done:,} of {job.total:,} images ({job.elapsed:.0f} s)")
        elif rows - self._shown["rows"] >= GROWTH_TO_REDRAW * n_items:
            self._shown["rows"] = rows
            self._tell(rows, finished=False, error=None)

    def _on_done(self, job: Job) -> None:
        self.computing = False
        if job.error:
            self.text.object = f"<b>Could not open the folder</b>: {esc(job.error)}"
            if self._shown["built"]:
                self._tell(self._rows_with_features(), finished=True, error=job.error)
            return
        if not self._shown["built"]:
            self._build(self._rows_with_features())
        else:
            self._tell(self._rows_with_features(), finished=True, error=None)

    def _build(self, rows: int) -> None:
        self._shown.update(built=True, rows=rows)
        try:
            self._ready(self.project)
        except USER_ERRORS as err:     # e.g. a feature cache made by another version: say so on the page
            self.text.object = f"<b>Could not open the folder</b>: {esc(err)}"

    def _tell(self, rows: int, finished: bool, error: str | None) -> None:
        for listener in self._listeners:
            listener(rows, len(self.project.items), finished, error)


SHOWN_LEFT_OUT = 3


def left_out(project) -> str:
    """What of the folder is not on the map and why, in a sentence or two ("" when everything is): files that
    could not be read (the Clean tab's odd files list them) and entries that cannot be images at all."""
    missing = {item.id for item in project.items if item.missing}
    failures = {i: why for i, why in project.features().failures.items() if i < len(project.items) and i not in missing}
    said = []

    def some(pairs) -> str:
        shown = "; ".join(f"{name} ({why})" for name, why in pairs[:SHOWN_LEFT_OUT])
        return shown + (f"; and {len(pairs) - SHOWN_LEFT_OUT:,} more" if len(pairs) > SHOWN_LEFT_OUT else "")
    if failures:
        pairs = [(project.items[i].path, why) for i, why in sorted(failures.items())]
        said.append(f"{len(pairs):,} files could not be read and are not on the map: {some(pairs)} "
                    f"(Clean, Odd files lists them all).")
    if unusable := project.workspace.unusable:
        pairs = [(entry["path"], entry["reason"]) for entry in unusable]
        said.append(f"{len(pairs):,} entries named like images cannot be used: {some(pairs)} "
                    f"(labeler embed FOLDER lists them all).")
    return " ".join(said)


def progress_note(project, rows: int, total: int, computing: bool, error: str | None = None) -> tuple[str, str]:
    """The Label tab's message (text, kind) about its images: still arriving, stopped, or what was left out."""
    if error:
        return f"Computing features stopped: {error}", "warning"
    if computing:
        return (f"Still computing features: the map shows {rows:,} of {total:,} images so far and grows as the rest "
                f"arrive."), "info"
    return left_out(project), "warning"
