"""The Label tab's keys: one table for the handler, the help card and the tests (`keys.KeyTable`); each binding
names the method that handles it, here in `LabelKeyActions`, a part of `LabelApp`."""
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


class LabelKeyActions:
    """What the Label tab's keys do, as `LabelApp` methods (its actions, under their key's name)."""

    def _key_layer(self, key: str) -> None:
        self._step_layer(-1 if key == "ArrowLeft" else 1)

    def _key_view(self, key: str) -> None:
        self._step_view(-1 if key == "ArrowUp" else 1)

    def _key_label(self, key: str) -> None:
        name = self.session.label_for_key(int(key))
        if name is None:
            return
        hovered = self.grid.hovered
        if hovered is not None and hovered in self.session.review.ids:
            self._label_one(hovered, name)
        else:
            self._label(name)

    def _key_similar(self, key: str) -> None:
        self._on_similar()

    def _key_train(self, key: str) -> None:
        self._on_train()

    def _key_heatmaps(self, key: str) -> None:
        self.heatmaps = not self.heatmaps

    def _key_clear(self, key: str) -> None:
        self._set_selection([])

    def _key_undo(self, key: str) -> None:
        self._on_undo()

    def _key_redo(self, key: str) -> None:
        self._on_redo()
