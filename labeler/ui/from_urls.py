"""An empty project's first step in the app: "Add images from URLs", pasted one a line.

The URLs go to `labeler.download.download` (the same as `labeler download`: parallel, with timeouts, retries,
size limits, only files that decode as images, duplicates once, resumable) as a background `Job`; the page shows
how many have ended, then what happened: how many were saved, and for the others the reason (URLs and reasons
shown as text, never as HTML). As soon as one image is saved, `on_images()` is called: the opening goes on as for
any folder. Pressing Download again while it runs does nothing; pressing it after adds the new URLs (those already
decided are not fetched again).
"""
from __future__ import annotations

from collections.abc import Callable

import panel as pn

from labeler.jobs import Job

from ._panel import esc, poll_job

SHOWN_FAILURES = 5
PLACEHOLDER = "https://example.org/photo.jpg (one URL a line)"


class UrlBox:
    """The box, for the project folder `folder` (and its `workspace`)."""

    def __init__(self, folder, workspace, on_images: Callable[[], None]):
        self.folder, self.workspace, self.on_images = folder, workspace, on_images
        self.urls = pn.widgets.TextAreaInput(placeholder=PLACEHOLDER, rows=8, sizing_mode="stretch_width",
                                             name="Image URLs")
        self.button = pn.widgets.Button(name="Download", button_type="primary", width=140)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", visible=False,
                                               name="download-progress")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", name="download-status")
        self.panel = pn.Column(
            pn.pane.HTML(f"<b>{esc(folder)}</b> holds no images yet. <b>Add images from URLs</b>: paste image "
                         f"addresses below, one a line (or run <code>labeler download URLS FOLDER</code>)."),
            self.urls, self.button, self.progress, self.status, sizing_mode="stretch_width", max_width=700)
        self.job: Job | None = None
        self.button.on_click(lambda event: self.start())

    def start(self) -> None:
        """Download the URLs in the box (nothing while a download runs)."""
        if self.job is not None and self.job.running:
            return
        from labeler.download import UrlRow
        lines = [line.strip() for line in (self.urls.value or "").splitlines()]
        rows = [UrlRow(line, f"line {number}") for number, line in enumerate(lines, start=1)
                if line and not line.startswith("#")]
        if not rows:
            self.status.object = "Paste at least one image URL (https://…), one a line."
            return
        self.button.disabled = True
        self.progress.visible, self.progress.value = True, 0
        self.status.object = f"Downloading {len(rows):,} URLs…"
        self.job = Job(lambda job: self._download(job, rows), name="labeler-download").start()
        poll_job(self.job, on_progress=self._on_progress, on_done=self._on_done)

    def _download(self, job: Job, rows):
        from labeler.download import download
        ended = []

        def progress(outcome):
            ended.append(outcome)
            job.report("Downloading", len(ended), len(rows))
        return download(rows, self.folder, workspace=self.workspace, progress=progress,
                        stop=lambda: job.stop_requested)

    def _on_progress(self, job: Job) -> None:
        if job.total:
            self.progress.value = int(100 * job.done / job.total)
            self.status.object = f"Downloading: {job.done:,} of {job.total:,} URLs ended ({job.elapsed:.0f} s)"

    def _on_done(self, job: Job) -> None:
        from labeler.download import SAVED
        self.button.disabled = False
        self.progress.visible = False
        if job.error:
            self.status.object = f"<b>The download stopped</b>: {esc(job.error)}"
            return
        report = job.result
        saved = [outcome for outcome in report.outcomes if outcome.status == SAVED]
        others = [outcome for outcome in report.outcomes if outcome.status != SAVED]
        said = [f"{len(saved):,} of {len(report.outcomes):,} URLs gave an image."]
        for outcome in others[:SHOWN_FAILURES]:
            said.append(f"{esc(outcome.url[:200])}: {esc(outcome.status)}, {esc(outcome.reason or '')}")
        if len(others) > SHOWN_FAILURES:
            said.append(f"and {len(others) - SHOWN_FAILURES:,} more not saved.")
        self.status.object = "<br>".join(said)
        if saved:
            self.on_images()
