"""Importing a labels CSV from the Label tab: the file a person picks in the browser, read as `labeler import`
reads it (`labeler.io.import_labels_csv`), as one undoable action.

The file comes from the person's machine, not from a path on the server, so nothing outside the project is
ever read. Its name is the browser's and is only ever shown as text. A file that cannot be imported changes
nothing and says why, naming the file; one that can says what it did, and which names it did not know.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import panel as pn

from labeler.errors import USER_ERRORS
from labeler.io import import_labels_csv

ACCEPT = ".csv,.tsv,.txt"
MAX_BYTES = 200 * 1024 * 1024    # a labels CSV of a million images is about 50 MB
SHOWN_UNKNOWN = 3


def upload_name(filename: str | None) -> str:
    """The browser's name for the file, as one safe path component ("labels.csv" where it gives none)."""
    name = Path(str(filename or "").replace("\\", "/")).name.strip().replace("\x00", "")
    return name if name not in ("", ".", "..") else "labels.csv"


def summary(report, name: str) -> str:
    """One paragraph on what an import did, for the status line."""
    said = (f"Imported {name}: {report.assigned:,} image{'s' if report.assigned != 1 else ''} labeled from "
            f"{report.rows:,} rows "
            f"({len(report.labels)} label{'s' if len(report.labels) != 1 else ''}).")
    if report.unknown:
        shown = ", ".join(repr(n) for n in report.unknown[:SHOWN_UNKNOWN])
        more = f" and {len(report.unknown) - SHOWN_UNKNOWN:,} more" if len(report.unknown) > SHOWN_UNKNOWN else ""
        said += f" {len(report.unknown):,} rows name files that are not images of this folder ({shown}{more})."
    if report.empty:
        said += f" {report.empty:,} rows have no label."
    if report.conflicts:
        said += f" {len(report.conflicts):,} images were given two different labels; the last one was kept."
    return said + (" Undo takes the import back." if report.event_id else " Nothing changed.")


class ImportLabels(pn.viewable.Viewer):
    """A file picker for a labels CSV (columns `image_name` and `tags`, as the exports write them).

    `run(action)` runs an action under the app's guard (its errors become messages), `show(text, kind)` shows a
    message and `after()` redraws the app after the labels changed.
    """

    def __init__(self, project, run: Callable, show: Callable[[str, str], None], after: Callable[[], None]):
        super().__init__()
        self.project, self._run, self._show, self._after = project, run, show, after
        self._input = pn.widgets.FileInput(accept=ACCEPT, multiple=False, sizing_mode="stretch_width")
        self._input.param.watch(self._on_file, "value")
        self._layout = pn.Column(pn.pane.HTML("Import labels CSV (<code>image_name,tags</code>):",
                                              margin=(5, 10, 0, 10)), self._input, sizing_mode="stretch_width")

    def _on_file(self, event) -> None:
        data, name = event.new, upload_name(self._input.filename)
        if data is None:
            return
        from ._panel import with_document_lock

        def act():
            self._run(self.import_bytes, data, name)
            self._input.clear()       # the same file picked again (after an undo) imports again
        with_document_lock(act)

    def import_bytes(self, data: bytes, name: str) -> None:
        """Import the bytes of a CSV called `name`; the message names the file, never a server path."""
        if len(data) > MAX_BYTES:
            self._show(f"{name} is {len(data) / 2**20:,.0f} MB: too big for a labels CSV "
                       f"(at most {MAX_BYTES // 2**20} MB); nothing changed.", "warning")
            return
        if not data.strip():
            self._show(f"{name} is empty: a labels CSV needs a header row (image_name,tags); nothing changed.",
                       "warning")
            return
        with tempfile.TemporaryDirectory(prefix="labeler-import-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                report = import_labels_csv(self.project, path, sep="\t" if name.lower().endswith(".tsv") else ",")
            except USER_ERRORS as err:   # the message names the temporary copy: name the person's file instead
                said = str(err).replace(str(path), name).replace(tmp, "").replace(" Check the path for typos.", "")
                self._show(f"{said} Nothing changed.", "warning")
                return
        self._show(summary(report, name), "success" if report.assigned else "info")
        self._after()

    def __panel__(self):
        return self._layout
