"""The labeler app: images scattered by a CNN layer; lasso, review, label, find similar, separate, train.

`LabelApp(folder)` is a Panel Viewer: served by `apps/label.py` / `labeler serve`, or shown
inline in Jupyter. Every instance holds its own session state (one per browser tab). Three
tabs: "Label" (the map), "Clean" (`clean_view`: likely label errors, top losses,
duplicates and odd files, computed the first time the tab opens) and "Model" (`model_view`:
fine-tune, watch it train, top losses with heatmaps, export).

This module is wiring: what to do lives in `labeler.session.Session` (plain, testable code),
how the map draws in `map`, the review grid in `review`, keys in `keys`. Every action a person
can trigger runs through one guard (`_panel.guarded`), so a wrong-time click shows a message.
"""
from __future__ import annotations

import logging

import panel as pn
import param

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from engine.class_layout import CLASS_LAYOUT_EXTENT
from labeler.errors import LabelerError
from labeler.session import Session

from ._panel import (NOTEBOOK_HEIGHT, Message, NotebookAware, esc, export_to_buffer, guarded, locked, poll_job,
                     serve_pages, with_document_lock)
from .background_layout import BackgroundLayout
from .clean_view import CleanView
from .first_model_actions import FirstModelActions
from .model_view import ModelView
from .heatmap_view import PREVIEW_TEXT_PX, LabelHeatmaps
from .importing import ImportLabels
from .opening import progress_note
from .keys import DIGITS, Shortcuts
from .label_keys import KEYS, LabelKeyActions
from .map import BACKENDS, MapView, unit_square
from .raster import RASTER_FROM
from .review import COLUMNS, ReviewGrid

logger = logging.getLogger(__name__)
NEW_LABEL_PLACEHOLDER = "new label, then Enter"
SIMILAR_K = 50
REVIEW_MIN_PX = 330          # the review grid's share of the page: four rows of tiles at least
PREVIEW_PX, NOTEBOOK_PREVIEW_PX = 256, 176          # the hovered image, beside the map
NOTEBOOK_GRID_COLUMNS = 8       # review tiles per row in a notebook, whose output is narrower than a window
# a long label name ends in an ellipsis instead of spilling out of its button
ONE_LINE_BUTTON = ".bk-btn { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }"
REPORT_CSS = "table { table-layout: fixed; width: 100%; font-size: 12px; } td:first-child { overflow-wrap: anywhere; }"


class LabelApp(NotebookAware, LabelKeyActions, FirstModelActions, pn.viewable.Viewer):
    """Label a folder of images in the browser or a notebook.

    In a notebook, `app.open_in_tab()` serves the same project in a browser tab of its own.
    """

    status = param.String(default="", doc="the last message shown to the user")
    vary_opacity = param.Boolean(default=False, doc="fade what the model already predicts confidently")
    heatmaps = param.Boolean(default=False, doc="show the current model's heatmaps in the preview and the review grid")

    def __init__(self, folder=None, *, workspace=None, backbone=DEFAULT_BACKBONE, size=DEFAULT_SIZE,
                 backend="webgl", actor: str | None = None, raster_from: int = RASTER_FROM, **params):
        super().__init__(**params)
        if backend not in BACKENDS:
            raise LabelerError(f"Unknown plot backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
        self._backend, self._raster_from = backend, raster_from
        self._arguments = dict(folder=folder, workspace=workspace, backbone=backbone, size=size, backend=backend,
                               actor=actor, raster_from=raster_from)
        from .opening import Opening
        self._opening = Opening(folder, workspace=workspace, backbone=backbone, size=size, actor=actor)
        self._layout = pn.Column(self._opening.panel, sizing_mode="stretch_both", min_height=700)
        self._message = Message()
        self._run = guarded(self._show, self._in_document)
        self._poll = poll_job           # watches background work on the server's tick (tests pass their own)
        self._opening.on_ready(lambda project: self._in_document_build(project))

    # -- layout ----------------------------------------------------------------------------
    def _in_document_build(self, project) -> None:
        with self._in_document():
            self._build(project)

    def _build(self, project) -> None:
        self.session = Session(project)
        self._positions = BackgroundLayout(self.session, self._run, on_ready=self._layout_ready,
                                           on_failed=self._layout_failed, poll=lambda *a, **k: self._poll(*a, **k))
        self._drawn = self._computing_note = self._draw_after_review = None   # (layer, view) shown; note; see below
        self.map = MapView(project.thumbs, self._backend, on_select=lambda ids: self._run(self._set_selection, ids, True),
                           on_hover=lambda item_id: self._run(self._on_hover, item_id), raster_from=self._raster_from)
        self.grid = ReviewGrid(project.thumbs, on_change=lambda: self._run(self._update_review_text),
                               colours=self.session.label_colours,
                               columns=NOTEBOOK_GRID_COLUMNS if self.in_notebook else COLUMNS)
        self.clean = CleanView(project)
        self.model = ModelView(project)
        self.model.on_model.append(lambda: self._run(self._on_new_model))
        if self.in_notebook:
            self.clean.use_focus_keys()
        self._widgets()
        self._heat = LabelHeatmaps(project, self.grid, self._preview, self._run, self._show)
        self._show_checked()                    # after a reload too: whose predictions the map shows
        self._redraw(reset_view=True)           # before the page gets the plot: it arrives drawn, in one piece
        self._layout[:] = [self._tabs()]
        self._opening.on_more(lambda *state: self._run(self._on_more_rows, *state))
        self._show(*progress_note(project, len(self.session.rows), self.session.n_items, self._opening.computing))

    def _widgets(self) -> None:
        button = dict(sizing_mode="stretch_width")
        self._layer_name = pn.pane.HTML(sizing_mode="stretch_width", name="layer-name")
        self._view_name = pn.pane.HTML(sizing_mode="stretch_width", name="view-name")
        self._prev_layer = pn.widgets.Button(name="◀ layer", **button)
        self._next_layer = pn.widgets.Button(name="layer ▶", **button)
        self._prev_view = pn.widgets.Button(name="▲ view", **button)
        self._next_view = pn.widgets.Button(name="view ▼", **button)
        self._labels_box = pn.Column(sizing_mode="stretch_width")
        self._new_label = pn.widgets.TextInput(placeholder=NEW_LABEL_PLACEHOLDER, sizing_mode="stretch_width")
        self._undo = pn.widgets.Button(name="Undo", **button)
        self._redo = pn.widgets.Button(name="Redo", **button)
        self._similar = pn.widgets.Button(name="Find similar", button_type="primary", **button)
        self._clear = pn.widgets.Button(name="Clear selection", **button)
        self._separate_choice = pn.widgets.MultiChoice(name="Separate my labels", options={},
                                                       sizing_mode="stretch_width")
        self._separate = pn.widgets.Button(name="Separate", **button)
        self._train = pn.widgets.Button(name="Train", button_type="success", **button)
        self._report = pn.pane.HTML("Label about a hundred images, then train.", sizing_mode="stretch_width",
                                    stylesheets=[REPORT_CSS])
        self._checked = pn.pane.HTML("", sizing_mode="stretch_width", name="checked")
        self._opacity = pn.widgets.Checkbox.from_param(self.param.vary_opacity, name="Vary opacity by confidence")
        self._heatmap_toggle = pn.widgets.Checkbox.from_param(self.param.heatmaps, name="Show heatmaps (g)")
        self._threshold = pn.widgets.FloatSlider(name="Accept predictions above", start=0.5, end=0.99, step=0.01,
                                                 value=0.9, sizing_mode="stretch_width")
        self._check = pn.widgets.Button(name="Check predictions", **button)
        self._accept_shown = pn.widgets.Button(name="Accept shown", disabled=True, **button)
        self._accept = pn.widgets.Button(name="Accept all above", **button)
        self._download_labels = pn.widgets.FileDownload(callback=lambda: self._csv("labels"), filename="labels.csv",
                                                        label="Download labels CSV", **button)
        self._download_preds = pn.widgets.FileDownload(callback=lambda: self._csv("predictions"),
                                                       filename="predictions.csv", label="Download predictions CSV",
                                                       **button)
        self._import = ImportLabels(self.session.project, self._run, self._show, self._after_change)
        self._review_text = pn.pane.HTML("Lasso a group of images to review it here.", sizing_mode="stretch_width")
        self._preview = pn.pane.HTML("", width=self._preview_px + 4, height=self._preview_px + PREVIEW_TEXT_PX)
        # after Enter in the new-label field, the keys are the map's again (a label's number, arrows)
        self._shortcuts = Shortcuts.for_table(KEYS, scope="focus" if self.in_notebook else "page",
                                              blur_fields=[NEW_LABEL_PLACEHOLDER], view="label")
        self._callbacks()

    def _callbacks(self) -> None:
        clicks = {self._prev_layer: lambda: self._step_layer(-1), self._next_layer: lambda: self._step_layer(1),
                  self._prev_view: lambda: self._step_view(-1), self._next_view: lambda: self._step_view(1),
                  self._undo: self._on_undo, self._redo: self._on_redo, self._similar: self._on_similar,
                  self._clear: lambda: self._set_selection([]), self._separate: self._on_separate,
                  self._train: self._on_train, self._check: self._on_check, self._accept_shown: self._on_accept_shown,
                  self._accept: self._on_accept}
        for widget, action in clicks.items():
            widget.on_click(locked(lambda action=action: self._run(action)))
        self._new_label.param.watch(self._on_new_label, "enter_pressed")
        self.param.watch(locked(lambda: self._run(self._recolour)), "vary_opacity")
        self.param.watch(locked(lambda: self._run(self._on_heatmaps)), "heatmaps")
        self._threshold.param.watch(locked(lambda: self._run(self._show_checked)), "value")
        self._shortcuts.on_key(lambda key: self._run(KEYS.dispatch, self, key))

    def _page(self):
        help_card = pn.Card(pn.pane.HTML(KEYS.help_html()), title="Shortcuts", collapsed=True,
                            sizing_mode="stretch_width")
        side = pn.Column(
            self._layer_name, pn.Row(self._prev_layer, self._next_layer, sizing_mode="stretch_width"),
            self._view_name, pn.Row(self._prev_view, self._next_view, sizing_mode="stretch_width"),
            pn.pane.HTML("<b>Labels</b> (click to label the selection)"), self._labels_box, self._new_label,
            pn.Row(self._undo, self._redo, sizing_mode="stretch_width"),
            pn.Row(self._similar, self._clear, sizing_mode="stretch_width"),
            self._separate_choice, self._separate,
            self._train, self._report, self._opacity, self._heatmap_toggle, self._threshold,
            pn.Row(self._check, self._accept_shown, sizing_mode="stretch_width"), self._checked, self._accept,
            self._download_labels, self._download_preds, self._import, help_card, self._shortcuts,
            width=300, scroll=True, sizing_mode="stretch_height",
        )
        # the grid keeps room for several rows of tiles and scrolls within it
        review = pn.Column(self._review_text, self.grid.panel, sizing_mode="stretch_both", scroll=True,
                           min_height=REVIEW_MIN_PX)
        main = pn.Column(self._message, pn.Row(self.map.panel, self._preview, sizing_mode="stretch_both",
                                               min_height=420),
                         review, sizing_mode="stretch_both")
        return pn.Row(side, main, sizing_mode="stretch_both")

    def _tabs(self):
        tabs = pn.Tabs(("Label", self._page()), ("Clean", self.clean), ("Model", self.model),
                       sizing_mode="stretch_both")
        self._version_seen, self._model_seen = self.session.version, self.session.latest_model()
        tabs.param.watch(lambda event: with_document_lock(lambda: self._run(self._on_tab, event.new)), "active")
        return tabs

    def _on_tab(self, active: int) -> None:
        """Each tab shows what the other changed: the map recolours, the cleaning queues redraw."""
        if active == 1:
            self._version_seen = self.session.version
            self.clean.show()
        elif active == 2:
            self.model.show()
        else:
            self._heat.fill_grid()          # another model may have become current in the Model tab
            if self.session.refresh_model_layer() or self._model_seen != self.session.latest_model():
                self._on_new_model()
            elif self.session.version != self._version_seen:
                self._after_change()

    def _on_new_model(self) -> None:
        """A new model (fine-tuned, or made current): its layer joins ←/→, its predictions colour the map."""
        self.session.refresh_model_layer()
        self.session.refresh_rows()
        self._model_seen = self.session.latest_model()
        self._show_checked()
        self._redraw()

    # -- drawing ---------------------------------------------------------------------------
    def _redraw(self, reset_view=False) -> None:
        s = self.session
        self._show_names()
        self._draw_after_review = None
        if self._positions.needed():     # seconds (UMAP): the map stays as it is and the server keeps answering
            self._view_name.object += " <small>(computing…)</small>"
            note = f"Computing {s.view.name} for {s.layer}: the map changes when it is ready. Keep labeling meanwhile."
            if note != self._computing_note or not self._positions.computing:   # not again for more rows, say
                self._computing_note = note
                self._show(note, "info")
            self._positions.request(reset_view)
            if len(s.rows) == len(self.map.ids):
                self._recolour()
        else:
            xy = unit_square(s.coords(), fixed=CLASS_LAYOUT_EXTENT if s.view.method == "predicted" else None)
            colour, alpha = s.colours(self.vary_opacity)
            self.map.draw(xy, s.rows, s.n_items, colour, alpha, s.frames(), reset_view=reset_view)
            self._drawn = (s.layer, s.view)
            if self.status == self._computing_note:
                self._show("")
        self._refresh_labels()

    def _layout_ready(self, reset_view: bool) -> None:
        """The view computed in the background is ready: drawn now, or (`_draw_after_review`) once the selection under
        review is labeled or cleared (a redraw clears the map's selection; the points would move from under it)."""
        s = self.session
        if self._drawn == (s.layer, s.view) and len(self.map.ids) == len(s.rows):
            return                      # the person went back to the view the map shows meanwhile
        if s.review.ids:
            self._draw_after_review = reset_view
            self._view_name.object = (f"<b>View</b>: {esc(s.view.name)} <small>(ready: shown once this selection is "
                                      f"labeled or cleared)</small>")
            if self.status == self._computing_note:
                self._computing_note = (f"{s.view.name} for {s.layer} is ready: the map shows it once this "
                                        f"selection is labeled or cleared.")
                self._show(self._computing_note, "info")
        else:
            self._redraw(reset_view)

    def _layout_failed(self, message: str) -> None:
        """The current view could not be computed: back to the layer and view the map shows, and why."""
        s = self.session
        if self._drawn and self._drawn[0] in s.layers and self._drawn[1] in s.views:
            s.layer_index, s.view_index = s.layers.index(self._drawn[0]), s.views.index(self._drawn[1])
        self._show_names()
        self._show(f"The map stays as it was: {message}", "warning")

    def _show_names(self) -> None:
        s = self.session
        self._layer_name.object = f"<b>Layer</b>: {esc(s.layer)} <small>({esc(s.layer_title)})</small>"
        self._view_name.object = f"<b>View</b>: {esc(s.view.name)}"

    def _recolour(self) -> None:
        self.map.recolour(*self.session.colours(self.vary_opacity), self.session.frames())

    def _refresh_labels(self) -> None:
        s = self.session
        counts, colours = s.label_counts(), s.label_colours()
        buttons = []
        for index, (name, count) in enumerate(counts.items()):
            key = f"{index + 1}: " if index < len(DIGITS) else ""
            # a Bokeh button shows its label as text, never as HTML
            btn = pn.widgets.Button(name=f"{key}{name} ({count})", sizing_mode="stretch_width",
                                    styles={"border-left": f"6px solid {colours.get(name, '#999')}"},
                                    stylesheets=[ONE_LINE_BUTTON])
            btn.on_click(locked(lambda name=name: self._run(self._label, name)))
            buttons.append(btn)
        self._labels_box[:] = buttons
        # Bokeh's MultiChoice (Choices.js) renders option labels as HTML: give it escaped labels
        self._separate_choice.options = {esc(name): name for name in counts}
        self._undo.disabled, self._redo.disabled = not s.can_undo, not s.can_redo

    def _update_review_text(self) -> None:
        review = self.session.review
        self._accept_shown.disabled = not review.predicted
        if not review.ids:
            self._review_text.object = "Lasso a group of images to review it here."
        elif review.check is not None and review.predicted:
            self._review_text.object = (
                f"<b>Checking {len(review.ids)}</b> random predictions of the {review.check.pool} unlabeled images "
                f"predicted at {review.check.threshold:.2f} or above (each shows its predicted label), "
                f"{len(review.dropped)} dropped. Click the wrong ones to drop them, or press a label's number over "
                f"one to correct it; then <b>Accept shown</b> labels the other "
                f"{len([i for i in review.kept if i in review.predicted])} as shown.")
        else:
            self._review_text.object = (f"<b>{len(review.ids)} selected</b>, {len(review.dropped)} dropped: "
                                        f"labeling now labels <b>{len(review.kept)}</b>. Click an image to drop it "
                                        f"(again to keep it).")
        if self._draw_after_review is not None and not review.ids:     # the review is closed: the view waiting
            self._redraw(self._draw_after_review)

    def _show(self, text: str, kind: str = "info") -> None:
        self.status = text
        self._message.show(text, kind)

    # -- actions (each runs through self._run: errors become messages) ---------------------
    def _step_layer(self, step: int) -> None:
        self.session.step_layer(step)
        self._show("")
        self._redraw()

    def _step_view(self, step: int) -> None:
        self.session.step_view(step)
        self._redraw()

    def _set_selection(self, ids, from_plot=False) -> None:
        if from_plot and (said := self.session.news_from_other_tabs()):    # a lasso too shows other tabs' labels
            self._show(said, "info")
            self._after_change()
        self.session.select(ids)
        self.grid.show(self.session.review)
        self._update_review_text()
        if not from_plot:
            self.map.clear_selection()

    def _label(self, name: str) -> None:
        count = self.session.label_review(name)
        if not count:
            self._show("Select images first (lasso or box on the map).", "warning")
            return
        rest = self.session.review.ids
        self._show(f"Labeled {count} images “{name}”." + (
            f" The {len(rest)} you dropped stay selected: label them, drop more, or lasso anew." if rest else ""),
            "success")
        self._set_selection(rest)
        self._after_change()

    def _label_one(self, item: int, name: str) -> None:
        """A label's key pressed over one image of the review: that image alone."""
        at = self.grid.ids.index(item) if item in self.grid.ids else -1
        self.session.label_item(item, name)
        # no message: the alert above the map would push the grid down, from under the mouse
        self.status = f"Labeled 1 image “{name}”."
        self.grid.show(self.session.review)
        # the next image slides into the labeled one's cell, under the mouse: the next key is for it
        self.grid.hovered = self.grid.ids[at] if 0 <= at < len(self.grid.ids) else None
        self._update_review_text()
        self._after_change()

    def _on_new_label(self, event) -> None:
        name = self._new_label.value_input or self._new_label.value
        if name and name.strip():
            self._new_label.value = ""
            # enter_pressed arrives outside the document lock; Bokeh models may only change under it
            with_document_lock(lambda: self._run(self._label, name.strip()))

    def _on_undo(self) -> None:
        done = self.session.undo()
        self._show(f"Undid: {done}" if done else "Nothing to undo.", "info")
        self._after_change()

    def _on_redo(self) -> None:
        done = self.session.redo()
        self._show(f"Redid: {done}" if done else "Nothing to redo.", "info")
        self._after_change()

    def _after_change(self) -> None:
        if said := self.model.keep_fresh():
            self._show(said, "info")
        if said := self.session.news_from_other_tabs(self.status):     # before the redraw: it shows what it says
            self._show(said, self._message.kind)
        self.session.refresh_rows()
        if self.session.view.follows_labels or len(self.session.rows) != len(self.map.ids):
            self._redraw()
        else:
            self._recolour()
            self._refresh_labels()

    def _on_similar(self) -> None:
        if not self.session.review.kept:
            self._show("Select a few images first; find similar looks for more like them.", "warning")
            return
        review = self.session.find_similar(SIMILAR_K)
        self.grid.show(review)
        self._update_review_text()
        self._show(f"Added {len(review.similarity)} similar images to the review (similarity shown).", "info")

    def _on_separate(self) -> None:
        self.session.separate(list(self._separate_choice.value))
        self._redraw(True)

    def _on_heatmaps(self) -> None:
        said = self._run(self._heat.switch, self.heatmaps)
        if said is not None:
            self._show(said, "info")
        elif self.heatmaps != self._heat.on:     # it could not switch on (no model yet): the toggle goes back
            self.heatmaps = self._heat.on

    # -- events from the map and the opening -----------------------------------------------
    def _on_hover(self, item_id: int) -> None:
        self._heat.show_preview(item_id, self._preview_px, self.session.item_path(item_id))

    def _on_more_rows(self, rows: int, total: int, finished: bool, error: str | None) -> None:
        """More images have features: redraw, unless a review is open (labeling redraws it later)."""
        self._show(*progress_note(self.session.project, rows, total, not finished, error))
        if not self.session.review.ids:
            self.session.refresh_rows()
            self._run(self._redraw)

    # -- downloads and notebook API --------------------------------------------------------
    def _csv(self, kind: str):
        from labeler import io
        empty = "No labels yet: labels.csv holds only its header row. Label some images first." * (kind == "labels")
        return export_to_buffer(getattr(io, f"export_{kind}_csv"), self.session.project, self._show, empty=empty)

    @property
    def labels(self):
        """The human and accepted labels as a pandas DataFrame."""
        return self._opening.project.labels

    @property
    def _preview_px(self) -> int:
        """The hover preview's edge: smaller in a notebook, where the output is narrower than a window."""
        return NOTEBOOK_PREVIEW_PX if self.in_notebook else PREVIEW_PX

    def _for_notebook(self) -> None:
        self._layout.param.update(sizing_mode="stretch_width", height=NOTEBOOK_HEIGHT, min_height=None)
        if hasattr(self, "session"):       # built already (a cached project opens at once): resize the parts
            self._shortcuts.scope = "focus"
            self.clean.use_focus_keys()
            self.grid.set_columns(NOTEBOOK_GRID_COLUMNS)
            self._preview.param.update(width=self._preview_px + 4, height=self._preview_px + PREVIEW_TEXT_PX)

    def open_in_tab(self, port: int | None = None) -> str:
        """Serve this project in a browser tab of its own (this machine only); returns its address.

        Each tab gets its own app on the same label store, so labels made there show here after a
        change (and the other way round). The server runs until the kernel stops.
        """
        arguments = self._arguments
        return serve_pages(lambda: LabelApp(**arguments), port=port, threaded=True)

    def __panel__(self):
        return self._layout
