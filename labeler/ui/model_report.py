"""What one finished model's record shows in the Model tab: its metrics with 95% intervals beside the image-blind
baseline (and the test-time augmentations' and held-out test's columns), the confusion matrix and the most-confused
pairs, and its top losses as tiles that each toggle a Grad-CAM heatmap."""
from __future__ import annotations

import panel as pn

from labeler.model_store import ModelStore

from ._panel import esc, html_table
from .composite import to_data_uri

TILE_PX = 150
VIEW_HEADS = {"metrics_tta": "with flips", "metrics_tta_zoom": "with flips and zoom"}   # validation's columns
VIEW_NAMES = {"none": "image alone", "flips": "flips", "zoom": "flips and zoom"}


class ModelReport:
    """What one finished model's record shows: metrics, confusion, top losses with heatmap toggles."""

    def __init__(self, store: ModelStore, record: dict):
        self.store, self.record = store, record

    def panels(self) -> list:
        record, spec = self.record, self.record.get("spec") or {}
        unlabeled = (f" (and the unlabeled images, pseudo-labeled at &ge; {float(spec['unlabeled_threshold']):g})"
                     if spec.get("unlabeled") else "")
        weighed = f", {esc(spec['class_weights'])} class weights" if spec.get("class_weights") else ""
        parts = [pn.pane.HTML(f"<h3>{esc(record['id'])}: {esc(record['task'])}, {record['train']:,} train{unlabeled} / "
                              f"{record['valid']:,} validation images, {esc(record['backbone'])} at "
                              f"{record['size']} px{weighed}</h3>", sizing_mode="stretch_width"),
                 pn.pane.HTML(self._metrics_table(), sizing_mode="stretch_width")]
        if record.get("confusion_picture"):
            picture = self.store.file(record["id"], record["confusion_picture"])
            pairs = [[given, predicted, count] for given, predicted, count in record.get("most_confused", [])]
            parts.append(pn.Row(pn.pane.PNG(str(picture), width=420, name="confusion"),
                                pn.pane.HTML("<b>Most confused</b>" + html_table(["given", "predicted", "times"],
                                                                                 pairs), width=320)))
        if record.get("top_losses"):
            parts.append(pn.pane.HTML("<b>Top losses</b> (validation images the model got most wrong; "
                                      "toggle a tile's heatmap to see where it looked)", sizing_mode="stretch_width"))
            parts.append(pn.FlexBox(*(self._tile(row) for row in record["top_losses"]), sizing_mode="stretch_width"))
        return parts

    def _metrics_table(self) -> str:
        from engine.tta import VIEWS, chosen
        record = self.record
        intervals, baseline, test = record.get("intervals", {}), record.get("baseline") or {}, record.get("test") or {}
        views = [key for key in VIEW_HEADS if record.get(key)]      # the test-time augmentations this task took
        rows = []
        for name, value in record["metrics"].items():
            low_high = intervals.get(name)
            interval = f"{fmt(low_high[0])} – {fmt(low_high[1])}" if low_high else ""
            row = [name.replace("_", " "), fmt(value), interval,
                   *(fmt(record[key][name]) if name in record[key] else "" for key in views)]
            if test:     # held out from every choice: the figures to report
                scored, low_high = test["metrics"].get(name), test["intervals"].get(name)
                row.append(("" if scored is None else fmt(scored))
                           + (f" ({fmt(low_high[0])} – {fmt(low_high[1])})" if low_high else ""))
                best = chosen(record, name)
                figure = (test.get(VIEWS[best]) or {}).get(name) if best else None
                row.append("" if figure is None else f"{fmt(figure)} ({VIEW_NAMES[best]})")
            rows.append([*row, fmt(baseline[name]) if name in baseline else ""])
        tested = [f"test, {test['images']:,} held-out images (95% interval)",
                  "test, with the views best on validation"] if test else []
        heads = ["metric", "validation", "95% interval", *(VIEW_HEADS[key] for key in views), *tested,
                 "image-blind baseline"]
        return html_table(heads, rows, **{"class": "labeler-metrics"})

    def _tile(self, row: dict):
        files = (self.store.file(self.record["id"], row[kind]) for kind in ("picture", "heatmap"))
        plain, heat = (to_data_uri(path.read_bytes()) for path in files)
        image = pn.pane.HTML(_img(plain, row["item"]), width=TILE_PX + 6, height=TILE_PX + 6, margin=0)
        toggle = pn.widgets.Toggle(name="Heatmap", value=False, width=TILE_PX, button_type="light")
        toggle.param.watch(lambda event: setattr(image, "object", _img(heat if event.new else plain, row["item"])),
                           "value")
        probability = f" ({row['probability']:.2f})" if row.get("probability") is not None else ""
        loss = f"{row['loss']:.3f}" if row.get("loss") is not None else "—"
        caption = (f"<div class='caption' style='width:{TILE_PX}px;font-size:11px;overflow-wrap:anywhere'>"
                   f"{esc(row['item'])}<br>given: {esc(row['given'])}<br>predicted: {esc(row['predicted'])}"
                   f"{probability}<br>loss {loss}</div>")
        return pn.Column(image, pn.pane.HTML(caption, margin=(0, 3)), toggle, width=TILE_PX + 12,
                         css_classes=["labeler-top-loss"])


def _img(uri: str, name: str) -> str:
    return (f'<img src="{uri}" alt="{esc(name)}" width="{TILE_PX}" height="{TILE_PX}" '
            f'style="object-fit:contain;image-rendering:pixelated">')


def headline(record: dict) -> str:
    metrics, intervals = record.get("metrics", {}), record.get("intervals", {})
    for name in ("accuracy", "mAP", "mean_iou", "pixel_accuracy", "point_error_px"):
        if name in metrics:
            low_high = intervals.get(name)
            span = f" (95%: {fmt(low_high[0])}–{fmt(low_high[1])})" if low_high else ""
            return f"{name.replace('_', ' ')} {fmt(metrics[name])}{span}"
    return f"validation loss {fmt(metrics.get('valid_loss', float('nan')))}"


def fmt(value) -> str:
    return "—" if value is None or value != value else f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
