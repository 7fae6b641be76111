"""Two tabs on one project (two Sessions, each on its own Project of the same folder, as `labeler serve` gives
every browser tab): each sees the other's labels at its next action and says so; undo and redo stay in the tab."""
import pytest

from engine import embed
from labeler.project import Project
from labeler.session import Session
from labeler.store import LabelStore

EMBED = dict(backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)


@pytest.fixture
def two_tabs(image_folder):
    first = Project(image_folder, backbone="resnet18", size=32, actor="ana@lab")
    embed(first.workspace, **EMBED)
    second = Project(image_folder, backbone="resnet18", size=32, actor="ana@lab")
    yield Session(first), Session(second)
    first.close()
    second.close()


def _label(session: Session, ids, name: str) -> int:
    session.select(ids)
    return session.label_review(name)


def test_a_tab_says_what_another_tab_labeled_since_its_last_action_once(two_tabs):
    a, b = two_tabs
    rows = [int(i) for i in a.rows]
    assert b.news_from_other_tabs() == ""
    _label(a, rows[:3], "cat")
    _label(a, rows[3:5], "dog")
    assert b.news_from_other_tabs() == "Another tab labeled 5 images since your last action (shown here now)."
    assert b.news_from_other_tabs() == ""                        # said once
    assert b.label_counts() == {"cat": 3, "dog": 2}              # and the counts (buttons, map) show them
    _label(b, rows[5:6], "cat")
    assert a.news_from_other_tabs("Labeled 1 image “cat”.") == (
        "Labeled 1 image “cat”. Another tab labeled 1 image since your last action (shown here now).")
    assert b.news_from_other_tabs() == ""                        # a tab's own action is no news to it


def test_the_sentence_of_the_last_news_is_replaced_not_repeated(two_tabs):
    a, b = two_tabs
    rows = [int(i) for i in a.rows]
    _label(a, rows[:2], "cat")
    said = b.news_from_other_tabs("Undid: label 1 item 'x'")
    _label(a, rows[2:3], "cat")
    assert b.news_from_other_tabs(said) == (
        "Undid: label 1 item 'x'. Another tab labeled 1 image since your last action (shown here now).")


def test_undo_in_a_tab_takes_back_its_own_action_not_the_later_one_of_another_tab(two_tabs):
    a, b = two_tabs
    rows = [int(i) for i in a.rows]
    _label(b, rows[:3], "mine")
    _label(a, rows[3:6], "theirs")                               # another tab, later
    assert b.undo() == "label 3 items 'mine'"
    assert b.label_counts() == {"theirs": 3}
    assert b.undo() is None and not b.can_undo                   # nothing of b's left; a's stays
    assert a.can_undo and not a.can_redo and b.can_redo
    _label(a, rows[6:7], "theirs")                               # a's new action keeps b's redo
    assert b.redo() == "label 3 items 'mine'" and b.label_counts()["mine"] == 3
    assert a.news_from_other_tabs() == ("Another tab labeled 3 images since your last action (shown here now).")


def test_a_tab_told_that_another_undid_an_action(two_tabs):
    a, b = two_tabs
    rows = [int(i) for i in a.rows]
    _label(a, rows[:3], "cat")
    b.news_from_other_tabs()
    a.undo()
    assert b.news_from_other_tabs() == "Another tab undid 1 action since your last action (shown here now)."


def test_a_page_opened_later_undoes_what_was_done_before_it_opened_and_says_so(image_folder, two_tabs):
    a, _ = two_tabs
    rows = [int(i) for i in a.rows]
    _label(a, rows[:3], "cat")
    with Project(image_folder, backbone="resnet18", size=32, actor="ana@lab") as reloaded:
        page = Session(reloaded)
        assert page.can_undo and page.undo() == "label 3 items 'cat' (made before this tab opened)"
        assert page.redo() == "label 3 items 'cat'"
        _label(a, rows[3:4], "dog")                              # made while the page was open: not its to undo
        assert page.undo() == "label 3 items 'cat' (made before this tab opened)"


def test_labels_made_in_a_tab_keep_the_persons_name_and_the_history_names_the_tab(two_tabs):
    a, b = two_tabs
    _label(a, [int(a.rows[0])], "cat")
    assert set(a.project.labels["actor"]) == {"ana@lab"}
    event = a.store.history(1)[0]
    assert event.actor.startswith("ana@lab · tab ") and event.actor == a.store.origin != b.store.origin


def test_a_store_that_is_no_tab_undoes_as_before(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="ana") as store, LabelStore(path, actor="bob") as other:
        store.create_label("cat")
        other.create_label("dog")
        assert store.undo() == "create label 'dog'"                 # any actor's latest
        assert store.undo_own() == "create label 'cat'"             # its own, then nothing newer than its opening
        assert store.undo_own() is None
