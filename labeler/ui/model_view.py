"""The Model tab: fine-tune a network on the project's labels, watch it train, see what it got wrong, export it.

`ModelView(project)` is a Panel Viewer: the app's "Model" tab, or shown alone in Jupyter. It wires
`labeler.finetune` (a training in a process of its own, polled here) and `labeler.model_store` (the
finished models with their records) to widgets; nothing here trains or measures anything.

Find learning rate draws lr_find's curve with the suggestion marked, and the rate field takes it.
Fine-tune shows a progress bar (epoch, batch, time left), the training and validation loss per
epoch as they come and a table of the task's metrics per epoch; Stop ends it after the current
batch and keeps the best epoch. A finished model shows its metrics with 95% intervals beside the
image-blind baseline, for classifiers the confusion matrix and the most-confused pairs, and its
top losses as tiles that each toggle a Grad-CAM heatmap. Export downloads the model file; the
model list makes any finished model the current one.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import panel as pn
from bokeh.models import ColumnDataSource, SingleIntervalTicker, Span
from bokeh.plotting import figure

from engine.backbones import BACKBONES
from labeler.finetune import TrainSpec, TrainingError, current_training, start_training
from labeler.model_layer import make_predictions_latest
from labeler.errors import USER_ERRORS
from labeler.model_store import ModelStore

from ._panel import NOTEBOOK_HEIGHT, Message, NotebookAware, esc, guarded, html_table, locked
from .model_report import ModelReport, fmt, headline

logger = logging.getLogger(__name__)
FRESH_GROWTH = 0.5  # "keep the map fresh": fine-tune again once the labels grow by this share

POLL_MS = 500
PLOT_HEIGHT = 230
SOURCES = {"the labels in this project": "store", "a folder of masks (segmentation)": "masks",
           "a CSV of points (regression)": "points"}
SPLITS = {"a random share": "random", "a list of validation images": "list",
          "keep groups whole (file name pattern)": "group"}


class ModelView(NotebookAware, pn.viewable.Viewer):
    """Fine-tune, measure, explain and export models of one project."""

    def __init__(self, project, **params):
        super().__init__(**params)
        self.project = project
        self.store = ModelStore(project.workspace.root)
        self.on_model: list = []  # called with no arguments when a fine-tune of this view finishes with a model
        self._message = Message()
        self._run = guarded(self._message.show, self._in_document)
        self._settings()
        self._plots()
        self._results = pn.Column(sizing_mode="stretch_width")
        self._models = pn.Column(sizing_mode="stretch_width")
        self._poller = None
        self._shown_run = None
        self._layout = pn.Row(self._side(), self._main(), sizing_mode="stretch_both")
        # under the document lock: a click right after typing in a field reaches its callback outside it, and
        # _follow changes the loss plot's Bokeh source directly (the camvid browser test typed, then clicked)
        self._find_lr.on_click(locked(lambda: self._run(self._on_find_lr)))
        self._fine_tune.on_click(locked(lambda: self._run(self._on_fine_tune)))
        self._stop.on_click(locked(lambda: self._run(self._on_stop)))
        self._source.param.watch(lambda event: self._run(self._show_source_fields), "value")
        self._split.param.watch(lambda event: self._run(self._show_source_fields), "value")
        self._unlabeled.param.watch(lambda event: self._run(self._show_source_fields), "value")
        self._show_source_fields()
        self._show_models()
        if (run := current_training(project)) is not None:  # another tab's training: show it, follow it
            self._follow(run)

    # -- layout ----------------------------------------------------------------------------
    def _settings(self) -> None:
        spec = TrainSpec()
        self._source = pn.widgets.Select(name="Train on", options=SOURCES, value="store")
        self._masks = pn.widgets.TextInput(name="Masks folder", placeholder="e.g. ../labels (from the image folder)")
        self._codes = pn.widgets.TextInput(name="Codes file", placeholder="e.g. ../codes.txt: class names, one a line")
        self._mask_suffix = pn.widgets.TextInput(name="Mask name = image stem +", value=".png")
        self._void = pn.widgets.TextInput(name="Void class index (optional)", placeholder="e.g. 11")
        self._class_weights = pn.widgets.Select(name="Class weights", options=CLASS_WEIGHTS, value="none")
        self._points = pn.widgets.TextInput(name="Points CSV", placeholder="image_name,...,x0,y0,x1,y1,...")
        self._points_mean = pn.widgets.Checkbox(name="regress the mean of the points", value=False)
        self._backbone = pn.widgets.Select(name="Backbone", options=list(BACKBONES), value=spec.backbone)
        self._size = pn.widgets.IntInput(name="Image size (px)", value=spec.size, start=32, step=16)
        self._split = pn.widgets.Select(name="Validation", options=SPLITS, value="random")
        self._valid_pct = pn.widgets.FloatInput(name="Validation share", value=spec.valid_pct, start=0.05, end=0.9,
                                                step=0.05)
        self._valid_list = pn.widgets.TextInput(name="Validation list", placeholder="e.g. ../valid.txt")
        self._test_pct = pn.widgets.FloatInput(name="Test share (held out, scored once)", value=spec.test_pct,
                                               start=0.0, end=0.5, step=0.05)
        self._group_regex = pn.widgets.TextInput(name="Group pattern", value=r"^(.*)_\d+$",
                                                 placeholder=r"^(.*)_\d+$: one person per group")
        self._freeze_epochs = pn.widgets.IntInput(name="Epochs, head only", value=spec.freeze_epochs, start=0,
                                                  width=135)
        self._epochs = pn.widgets.IntInput(name="Epochs, everything", value=spec.epochs, start=0, width=135)
        self._lr = pn.widgets.TextInput(name="Learning rate", value=f"{spec.lr:g}")
        self._find_lr = pn.widgets.Button(name="Find learning rate", button_type="default")
        self._fine_tune = pn.widgets.Button(name="Fine-tune", button_type="primary")
        self._stop = pn.widgets.Button(name="Stop", button_type="warning", disabled=True)
        self._unlabeled = pn.widgets.Checkbox(name="Use the unlabeled images too (pseudo-labels)",
                                              value=spec.unlabeled)
        self._unlabeled_threshold = pn.widgets.FloatInput(name="Pseudo-label when at least this confident",
                                                          value=spec.unlabeled_threshold, start=0.5, end=0.99,
                                                          step=0.01, visible=False)
        self._keep_fresh = pn.widgets.Checkbox(name=f"Keep the map fresh: fine-tune again once the labels have grown "
                                                    f"by {FRESH_GROWTH:.0%}", value=False)

    def _plots(self) -> None:
        self._progress = pn.indicators.Progress(value=0, max=1000, visible=False, sizing_mode="stretch_width",
                                                bar_color="primary")
        self._progress_text = pn.pane.HTML("", sizing_mode="stretch_width")
        self._lr_source = ColumnDataSource({"lr": [], "loss": []}, name="lr_find_curve")
        self._lr_mark = Span(location=1e-3, dimension="height", line_color="#d62728", line_dash="dashed",
                             visible=False, name="lr_suggestion")
        self._lr_plot = figure(height=PLOT_HEIGHT, x_axis_type="log", title="lr_find: loss against learning rate",
                               x_axis_label="learning rate", y_axis_label="loss (smoothed)", name="lr_find_plot",
                               sizing_mode="stretch_width", toolbar_location=None)
        self._lr_plot.line("lr", "loss", source=self._lr_source, line_width=2)
        self._lr_plot.add_layout(self._lr_mark)
        self._loss_source = ColumnDataSource({"epoch": [], "train_loss": [], "valid_loss": []}, name="loss_curve")
        self._loss_plot = figure(height=PLOT_HEIGHT, title="loss per epoch", x_axis_label="epoch",
                                 y_axis_label="loss", name="loss_plot", sizing_mode="stretch_width",
                                 toolbar_location=None)
        for column, colour in (("train_loss", "#1f77b4"), ("valid_loss", "#ff7f0e")):
            label = column.replace("_", " ")
            self._loss_plot.line("epoch", column, source=self._loss_source, color=colour, line_width=2,
                                 legend_label=label)
            self._loss_plot.scatter("epoch", column, source=self._loss_source, color=colour, size=7,
                                    legend_label=label)
        self._loss_plot.legend.location = "top_right"
        self._loss_plot.xaxis.ticker = SingleIntervalTicker(interval=1)  # whole epochs
        self._epoch_table = pn.pane.HTML("", sizing_mode="stretch_width")
        # shown once they have a curve: BokehJS warns on every layout of a plot with no data to range over
        self._lr_plot.visible = self._loss_plot.visible = False

    def _side(self):
        fields = [self._source, self._masks, self._codes, self._mask_suffix, self._void, self._class_weights,
                  self._points, self._points_mean, self._backbone, self._size, self._split, self._valid_pct,
                  self._valid_list, self._group_regex, self._test_pct, pn.Row(self._freeze_epochs, self._epochs),
                  self._lr,
                  self._unlabeled, self._unlabeled_threshold,
                  pn.Row(self._find_lr, self._fine_tune), self._stop, self._keep_fresh, self._summary_text()]
        return pn.Column(*fields, width=320, scroll=True, sizing_mode="stretch_height")

    def _summary_text(self):
        self._about = pn.pane.HTML("", sizing_mode="stretch_width")
        return self._about

    def _main(self):
        return pn.Column(self._message, self._progress, self._progress_text,
                         pn.Row(pn.pane.Bokeh(self._lr_plot, sizing_mode="stretch_width"),
                                pn.pane.Bokeh(self._loss_plot, sizing_mode="stretch_width"),
                                sizing_mode="stretch_width"),
                         self._epoch_table, self._results, self._models, sizing_mode="stretch_both", scroll=True)

    def _show_source_fields(self) -> None:
        source, split = self._source.value, self._split.value
        for widget in (self._masks, self._codes, self._mask_suffix, self._void, self._class_weights):
            widget.visible = source == "masks"
        for widget in (self._points, self._points_mean):
            widget.visible = source == "points"
        self._valid_pct.visible = split in ("random", "group")
        self._valid_list.visible = split == "list"
        self._group_regex.visible = split == "group"
        self._unlabeled_threshold.visible = self._unlabeled.value
        if source == "store":
            labels = self.project.labels
            kind = "multi-label" if self.project.multi_label else "single-label"
            names = len(set(labels["label"])) if not labels.empty and "label" in labels else 0
            self._about.object = (f"<small>{len(labels):,} labeled images in this project ({kind}, {names} "
                                  f"labels). Training runs in the background: keep labeling meanwhile.</small>")
        else:
            self._about.object = ("<small>Paths are on the server; a relative path starts at the image folder."
                                  "</small>")

    # -- actions ---------------------------------------------------------------------------
    def spec(self) -> TrainSpec:
        """The settings in the widgets, checked."""
        split, source, weights = self._split.value, self._source.value, self._class_weights.value
        return TrainSpec(
            source=source, masks=self._path(self._masks.value), codes=self._path(self._codes.value),
            mask_suffix=self._mask_suffix.value.strip() or ".png", void=_optional_int(self._void.value, "void class"),
            class_weights=weights if source == "masks" and weights != "none" else None,  # hidden for the others
            points=self._path(self._points.value), points_mean=self._points_mean.value,
            backbone=self._backbone.value, size=int(self._size.value), valid_pct=float(self._valid_pct.value),
            test_pct=float(self._test_pct.value or 0),
            valid_list=self._path(self._valid_list.value) if split == "list" else None,
            group_regex=(self._group_regex.value or None) if split == "group" else None,
            freeze_epochs=int(self._freeze_epochs.value), epochs=int(self._epochs.value),
            lr=_learning_rate(self._lr.value), unlabeled=self._unlabeled.value,
            unlabeled_threshold=float(self._unlabeled_threshold.value)).check()

    def _path(self, text: str) -> str | None:
        text = (text or "").strip()
        if not text:
            return None
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (Path(self.project.folder) / path).resolve())

    def _on_find_lr(self) -> None:
        self._follow(start_training(self.project, self.spec(), "lr_find"))

    def _on_fine_tune(self) -> None:
        self._follow(start_training(self.project, self.spec(), "fine_tune"))
        self._message.show("Fine-tuning in the background: label on meanwhile; Stop keeps the best epoch so far.",
                           "info")

    def keep_fresh(self) -> str | None:
        """With "keep the map fresh" on, fine-tune again (the settings shown) once the store's labels have grown by
        FRESH_GROWTH since the current model's; returns what to tell the person, or None when nothing started."""
        if not self._keep_fresh.value:         # after every labeling change: read no model records when off
            return None
        current = self.store.current_id
        record = self.store.record(current) if current else None
        run = current_training(self.project)
        if record is None or (run is not None and run.running):
            return None
        labels = sum(self.project.store.counts().values())
        if self._source.value != "store" or labels < (1 + FRESH_GROWTH) * record.get("labels", 0):
            return None
        try:
            self._follow(start_training(self.project, self.spec(), "fine_tune"))
        except USER_ERRORS as err:
            return f"Keeping the map fresh: could not fine-tune again: {err}"
        return (f"Keeping the map fresh: fine-tuning again on {labels:,} labels ({record['id']} had "
                f"{record.get('labels', 0):,}); its layer and predictions follow when it ends.")

    def _on_stop(self) -> None:
        run = current_training(self.project)
        if run is not None and run.running:
            run.stop()
            self._stop.disabled = True
            self._message.show("Stopping after the current batch; the best epoch so far is kept." if
                               run.kind == "fine_tune" else "Stopped finding the learning rate.", "info")

    # -- following a run -------------------------------------------------------------------
    def _follow(self, run) -> None:
        """Show `run` and poll it until it ends (a periodic callback of this view's document)."""
        self._shown_run = run
        if run.kind == "fine_tune":
            self._loss_source.data = {"epoch": [], "train_loss": [], "valid_loss": []}
            self._epoch_table.object, self._loss_plot.visible = "", False
        self._tick()
        if run.running and self._poller is None:
            self._poller = pn.state.add_periodic_callback(lambda: self._run(self._tick), period=POLL_MS)

    def _tick(self) -> None:
        run = self._shown_run
        if run is None:
            return
        running = run.running
        self._find_lr.disabled = self._fine_tune.disabled = running
        self._stop.disabled = not running or run.stopped
        self._progress.visible = running
        self._show_progress(run)
        if run.history and len(run.history) != len(self._loss_source.data["epoch"]):
            self._show_history(run.history, run.record)
        if not running:
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            self._finished(run)

    def _show_progress(self, run) -> None:
        if run.kind == "lr_find":
            self._progress.value = -1 if run.running else 0
            self._progress_text.object = f"<small>{esc(run.stage)}…</small>" if run.running else ""
            return
        if run.steps:
            self._progress.value = int(1000 * run.step / run.steps)
        batches = run.steps // max(run.epochs, 1) if run.epochs else 0
        parts = [esc(run.stage)]
        if run.epochs and run.stage == "training":
            parts.append(f"epoch {min(run.epoch + 1, run.epochs)} of {run.epochs}")
            if batches:
                parts.append(f"batch {run.step - run.epoch * batches} of {batches}")
            if run.loss == run.loss:
                parts.append(f"loss {run.loss:.3f}")
        if run.mapped and run.running:      # after training: every image through the fine-tuned network
            done, total = run.mapped
            self._progress.value = int(1000 * done / max(total, 1))
            parts.append(f"{done:,} of {total:,} images (the map's new layer and the predictions)")
        elif run.eta is not None and run.running:
            parts.append(f"about {_duration(run.eta)} left")
        parts.append(f"{_duration(run.elapsed)} so far" if run.running else "")
        self._progress_text.object = f"<small>{' · '.join(p for p in parts if p)}</small>"

    def _show_history(self, history: list[dict], record: dict | None) -> None:
        epochs = list(range(1, len(history) + 1))
        self._loss_source.data = {"epoch": epochs, "train_loss": [row["train_loss"] for row in history],
                                  "valid_loss": [row["valid_loss"] for row in history]}
        self._loss_plot.visible = True
        names = [k for k in history[0] if k not in ("epoch", "frozen", "partial")]
        rows = [[n, "head only" if row.get("frozen") else "everything", *(fmt(row[k]) for k in names)]
                for n, row in zip(epochs, history)]
        self._epoch_table.object = html_table(["epoch", "trained", *(k.replace("_", " ") for k in names)], rows,
                                              **{"class": "labeler-epochs"})

    def _finished(self, run) -> None:
        if run.stage == "stopped":
            self._message.show("Stopped: the learning rate stays as it was.", "info")
        elif run.error:
            self._message.show(f"{'Finding the learning rate' if run.kind == 'lr_find' else 'Fine-tuning'} "
                               f"failed: {run.error}", "danger")
        elif run.kind == "lr_find" and run.lr_find:
            found = run.lr_find
            self._lr_source.data = {"lr": found["lrs"], "loss": found["losses"]}
            self._lr_plot.visible = True
            self._lr_mark.location, self._lr_mark.visible = found["suggestion"], True
            self._lr.value = f"{found['suggestion']:.2g}"
            self._message.show(f"Suggested learning rate {found['suggestion']:.2g} (where the loss falls fastest; "
                               f"the rate field has it now).", "success")
        elif run.record:
            record = run.record
            stopped = " (stopped early; the best epoch was kept)" if record.get("stopped") else ""
            mapped = (f" Its layer “fine-tuned {record['id']}” is last in the Label tab's ←/→ order"
                      + (" and its predictions are the ones shown there." if record["layer"].get("predictions")
                         else ".") if record.get("layer") else "")
            self._message.show(f"{record['id'].replace('-', ' ')} is ready{stopped}: "
                               f"{headline(record)}.{mapped}", "success")
            self._show_models()
            for hook in self.on_model:
                hook()
        self._progress_text.object = ""

    # -- finished models -------------------------------------------------------------------
    def _show_models(self) -> None:
        records = self.store.records()
        if not records:
            self._results[:] = []
            self._models[:] = [pn.pane.HTML("<small>No model yet: Fine-tune makes the first.</small>")]
            return
        current = self.store.current_id
        shown = next(r for r in records if r["id"] == current)
        if shown.get("history") and (self._shown_run is None or self._shown_run.kind != "fine_tune"
                                     or not self._shown_run.running):
            self._show_history(shown["history"], shown)
        self._results[:] = ModelReport(self.store, shown).panels()
        choose = pn.widgets.Select(name="Current model", options=[r["id"] for r in reversed(records)], value=current,
                                   width=200)
        choose.param.watch(lambda event: self._run(self._on_current, event.new), "value")
        download = pn.widgets.FileDownload(callback=lambda: io.BytesIO(self.store.model_path(current).read_bytes()),
                                           filename=f"{Path(self.project.folder).name}-{current}.pt",
                                           label=f"Export {current} (download)", button_type="success", width=260)
        rows = [[r["id"], r["created"], r["task"], f"{r['labels']:,}", headline(r),
                 "current" if r["id"] == current else ""] for r in reversed(records)]
        table = pn.pane.HTML(html_table(["model", "made", "task", "labels", "validation", ""], rows,
                                        **{"class": "labeler-models"}), sizing_mode="stretch_width")
        saved = esc(self.store.model_path(current))
        self._models[:] = [pn.pane.HTML("<h3>Models</h3>"), pn.Row(choose, download), table,
                           pn.pane.HTML(f"<small>Saved as {saved}; it loads with <code>labeler predict</code> and "
                                        f"<code>engine.load_exported</code>.</small>", sizing_mode="stretch_width")]

    def _on_current(self, model_id: str) -> None:
        if model_id and model_id != self.store.current_id:
            self.store.set_current(model_id)
            predicted = make_predictions_latest(self.project.store, model_id)
            self._show_models()
            self._message.show(f"{model_id} is the current model" + (
                ": the Label tab shows its layer and its predictions." if predicted else "."), "info")
            for hook in self.on_model:
                hook()

    def show(self) -> None:
        """Called when the tab comes into sight: the label count, a training another tab started, the models."""
        self._show_source_fields()
        run = current_training(self.project)
        if run is not None and run is not self._shown_run and run.running:
            self._follow(run)
        elif self._shown_run is None or not self._shown_run.running:
            self._show_models()

    # -- notebook --------------------------------------------------------------------------
    def _for_notebook(self) -> None:
        self._layout.param.update(sizing_mode="stretch_width", height=NOTEBOOK_HEIGHT)

    def __panel__(self):
        return self._layout


CLASS_WEIGHTS = {"none: every pixel alike": "none", "sqrt: rare classes weigh more": "sqrt",  # engine.losses
                 "median: rare classes weigh much more": "median"}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _learning_rate(text: str) -> float | None:
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        return float(text)
    except ValueError:
        raise TrainingError(f"The learning rate {text!r} is not a number: type e.g. 2e-3, or auto.") from None


def _optional_int(text: str, what: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise TrainingError(f"The {what} {text!r} is not a whole number.") from None

