"""The labeler app: images scattered by a CNN layer; lasso, review, label, find similar, separate, train.

`LabelApp(folder)` is a Panel Viewer: served by `apps/label.py` / `labeler serve`, or shown
inline in Jupyter. Every instance holds its own session state (one per browser tab). Two
tabs: "Label" (the map) and "Clean" (labeler/clean_view.py: likely label errors, top
losses, duplicates and odd files, computed the first time the tab opens).
"""
from __future__ import annotations

import logging

import numpy as np
import panel as pn
import param
from bokeh.events import RangesUpdate
from bokeh.models import (BoxSelectTool, ColumnDataSource, Div, HoverTool, ImageURL, LassoSelectTool, Range1d,
                          WheelZoomTool, CustomJS)
from bokeh.plotting import figure

from engine.projection import CLASS_LAYOUT_EXTENT
from labeler._ui import USER_ERRORS, export_to_buffer, locked, with_document_lock
from labeler.clean_view import CleanView
from labeler.composite import render_composite, to_data_uri
from labeler.errors import LabelerError
from labeler.palette import label_colours, label_frames, paler
from labeler.review import ReviewGrid
from labeler.session import UNLABELED_COLOUR, Session
from labeler.shortcuts import SHORTCUTS, Shortcuts

logger = logging.getLogger(__name__)
TILE_PX = 32
# WebGL is fastest on a real GPU; "canvas" redraws large maps faster where WebGL is software-rendered
BACKENDS = ("webgl", "canvas")


class LabelApp(pn.viewable.Viewer):
    """Label a folder of images in the browser or a notebook."""

    status = param.String(default="", doc="the last message shown to the user")
    vary_opacity = param.Boolean(default=False, doc="fade what the model already predicts confidently")

    def __init__(self, folder=None, *, workspace=None, backbone="mobilenet_v2", size=160, backend="webgl", **params):
        super().__init__(**params)
        if backend not in BACKENDS:
            raise LabelerError(f"Unknown plot backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
        self._backend = backend
        from labeler.opening import open_project
        self._opening = open_project(folder, workspace=workspace, backbone=backbone, size=size)
        self._layout = pn.Column(self._opening.panel, sizing_mode="stretch_both", min_height=700)
        self._opening.on_ready(self._build)

    # -- layout ----------------------------------------------------------------------------
    def _build(self, project, thumbs) -> None:
        self.session = Session(project, backbone=self._opening.backbone, size=self._opening.size)
        self.thumbs = thumbs
        self._frames_for, self._frames_cache = None, None
        self._map_source = ColumnDataSource(dict(x=[], y=[], id=[], color=[], alpha=[]))
        self._tile_source = ColumnDataSource(dict(url=[], x=[], y=[], w=[], h=[]))
        self._plot = self._make_plot()
        self.grid = ReviewGrid(thumbs, on_change=self._update_review_text,
                               colours=lambda: label_colours(self.session.store.label_defs()))
        self.clean = CleanView(project, thumbs=thumbs, backbone=self._opening.backbone, size=self._opening.size)
        self._widgets()
        self._layout[:] = [self._tabs()]
        self._redraw(reset_view=True)
        self._opening.on_more(self._on_more_rows)
        if len(self.session.rows) < len(project.items):
            self._show(f"Still computing features: the map shows {len(self.session.rows):,} of "
                       f"{len(project.items):,} images so far and grows as the rest arrive.", "info")

    def _widgets(self) -> None:
        button = dict(sizing_mode="stretch_width")
        self._layer_name = pn.pane.HTML(sizing_mode="stretch_width", name="layer-name")
        self._view_name = pn.pane.HTML(sizing_mode="stretch_width", name="view-name")
        self._prev_layer = pn.widgets.Button(name="◀ layer", **button)
        self._next_layer = pn.widgets.Button(name="layer ▶", **button)
        self._prev_view = pn.widgets.Button(name="▲ view", **button)
        self._next_view = pn.widgets.Button(name="view ▼", **button)
        self._labels_box = pn.Column(sizing_mode="stretch_width")
        self._new_label = pn.widgets.TextInput(placeholder="new label, then Enter", sizing_mode="stretch_width")
        self._undo = pn.widgets.Button(name="Undo", **button)
        self._redo = pn.widgets.Button(name="Redo", **button)
        self._similar = pn.widgets.Button(name="Find similar", button_type="primary", **button)
        self._clear = pn.widgets.Button(name="Clear selection", **button)
        self._separate_choice = pn.widgets.MultiChoice(name="Separate my labels", options=[], sizing_mode="stretch_width")
        self._separate = pn.widgets.Button(name="Separate", **button)
        self._train = pn.widgets.Button(name="Train", button_type="success", **button)
        self._report = pn.pane.HTML("Label about a hundred images, then train.", sizing_mode="stretch_width")
        self._checked = pn.pane.HTML("", sizing_mode="stretch_width", name="checked")
        self._opacity = pn.widgets.Checkbox.from_param(self.param.vary_opacity, name="Vary opacity by confidence")
        self._threshold = pn.widgets.FloatSlider(name="Accept predictions above", start=0.5, end=0.99, step=0.01,
                                                 value=0.9, sizing_mode="stretch_width")
        self._check = pn.widgets.Button(name="Check predictions", **button)
        self._accept_shown = pn.widgets.Button(name="Accept shown", disabled=True, **button)
        self._accept = pn.widgets.Button(name="Accept all above", **button)
        self._download_labels = pn.widgets.FileDownload(callback=self._labels_csv, filename="labels.csv",
                                                        label="Download labels CSV", **button)
        self._download_preds = pn.widgets.FileDownload(callback=self._predictions_csv, filename="predictions.csv",
                                                       label="Download predictions CSV", **button)
        self._message = pn.pane.Alert("", alert_type="light", sizing_mode="stretch_width", visible=False)
        self._review_text = pn.pane.HTML("Lasso a group of images to review it here.", sizing_mode="stretch_width")
        self._preview = pn.pane.HTML("", width=260, height=280)
        self._shortcuts = Shortcuts()
        # callbacks
        self._prev_layer.on_click(locked(lambda: self._step_layer(-1)))
        self._next_layer.on_click(locked(lambda: self._step_layer(1)))
        self._prev_view.on_click(locked(lambda: self._step_view(-1)))
        self._next_view.on_click(locked(lambda: self._step_view(1)))
        self._new_label.param.watch(self._on_new_label, "enter_pressed")
        self._undo.on_click(locked(lambda: self._do(self.session.store.undo, "Undid")))
        self._redo.on_click(locked(lambda: self._do(self.session.store.redo, "Redid")))
        self._similar.on_click(locked(self._on_similar))
        self._clear.on_click(locked(lambda: self._set_selection([])))
        self._separate.on_click(locked(self._on_separate))
        self._train.on_click(locked(self._on_train))
        self._check.on_click(locked(self._on_check))
        self._accept_shown.on_click(locked(self._on_accept_shown))
        self._accept.on_click(locked(self._on_accept))
        self.param.watch(locked(self._recolour), "vary_opacity")
        self._threshold.param.watch(locked(self._show_checked), "value")
        self._shortcuts.on_key(self._handle_key)

    def _page(self):
        help_card = pn.Card(pn.pane.HTML(_shortcut_table()), title="Shortcuts", collapsed=True,
                            sizing_mode="stretch_width")
        side = pn.Column(
            self._layer_name, pn.Row(self._prev_layer, self._next_layer, sizing_mode="stretch_width"),
            self._view_name, pn.Row(self._prev_view, self._next_view, sizing_mode="stretch_width"),
            pn.pane.HTML("<b>Labels</b> (click to label the selection)"), self._labels_box, self._new_label,
            pn.Row(self._undo, self._redo, sizing_mode="stretch_width"),
            pn.Row(self._similar, self._clear, sizing_mode="stretch_width"),
            self._separate_choice, self._separate,
            self._train, self._report, self._opacity, self._threshold,
            pn.Row(self._check, self._accept_shown, sizing_mode="stretch_width"), self._checked, self._accept,
            self._download_labels, self._download_preds, help_card, self._shortcuts,
            width=300, scroll=True, sizing_mode="stretch_height",
        )
        review = pn.Column(self._review_text, self.grid.panel, sizing_mode="stretch_both")
        main = pn.Column(self._message, pn.Row(pn.pane.Bokeh(self._plot, sizing_mode="stretch_both"), self._preview,
                                               sizing_mode="stretch_both", min_height=420),
                         review, sizing_mode="stretch_both")
        return pn.Row(side, main, sizing_mode="stretch_both")

    def _tabs(self):
        tabs = pn.Tabs(("Label", self._page()), ("Clean", self.clean), sizing_mode="stretch_both")
        self._version_seen = self.session.store.version
        tabs.param.watch(lambda event: with_document_lock(lambda: self._on_tab(event.new)), "active")
        return tabs

    def _on_tab(self, active: int) -> None:
        """Each tab shows what the other changed: the map recolours, the cleaning queues redraw."""
        if active == 1:
            self._version_seen = self.session.store.version
            self.clean.show()
        elif self.session.store.version != self._version_seen:
            self._after_change()

    def _make_plot(self):
        plot = figure(tools="pan,reset", output_backend=self._backend, sizing_mode="stretch_both", min_height=400,
                      toolbar_location="above", name="map", match_aspect=False)
        plot.x_range, plot.y_range = Range1d(0, 1), Range1d(0, 1)
        plot.lod_timeout, plot.lod_interval = 100, 100
        plot.axis.visible = False
        plot.grid.visible = False
        plot.add_glyph(self._tile_source, ImageURL(url="url", x="x", y="y", w="w", h="h", anchor="top_left"))
        points = plot.scatter("x", "y", source=self._map_source, size=4, color="color", alpha="alpha",
                              nonselection_alpha=0.25, selection_color="color", name="points")
        lasso = LassoSelectTool(continuous=False, renderers=[points])
        plot.add_tools(lasso, BoxSelectTool(continuous=False, renderers=[points]), WheelZoomTool())
        plot.toolbar.active_drag = lasso
        plot.toolbar.active_scroll = plot.select_one(WheelZoomTool)
        self._hover_id = Div(text="", visible=False, name="hover-id")
        plot.add_tools(HoverTool(renderers=[points], tooltips=None, callback=CustomJS(
            args=dict(div=self._hover_id, source=self._map_source),
            code="const i = cb_data.index.indices; if (i.length) { div.text = String(source.data.id[i[0]]); }")))
        self._hover_id.on_change("text", self._on_hover)
        self._map_source.selected.on_change("indices", self._on_select)
        plot.on_event(RangesUpdate, self._on_ranges)
        return plot

    # -- drawing ---------------------------------------------------------------------------
    def _redraw(self, reset_view=False) -> None:
        s = self.session
        self._layer_name.object = f"<b>Layer</b>: {s.layer} <small>({s.layer_title})</small>"
        self._view_name.object = f"<b>View</b>: {s.view.name}"
        try:
            xy = s.coords()
        except USER_ERRORS as err:
            self._show(str(err), "warning")
            return
        xy = _normalize(xy, fixed=CLASS_LAYOUT_EXTENT if s.view.method == "predicted" else None)
        ids = s.rows
        self._xy = np.full((len(s.project.items), 2), np.nan, dtype=np.float32)
        self._xy[ids] = xy
        colour, alpha = self._colours()
        self._map_source.data = dict(x=xy[:, 0], y=xy[:, 1], id=ids, color=colour[ids], alpha=alpha[ids])
        self._map_source.selected.indices = []
        if reset_view:
            self._plot.x_range.start, self._plot.x_range.end = -0.03, 1.03
            self._plot.y_range.start, self._plot.y_range.end = -0.03, 1.03
        self._refresh_labels()
        self._draw_tiles()

    def _colours(self) -> tuple[np.ndarray, np.ndarray]:
        """Per item: label colour (human), paler predicted colour, or grey; alpha by confidence if asked."""
        s = self.session
        n = len(s.project.items)
        names, labels = s.human_labels()
        colours = label_colours(s.store.label_defs())
        colour = np.full(n, UNLABELED_COLOUR, dtype=object)
        alpha = np.full(n, 0.45, dtype=np.float32)   # unlabeled points stay light over the thumbnails
        predictions = s.predictions()
        if predictions is not None:
            classes, ids, probs = predictions
            best, confidence = probs.argmax(1), probs.max(1)
            pale = np.array([paler(colours.get(c, UNLABELED_COLOUR)) for c in classes], dtype=object)
            colour[ids] = pale[best]
            if self.vary_opacity:
                chance = 1.0 / max(2, len(classes))
                alpha[ids] = np.clip(1 - (confidence - chance) / (1 - chance), 0.06, 1.0)
        has = labels >= 0
        alpha[has] = 0.95
        colour[has] = np.array([colours.get(name, UNLABELED_COLOUR) for name in names] or ["#000"], dtype=object)[labels[has]]
        if self.vary_opacity:
            alpha[has] = 0.08
        return colour, alpha

    def _recolour(self) -> None:
        colour, alpha = self._colours()
        ids = np.asarray(self._map_source.data["id"], dtype=np.int64)
        self._map_source.data.update(color=colour[ids], alpha=alpha[ids])
        self._draw_tiles()

    def _draw_tiles(self) -> None:
        plot = self._plot
        x_range = (plot.x_range.start, plot.x_range.end)
        y_range = (plot.y_range.start, plot.y_range.end)
        width, height = _plot_px(plot)
        visible = np.zeros(len(self._xy), dtype=bool)
        visible[self.session.rows] = True
        try:
            jpeg = render_composite(np.nan_to_num(self._xy, nan=-1e9), self.thumbs.get, x_range, y_range,
                                    (width, height), TILE_PX, visible_mask=visible, border=self._frames()).jpeg
        except USER_ERRORS as err:
            logger.warning("no thumbnails: %s", err)
            return
        if jpeg is None:
            self._tile_source.data = dict(url=[], x=[], y=[], w=[], h=[])
        else:
            self._tile_source.data = dict(url=[to_data_uri(jpeg)], x=[x_range[0]], y=[y_range[1]],
                                          w=[x_range[1] - x_range[0]], h=[y_range[1] - y_range[0]])

    def _frames(self) -> np.ndarray:
        """Label-coloured frames for labeled thumbnails, recomputed only when the labels changed."""
        version = self.session.store.version
        if self._frames_for != version:
            names, labels = self.session.human_labels()
            self._frames_cache = label_frames(names, labels, label_colours(self.session.store.label_defs()))
            self._frames_for = version
        return self._frames_cache

    def _refresh_labels(self) -> None:
        s = self.session
        counts = s.store.counts()
        colours = label_colours(s.store.label_defs())
        buttons = []
        for index, (name, count) in enumerate(counts.items()):
            key = f"{index + 1}: " if index < 9 else ""
            btn = pn.widgets.Button(name=f"{key}{name} ({count})", sizing_mode="stretch_width",
                                    styles={"border-left": f"6px solid {colours.get(name, '#999')}"})
            btn.on_click(locked(lambda name=name: self._label(name)))
            buttons.append(btn)
        self._labels_box[:] = buttons
        self._separate_choice.options = list(counts)
        self._undo.disabled = not s.store.can_undo()
        self._redo.disabled = not s.store.can_redo()

    def _update_review_text(self) -> None:
        review = self.session.review
        kept = len(review.kept)
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
                                        f"labeling now labels <b>{kept}</b>. Click an image to drop it (again to keep it).")

    def _show(self, text: str, kind: str = "info") -> None:
        self.status = text
        self._message.object, self._message.alert_type, self._message.visible = text, kind, bool(text)

    # -- actions ---------------------------------------------------------------------------
    def _guard(self, action, *args):
        try:
            return action(*args)
        except USER_ERRORS as err:
            self._show(str(err), "warning")
        return None

    def _step_layer(self, step: int) -> None:
        self.session.step_layer(step)
        self._show("")
        self._guard(self._redraw)

    def _step_view(self, step: int) -> None:
        self.session.step_view(step)
        if not self.session.is_ready():
            self._show(f"Computing {self.session.view.name} for {self.session.layer}…", "info")
        self._guard(self._redraw)
        if self.status.startswith("Computing"):
            self._show("")

    def _on_select(self, attr, old, new) -> None:
        ids = np.asarray(self._map_source.data["id"])[new] if len(new) else []
        self._set_selection(list(ids), from_plot=True)

    def _set_selection(self, ids, from_plot=False) -> None:
        self.session.select(ids)
        self.grid.show(self.session.review)
        self._update_review_text()
        if not from_plot:
            self._map_source.selected.indices = []

    def _label(self, name: str) -> None:
        count = self._guard(self.session.label_review, name)
        if count:
            rest = self.session.review.ids
            self._show(f"Labeled {count} images “{name}”." + (
                f" The {len(rest)} you dropped stay selected: label them, drop more, or lasso anew."
                if rest else ""), "success")
            self._set_selection(rest)
            self._after_change()
        elif count == 0:
            self._show("Select images first (lasso or box on the map).", "warning")

    def _label_one(self, item: int, name: str) -> None:
        """A label's key pressed over one image of the review: that image alone."""
        at = self.grid.ids.index(item) if item in self.grid.ids else -1
        if self._guard(self.session.label_item, item, name):
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
            with_document_lock(lambda: self._label(name.strip()))

    def _do(self, action, verb: str) -> None:
        done = self._guard(action)
        self._show(f"{verb}: {done}" if done else f"Nothing to {verb.lower()[:-1]}.", "info")
        self._after_change()

    def _after_change(self) -> None:
        self.session.refresh_rows()
        if self.session.view.follows_labels or len(self.session.rows) != len(self._map_source.data["id"]):
            self._guard(self._redraw)
        else:
            self._recolour()
            self._refresh_labels()

    def _on_similar(self, event=None) -> None:
        if not self.session.review.kept:
            self._show("Select a few images first; find similar looks for more like them.", "warning")
            return
        review = self._guard(self.session.find_similar, 50)
        if review is not None:
            self.grid.show(review)
            self._update_review_text()
            self._show(f"Added {len(review.similarity)} similar images to the review (similarity shown).", "info")

    def _on_separate(self, event=None) -> None:
        chosen = list(self._separate_choice.value)
        if len(chosen) < 2:
            self._show("Choose two or more labels to separate.", "warning")
            return
        self.session.separate(chosen)
        self._guard(self._redraw, True)

    def _on_train(self, event=None) -> None:
        self._show("Training on cached features…", "info")
        report = self._guard(self.session.train)
        if report is None:
            return
        rows = "".join(f"<tr><td>{name}</td><td>{v['n']}</td><td>{v['precision']:.0%}</td><td>{v['recall']:.0%}</td></tr>"
                       for name, v in report.per_label.items())
        self._report.object = (f"<b>{report.summary()}</b><table><tr><th>label</th><th>n</th><th>precision</th>"
                               f"<th>recall</th></tr>{rows}</table>")
        self._show("Trained. Unlabeled images now show the predicted label (paler); the view list now offers "
                   "Predicted, which places them between the labels by the model's probabilities. Check predictions "
                   "shows a random sample above the threshold to confirm or correct.", "success")
        self._show_checked()
        self._after_change()

    def _on_check(self, event=None) -> None:
        review = self._guard(self.session.check_predictions, float(self._threshold.value))
        if review is not None:
            self.grid.show(review)
            self._update_review_text()
            self._show("")

    def _on_accept_shown(self, event=None) -> None:
        count = self._guard(self.session.accept_review)
        if count is None:
            return
        rest = self.session.review.ids
        self._show(f"Labeled {count} images as predicted." + (
            f" The {len(rest)} you dropped stay selected: label them, or lasso anew." if rest else ""), "success")
        self._set_selection(rest)
        self._show_checked()
        self._after_change()

    def _show_checked(self) -> None:
        """What checks showed of the latest model above the threshold: a fair estimate of Accept's precision."""
        from engine.firstmodel import wilson_interval
        threshold = float(self._threshold.value)
        right, seen = self.session.checked_precision(threshold)
        if not seen:
            self._checked.object = (f"<small>No check of this model at {threshold:.2f} or above yet: "
                                    f"Check predictions shows a random sample to judge.</small>")
            return
        low, _ = wilson_interval(right / seen, seen)
        self._checked.object = (f"<small>Checked at {threshold:.2f} or above: <b>{right} of {seen}</b> right "
                                f"(precision at least {low:.0%}, 95% confidence).</small>")

    def _on_accept(self, event=None) -> None:
        count = self._guard(self.session.accept, float(self._threshold.value))
        if count is not None:
            right, seen = self.session.checked_precision(float(self._threshold.value))
            judged = (f" Checks put about {round(count * (1 - right / seen))} of them wrong ({right} of {seen} "
                      f"checked right)." if seen else " None was checked: Check predictions first to know how "
                                                      "many are wrong.")
            self._show(f"Accepted {count} predictions above {self._threshold.value:.2f} (undoable).{judged}",
                       "success")
            self._after_change()

    def _handle_key(self, key: str) -> None:
        actions = {"ArrowLeft": lambda: self._step_layer(-1), "ArrowRight": lambda: self._step_layer(1),
                   "ArrowUp": lambda: self._step_view(-1), "ArrowDown": lambda: self._step_view(1),
                   "ctrl+z": lambda: self._do(self.session.store.undo, "Undid"),
                   "ctrl+shift+z": lambda: self._do(self.session.store.redo, "Redid"),
                   "Escape": lambda: self._set_selection([]), "s": self._on_similar, "t": self._on_train}
        if key in actions:
            actions[key]()
        elif key.isdigit() and key != "0":
            names = list(self.session.store.counts())
            if int(key) <= len(names):
                hovered = self.grid.hovered
                if hovered is not None and hovered in self.session.review.ids:
                    self._label_one(hovered, names[int(key) - 1])
                else:
                    self._label(names[int(key) - 1])

    def _on_hover(self, attr, old, new) -> None:
        if new.isdigit():
            self._preview.object = (f'<img src="{to_data_uri(self.thumbs.preview_jpeg(int(new), 256))}" '
                                    f'style="max-width:256px;max-height:256px"><br><small>'
                                    f'{self.session.project.items[int(new)].path}</small>')

    def _on_more_rows(self, rows: int, total: int, finished: bool, error: str | None) -> None:
        """More images have features: redraw, unless a review is open (labeling redraws it later)."""
        if error:
            self._show(f"Computing features stopped: {error}", "warning")
        elif finished:
            self._show("")
        else:
            self._show(f"Still computing features: {rows:,} of {total:,} images so far; the map grows as "
                       f"the rest arrive.", "info")
        if not self.session.review.ids:
            self.session.refresh_rows()
            self._guard(self._redraw)

    def _on_ranges(self, event) -> None:
        self._draw_tiles()

    # -- downloads and notebook API --------------------------------------------------------
    def _labels_csv(self):
        from labeler.io import export_labels_csv
        return export_to_buffer(export_labels_csv, self.session.project)

    def _predictions_csv(self):
        from labeler.io import export_predictions_csv
        return export_to_buffer(export_predictions_csv, self.session.project)

    @property
    def labels(self):
        """The human and accepted labels as a pandas DataFrame."""
        return self._opening.project().labels

    def __panel__(self):
        return self._layout


def _plot_px(plot) -> tuple[int, int]:
    """The plot's drawing area in pixels once the browser has laid it out, else a typical size."""
    from bokeh.core.property.descriptors import UnsetValueError
    try:
        return max(200, int(plot.inner_width)), max(200, int(plot.inner_height))
    except (UnsetValueError, TypeError):
        return 1000, 560


def _normalize(xy: np.ndarray, fixed: float | None = None) -> np.ndarray:
    """Scale a projection into the unit square (robust to a few far outliers); `fixed`: the layout
    already lies in [-fixed, fixed] on both axes, keep its shape (the Predicted view's circle)."""
    if fixed is not None:
        return ((xy + fixed) / (2 * fixed)).astype(np.float32)
    low, high = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    return ((xy - low) / span).astype(np.float32)


def _shortcut_table() -> str:
    rows = "".join(f"<tr><td><kbd>{key}</kbd></td><td>{what}</td></tr>" for key, what in SHORTCUTS)
    return f"<table>{rows}</table>"
