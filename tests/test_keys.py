"""One key table per view: what the page forwards, what the view handles and what the help card says agree."""
import pytest

from labeler.ui import app, clean_view
from labeler.ui.keys import Binding, KeyTable, Shortcuts, shortcuts_state


@pytest.mark.parametrize("view, table", [(app.LabelApp, app.KEYS), (clean_view.CleanView, clean_view.KEYS)])
def test_every_bound_key_names_a_method_of_its_view_and_is_forwarded_and_documented(view, table):
    for binding in table.bindings:
        if binding.action:
            assert callable(getattr(view, binding.action, None)), f"{view.__name__} has no {binding.action}"
    shortcuts = Shortcuts.for_table(table)
    assert shortcuts.keys == table.keys and shortcuts.focus_keys == table.focus_keys
    help_card = table.help_html()
    assert all(binding.does.split(";")[0] in help_card for binding in table.bindings)


def test_dispatch_calls_the_bound_method_with_the_key_and_ignores_others():
    calls = []

    class View:
        def _go(self, key):
            calls.append(key)

    table = KeyTable(Binding(("a", "b"), "a / b", "go", "_go"), Binding(("r",), "r", "type", focus="name…"),
                     Binding((), "drag", "lasso"))
    assert table.keys == ["a", "b"] and table.focus_keys == {"r": "name…"}
    assert table.dispatch(View(), "b") and not table.dispatch(View(), "r") and not table.dispatch(View(), "z")
    assert calls == ["b"]


def test_the_help_card_shows_names_as_text():
    table = KeyTable(Binding(("x",), "<b>x</b>", "<img src=x>", "_x"))
    assert "<b>" not in table.help_html() and "&lt;img src=x&gt;" in table.help_html()


def test_the_state_of_the_shortcuts_counts_the_keys_handled_and_the_actions_run():
    """What `kill -USR1` on a served app logs (labeler/ui/serve.py): per Shortcuts, the keys received, handled and
    whose action ran, so a key that is lost says where."""
    shortcuts = Shortcuts(keys=["ArrowRight"])
    seen = []
    shortcuts.on_key(seen.append)
    shortcuts.press("ArrowRight", "ArrowRight")
    assert seen == ["ArrowRight", "ArrowRight"]
    line = next(line for line in shortcuts_state() if "handled 2," in line)
    assert "ran 2," in line and "param 2," in line and "no document" in line
