"""The Label tab's keys: one table for the handler, the help card and the tests (`keys.KeyTable`); each binding
names the `LabelApp` method that handles it."""
from __future__ import annotations

from .keys import DIGITS, Binding, KeyTable

KEYS = KeyTable(
    Binding(("ArrowLeft", "ArrowRight"), "← / →", "previous / next layer", "_key_layer"),
    Binding(("ArrowUp", "ArrowDown"), "↑ / ↓", "previous / next view (projection)", "_key_view"),
    Binding(DIGITS, "1 … 9", "label the selection with the label of that number; over an image in the review, "
                             "that image alone", "_key_label"),
    Binding(("s",), "s", "find similar to the selection", "_key_similar"),
    Binding(("t",), "t", "train a model on the labels so far", "_key_train"),
    Binding(("g",), "g", "show / hide where the current model looked (heatmaps in preview and grid)", "_key_heatmaps"),
    Binding(("Escape",), "Esc", "clear the selection", "_key_clear"),
    Binding(("ctrl+z",), "Ctrl+Z", "undo", "_key_undo"),
    Binding(("ctrl+shift+z",), "Ctrl+Shift+Z", "redo", "_key_redo"),
    Binding((), "mouse drag", "lasso select (box select in the toolbar); wheel zooms, toolbar pans"),
)
