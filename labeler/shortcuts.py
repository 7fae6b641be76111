"""Keyboard shortcuts: a tiny JS component that forwards key presses on the page to Python."""
from __future__ import annotations

import param
from panel.custom import JSComponent

SHORTCUTS = (
    ("← / →", "previous / next layer"),
    ("↑ / ↓", "previous / next view (projection)"),
    ("1 … 9", "label the selection with the label of that number"),
    ("s", "find similar to the selection"),
    ("t", "train a model on the labels so far"),
    ("Esc", "clear the selection"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+Shift+Z", "redo"),
    ("mouse drag", "lasso select (box select in the toolbar); wheel zooms, toolbar pans"),
)


class Shortcuts(JSComponent):
    """Listens for keys anywhere on the page (not while typing in a field) and sets `event`."""

    event = param.String(default="", doc="'<key>|<counter>' of the last shortcut pressed")

    _esm = """
    export function render({ model }) {
      let count = 0;
      const handler = (e) => {
        const path = e.composedPath ? e.composedPath() : [e.target];
        if (path.some((el) => el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.isContentEditable))) {
          return;
        }
        let key = e.key;
        if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === 'z') {
          key = e.shiftKey ? 'ctrl+shift+z' : 'ctrl+z';
        } else if (e.ctrlKey || e.metaKey || e.altKey) {
          return;
        }
        const known = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Escape', 's', 't',
                       'ctrl+z', 'ctrl+shift+z', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
        if (!known.includes(key)) { return; }
        e.preventDefault();
        count += 1;
        model.event = key + '|' + count;
      };
      document.addEventListener('keydown', handler);
      model.on('remove', () => document.removeEventListener('keydown', handler));
      const el = document.createElement('span');
      el.className = 'labeler-shortcuts';
      return el;
    }
    """
