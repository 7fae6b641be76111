"""Keyboard shortcuts: a tiny JS component that forwards key presses on the page to Python."""
from __future__ import annotations

import param
from panel.custom import JSComponent

from ._ui import with_document_lock

SHORTCUTS = (
    ("← / →", "previous / next layer"),
    ("↑ / ↓", "previous / next view (projection)"),
    ("1 … 9", "label the selection with the label of that number; over an image in the review, that image alone"),
    ("s", "find similar to the selection"),
    ("t", "train a model on the labels so far"),
    ("Esc", "clear the selection"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+Shift+Z", "redo"),
    ("mouse drag", "lasso select (box select in the toolbar); wheel zooms, toolbar pans"),
)
LABEL_KEYS = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Escape", "s", "t", "ctrl+z", "ctrl+shift+z",
              "1", "2", "3", "4", "5", "6", "7", "8", "9"]

# the cleaning view (labeler/clean_view.py): one item has the focus; every decision applies to it
CLEAN_SHORTCUTS = (
    ("← / →", "previous / next item"),
    ("↑ / ↓", "item above / below"),
    ("PgUp / PgDn", "previous / next page"),
    ("[ / ]", "previous / next queue"),
    ("1 … 9", "relabel the item with the label of that number"),
    ("r", "type a label (then Enter) to relabel the item"),
    ("a", "accept the suggestion (label; duplicates: keep or exclude as suggested)"),
    ("k", "keep the item as it is"),
    ("x or Delete", "exclude the item (its file is never moved or deleted)"),
    ("h", "hide / show decided items"),
    ("Ctrl+Z", "undo the last decision"),
    ("Ctrl+Shift+Z", "redo"),
)
CLEAN_KEYS = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "[", "]", "a", "k", "x",
              "Delete", "h", "ctrl+z", "ctrl+shift+z", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


class Shortcuts(JSComponent):
    """Listens for keys anywhere on the page (not while typing in a field) and sets `event`.

    Only while it is displayed: an app with several tabs gives each tab its own Shortcuts, and
    the keys go to the tab in view.
    """

    pressed = param.List(default=[], doc="the latest shortcuts pressed, as [counter, key] pairs (the last 50): "
                                         "the page may send several presses at once, and none is lost")
    keys = param.List(default=LABEL_KEYS, item_type=str, doc="the keys forwarded (e.key names, 'ctrl+z', 'ctrl+shift+z')")
    focus_keys = param.Dict(default={}, doc="key -> placeholder of a text field that the key focuses (not forwarded)")

    _esm = """
    function findField(root, placeholder) {
      for (const el of root.querySelectorAll('*')) {
        if (el.tagName === 'INPUT' && el.placeholder === placeholder) { return el; }
        if (el.shadowRoot) {
          const found = findField(el.shadowRoot, placeholder);
          if (found) { return found; }
        }
      }
      return null;
    }

    export function render({ model }) {
      let recent = model.pressed.slice(-50);
      let count = Math.max(0, ...recent.map((pair) => pair[0]));   // a view shown again counts on
      const el = document.createElement('span');
      el.className = 'labeler-shortcuts';
      // a hidden tab's shortcuts stay quiet (Bokeh hides inactive tabs with visibility: hidden)
      const shown = () => el.isConnected && getComputedStyle(el).visibility === 'visible' &&
                          (!el.checkVisibility || el.checkVisibility());
      const handler = (e) => {
        if (!shown()) { return; }
        const path = e.composedPath ? e.composedPath() : [e.target];
        if (path.some((node) => node && (node.tagName === 'INPUT' || node.tagName === 'TEXTAREA' || node.isContentEditable))) {
          return;
        }
        let key = e.key;
        if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === 'z') {
          key = e.shiftKey ? 'ctrl+shift+z' : 'ctrl+z';
        } else if (e.ctrlKey || e.metaKey || e.altKey) {
          return;
        }
        const placeholder = model.focus_keys[key];
        if (placeholder !== undefined) {
          const field = findField(document, placeholder);
          if (field) { e.preventDefault(); field.focus(); }
          return;
        }
        if (!model.keys.includes(key)) { return; }
        e.preventDefault();
        count += 1;
        recent = [...recent.slice(-49), [count, key]];
        model.pressed = recent;
      };
      // Enter (after the field has sent its value) or Escape in a field a key focused: back to the shortcuts
      const leave = (e) => {
        if (e.key !== 'Enter' && e.key !== 'Escape') { return; }
        const fields = Object.values(model.focus_keys);
        const path = e.composedPath ? e.composedPath() : [e.target];
        const field = path.find((node) => node && node.tagName === 'INPUT' && fields.includes(node.placeholder));
        if (field) { field.blur(); }
      };
      document.addEventListener('keydown', handler);
      document.addEventListener('keyup', leave);
      model.on('remove', () => {
        document.removeEventListener('keydown', handler);
        document.removeEventListener('keyup', leave);
      });
      return el;
    }
    """

    def __init__(self, **params):
        super().__init__(**params)
        self._handled = max((count for count, _ in self.pressed), default=0)

    def on_key(self, callback) -> None:
        """Call `callback(key)` for every shortcut pressed, in order, on the document's next tick
        (Bokeh models may only change under the document lock)."""
        def handle(event):
            for count, key in event.new:
                if count > self._handled:
                    self._handled = count
                    with_document_lock(lambda key=key: callback(key))
        self.param.watch(handle, "pressed")

    def press(self, *keys: str) -> None:
        """What the page sends when `keys` are pressed (for tests and scripts)."""
        counter = max((count for count, _ in self.pressed), default=0)
        self.pressed = [*self.pressed[-49:], *([counter + i, key] for i, key in enumerate(keys, start=1))][-50:]
