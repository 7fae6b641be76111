"""Keyboard shortcuts: one table of bindings per view, and a tiny JS component that forwards keys.

A view's `KeyTable` is the one place its keys are defined: the component forwards exactly the
table's keys from the page, the view's handler dispatches each key through the same table to the
method it names, and the Shortcuts card is written from it. A key added to a table is forwarded,
handled and documented at once.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import param
from panel.custom import JSComponent
from panel.io.state import state as panel_state

from ._panel import esc, with_document_lock

DIGITS = tuple("123456789")
# every Shortcuts alive in this process, for `shortcuts_state` (a served app's state on SIGUSR1)
_LIVE: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class Binding:
    """Keys, how the help card writes them, what they do, and the view's method that does it."""

    keys: tuple[str, ...]          # what the page sends: e.key names, or "ctrl+z" / "ctrl+shift+z"
    shown: str                     # the keys as the help card writes them
    does: str                      # what they do, for the help card
    action: str | None = None      # the view's method, called with the key; None: help only (mouse)
    focus: str | None = None       # instead of forwarding: focus the text field with this placeholder


class KeyTable:
    """The bindings of one view."""

    def __init__(self, *bindings: Binding):
        self.bindings = bindings
        self._by_key = {key: binding for binding in bindings if binding.action for key in binding.keys}

    @property
    def keys(self) -> list[str]:
        """The keys the page forwards to the view."""
        return list(self._by_key)

    @property
    def focus_keys(self) -> dict[str, str]:
        """Key -> placeholder of the text field the key focuses (handled in the page)."""
        return {key: binding.focus for binding in self.bindings if binding.focus for key in binding.keys}

    def dispatch(self, view, key: str) -> bool:
        """Call the view's method bound to `key` with the key; False when the key is not bound."""
        binding = self._by_key.get(key)
        if binding is None:
            return False
        getattr(view, binding.action)(key)
        return True

    def help_html(self) -> str:
        rows = "".join(f"<tr><td><kbd>{esc(b.shown)}</kbd></td><td>{esc(b.does)}</td></tr>" for b in self.bindings)
        return f"<table>{rows}</table>"


class Shortcuts(JSComponent):
    """Forwards the keys of a view's table from the page to Python (never while typing in a field).

    Only while it is displayed: an app with several tabs gives each tab its own Shortcuts, and
    the keys go to the tab in view. `scope` says when keys are the app's:

    - "page" (a served app: the page is the app): every key pressed on the page.
    - "focus" (a notebook, where the page is Jupyter's): only after a click (or Tab) into the app,
      until a click elsewhere. Those keys never reach Jupyter: they are taken in the capture phase,
      before Jupyter's own shortcuts see them (arrows would otherwise also move the active cell), and
      the app's root is marked `data-lm-suppress-shortcuts`, so Lumino leaves typing in the app's
      fields alone. Shift+Enter and other keys with Ctrl, Alt or Cmd still run cells.
    """

    pressed = param.List(default=[], doc="the latest shortcuts pressed, as [counter, key] pairs (the last 50): "
                                         "the page may send several presses at once, and none is lost")
    keys = param.List(default=[], item_type=str, doc="the keys forwarded (e.key names, 'ctrl+z', 'ctrl+shift+z')")
    focus_keys = param.Dict(default={}, doc="key -> placeholder of a text field that the key focuses (not forwarded)")
    blur_fields = param.List(default=[], item_type=str, doc="placeholders of text fields that give the keys back "
                                                               "after Enter or Escape (as the fields keys focus do)")
    view = param.String(default="", doc="which view's keys these are (a served app has a Shortcuts per tab): for "
                                        "the state report and the page's element (data-view)")
    scope = param.Selector(default="page", objects=["page", "focus"],
                           doc="page: keys anywhere on the page; focus: only while the app has the focus (notebooks)")

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

    // the app's root: the outermost element this component sits in, across shadow roots
    function appRoot(el) {
      let node = el;
      while (node.getRootNode() !== document && node.getRootNode().host) { node = node.getRootNode().host; }
      return node;
    }

    function keyName(e) {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') { return e.shiftKey ? 'ctrl+shift+z' : 'ctrl+z'; }
      return (e.ctrlKey || e.metaKey || e.altKey) ? null : e.key;
    }

    export function render({ model }) {
      let recent = model.pressed.slice(-50);
      let count = Math.max(0, ...recent.map((pair) => pair[0]));   // a view shown again counts on
      const el = document.createElement('span');
      el.className = 'labeler-shortcuts';
      el.dataset.view = model.view;        // which view's keys (a served app has one per tab)
      // a hidden tab's shortcuts stay quiet (Bokeh hides inactive tabs with visibility: hidden)
      const shown = () => el.isConnected && getComputedStyle(el).visibility === 'visible' &&
                          (!el.checkVisibility || el.checkVisibility());
      const focusScope = model.scope === 'focus';
      let active = !focusScope;
      const inField = (path) => path.some((node) => node && (node.tagName === 'INPUT' || node.tagName === 'TEXTAREA' ||
                                                             node.isContentEditable));
      const send = (key) => {
        count += 1;
        recent = [...recent.slice(-49), [count, key]];
        model.pressed = recent;
      };
      const handler = (e) => {
        if (!active || !shown()) { return; }
        const path = e.composedPath ? e.composedPath() : [e.target];
        if (inField(path)) { return; }
        const key = keyName(e);
        const placeholder = key === null ? undefined : model.focus_keys[key];
        if (placeholder !== undefined) {
          const field = findField(appRoot(el), placeholder) || findField(document, placeholder);
          if (field) { e.preventDefault(); e.stopImmediatePropagation(); field.focus(); }
          return;
        }
        const ours = key !== null && model.keys.includes(key);
        if (ours) { send(key); }
        // in a notebook, every plain key goes to the app while it has the focus (Jupyter would act on it
        // too: arrows move the active cell, letters insert cells), but Shift+Enter still runs a cell
        const plain = key !== null && !(e.key === 'Enter' && e.shiftKey);
        if (ours || (focusScope && plain)) {
          e.preventDefault();
          if (focusScope) { e.stopImmediatePropagation(); }
        }
      };
      // Enter (after the field has sent its value) or Escape in a field a key focused: back to the shortcuts
      const leave = (e) => {
        if (e.key !== 'Enter' && e.key !== 'Escape') { return; }
        const fields = [...Object.values(model.focus_keys), ...model.blur_fields];
        const path = e.composedPath ? e.composedPath() : [e.target];
        const field = path.find((node) => node && node.tagName === 'INPUT' && fields.includes(node.placeholder));
        if (field) { field.blur(); }
      };
      // a click into the app gives it the keys, a click elsewhere gives them back; focus moving into the
      // app (Tab) gives it the keys too, but focus moving out does not take them: Jupyter moves the focus
      // to its notebook right after a click into an output
      const inside = (e) => (e.composedPath ? e.composedPath() : [e.target]).includes(appRoot(el));
      const mark = () => {
        const root = appRoot(el);
        if (active) { root.dataset.labelerActive = 'true'; } else { delete root.dataset.labelerActive; }
      };
      const track = (e) => { active = inside(e); mark(); };
      const enter = (e) => { if (inside(e)) { active = true; mark(); } };
      // capture on window: before Jupyter's document-level handlers see the key
      const target = focusScope ? window : document;
      target.addEventListener('keydown', handler, focusScope);
      document.addEventListener('keyup', leave);
      if (focusScope) {
        window.addEventListener('pointerdown', track, true);
        window.addEventListener('focusin', enter, true);
        // Lumino (JupyterLab, Notebook 7) skips shortcuts for keys pressed inside this element
        requestAnimationFrame(() => appRoot(el).setAttribute('data-lm-suppress-shortcuts', 'true'));
      }
      model.on('remove', () => {
        target.removeEventListener('keydown', handler, focusScope);
        document.removeEventListener('keyup', leave);
        window.removeEventListener('pointerdown', track, true);
        window.removeEventListener('focusin', enter, true);
      });
      return el;
    }
    """

    @classmethod
    def for_table(cls, table: KeyTable, **params) -> Shortcuts:
        """The component forwarding `table`'s keys (and focusing its fields)."""
        return cls(keys=table.keys, focus_keys=table.focus_keys, **params)

    def __init__(self, **params):
        super().__init__(**params)
        self._handled = max((count for count, _ in self.pressed), default=0)
        self._ran, self._scheduled_on = 0, "nothing yet"      # for shortcuts_state
        _LIVE.add(self)

    def on_key(self, callback) -> None:
        """Call `callback(key)` for every shortcut pressed, in order, on the document's next tick
        (Bokeh models may only change under the document lock)."""
        def run(key):
            self._ran += 1
            callback(key)

        def handle(event):
            for count, key in event.new:
                if count > self._handled:
                    self._handled = count
                    self._scheduled_on = _doc_state(panel_state.curdoc)
                    with_document_lock(lambda key=key: run(key))
        self.param.watch(handle, "pressed")

    def press(self, *keys: str) -> None:
        """What the page sends when `keys` are pressed (for tests and scripts)."""
        counter = max((count for count, _ in self.pressed), default=0)
        self.pressed = [*self.pressed[-49:], *([counter + i, key] for i, key in enumerate(keys, start=1))][-50:]


def _top(pressed) -> int:
    return max((pair[0] for pair in pressed or ()), default=0)


def _doc_state(doc) -> str:
    """A document in words: its id, and whether its session is open, destroyed or absent."""
    if doc is None:
        return "no document"
    context = getattr(doc, "session_context", None)
    session = "no session" if context is None else ("destroyed" if getattr(context, "destroyed", False) else "open")
    callbacks = getattr(getattr(doc, "callbacks", None), "session_callbacks", ())
    return f"doc {id(doc)} ({session}, {len(callbacks)} session callbacks)"


def shortcuts_state() -> list[str]:
    """Where each live Shortcuts' keys stand, in words: the count the Python side has handled and holds, the
    changes Panel has received but not yet applied, and for each of its Bokeh models the count the document
    holds and whether that document holds back its events (a key that never arrives stops at one of these)."""
    lines = []
    for shortcuts in list(_LIVE):
        said = [f"{shortcuts.view or 'keys'}: handled {shortcuts._handled}, ran {shortcuts._ran}, param "
                f"{_top(shortcuts.pressed)}, panel pending {sorted(getattr(shortcuts, '_events', {}))}, the last "
                f"scheduled on {shortcuts._scheduled_on}"]
        for model, _ in list(shortcuts._models.values()):
            doc = model.document
            callbacks = getattr(doc, "callbacks", None)
            held = list(getattr(callbacks, "_held_events", []) or [])
            said.append(f"model {_top(getattr(model.data, 'pressed', []))} in {_doc_state(doc)} "
                        f"(hold {getattr(callbacks, 'hold_value', None)}, {len(held)} held "
                        f"{[type(event).__name__ for event in held[:5]]}, "
                        f"change callbacks {len(panel_state._change_callbacks.get(doc, {})) if doc else None})")
        lines.append("; ".join(said))
    return lines
