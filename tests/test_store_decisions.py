"""Cleaning decisions in the label store: keep / relabel / exclude, one undoable event each, kept on disk."""
import sqlite3
from contextlib import closing

import pytest

from labeler.io import export_cleaned
from labeler.project import Project
from labeler.store import LabelStore, LabelStoreError


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite", actor="me") as opened:
        opened.assign([0, 1, 2], "cat")
        opened.assign([3, 4], "dog")
        yield opened


def decided(store, queue=None):
    table = store.decisions(queue)
    return {(row.item_id, row.queue): (row.decision, row.label) for row in table.itertuples()}


def labels_of(store):
    table = store.assignments()
    return dict(zip(table["item_id"], table["label"]))


def test_relabel_assigns_a_human_label_and_records_the_decision_in_one_event(store):
    event = store.decide([1], "label_issues", "relabel", "dog")
    assert labels_of(store)[1] == "dog"
    assert store.assignments().set_index("item_id").loc[1, "source"] == "human"
    assert decided(store) == {(1, "label_issues"): ("relabel", "dog")}
    assert store.event(event).description == "relabel 1 item 'dog' (label_issues)"
    assert store.undo() == "relabel 1 item 'dog' (label_issues)"
    assert labels_of(store)[1] == "cat" and decided(store) == {}
    store.redo()
    assert labels_of(store)[1] == "dog" and decided(store) == {(1, "label_issues"): ("relabel", "dog")}


def test_exclude_sets_the_item_aside_keeps_its_label_and_undoes_both(store):
    store.decide([2], "duplicates", "exclude")
    assert store.excluded() == {2} and labels_of(store)[2] == "cat"
    assert decided(store, "duplicates") == {(2, "duplicates"): ("exclude", "")}
    store.undo()
    assert store.excluded() == set() and decided(store) == {}


def test_keep_is_recorded_per_queue_and_is_undoable(store):
    store.decide([0, 3], "top_losses", "keep")
    assert decided(store) == {(0, "top_losses"): ("keep", ""), (3, "top_losses"): ("keep", "")}
    assert decided(store, "label_issues") == {}
    assert labels_of(store) == {0: "cat", 1: "cat", 2: "cat", 3: "dog", 4: "dog"}
    assert store.undo() == "keep 2 items (top_losses)"
    assert decided(store) == {}


def test_a_new_decision_replaces_the_one_in_the_same_queue_only(store):
    store.decide([2], "label_issues", "exclude")
    store.decide([2], "top_losses", "keep")
    assert decided(store) == {(2, "label_issues"): ("exclude", ""), (2, "top_losses"): ("keep", "")}
    store.decide([2], "label_issues", "relabel", "dog")
    assert decided(store) == {(2, "label_issues"): ("relabel", "dog"), (2, "top_losses"): ("keep", "")}
    store.undo()
    assert decided(store)[(2, "label_issues")] == ("exclude", "")


def test_relabeling_an_excluded_item_brings_it_back_and_undo_sets_it_aside_again(store):
    store.decide([2], "label_issues", "exclude")
    store.decide([2], "label_issues", "relabel", "dog")
    assert store.excluded() == set() and labels_of(store)[2] == "dog"
    store.undo()
    assert store.excluded() == {2} and labels_of(store)[2] == "cat"


def test_keeping_an_excluded_item_brings_it_back(store):
    store.decide([4], "odd_files", "exclude")
    store.decide([4], "odd_files", "keep")
    assert store.excluded() == set()


def test_the_same_decision_twice_records_no_second_event(store):
    first = store.decide([0], "top_losses", "keep")
    assert first > 0 and store.decide([0], "top_losses", "keep") == 0
    assert store.undo() == "keep 1 item (top_losses)" and store.undo() == "label 2 items 'dog'"


def test_decisions_survive_reopening_the_store(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="a") as first:
        first.assign([0, 1], "cat")
        first.decide([0], "label_issues", "relabel", "dog")
        first.decide([1], "label_issues", "exclude")
    with LabelStore(path, actor="b") as again:
        assert decided(again) == {(0, "label_issues"): ("relabel", "dog"), (1, "label_issues"): ("exclude", "")}
        assert again.undo() == "exclude 1 item (label_issues)" and again.excluded() == set()


def test_events_written_before_decisions_existed_still_undo(store):
    # an older payload has no "decided" key; it must decode to no decision changes
    with closing(sqlite3.connect(store.db_path)) as conn:
        payload = conn.execute("SELECT payload FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
    import json
    import zlib
    assert "decided" not in json.loads(zlib.decompress(payload))
    assert store.undo() == "label 2 items 'dog'"


def test_relabel_needs_a_label_and_the_others_take_none(store):
    with pytest.raises(LabelStoreError, match=r"'relabel' decision needs the new label"):
        store.decide([0], "label_issues", "relabel")
    with pytest.raises(LabelStoreError, match=r"'keep' decision takes no label .*'relabel', 'dog'"):
        store.decide([0], "label_issues", "keep", "dog")


def test_unknown_decision_lists_the_allowed_ones(store):
    with pytest.raises(LabelStoreError, match=r"Unknown decision 'delete'; use one of keep, relabel, exclude"):
        store.decide([0], "label_issues", "delete")


def test_empty_queue_name_is_rejected(store):
    with pytest.raises(LabelStoreError, match=r"queue must be the name of a cleaning queue .*not ''"):
        store.decide([0], "", "keep")


def test_bad_label_in_a_relabel_is_rejected_before_anything_changes(store):
    with pytest.raises(LabelStoreError, match="is empty"):
        store.decide([0], "label_issues", "relabel", "  ")
    assert decided(store) == {} and labels_of(store)[0] == "cat"


def test_export_cleaned_writes_corrected_labels_of_kept_items_only(image_folder, tmp_path):
    with Project(image_folder, actor="me") as project:
        names = [item.path for item in project.items]
        project.store.assign([0, 1, 2, 3], "a")
        project.store.decide([1], "label_issues", "relabel", "b")
        project.store.decide([2], "duplicates", "exclude")
        project.store.decide([3], "top_losses", "keep")
        rows = export_cleaned(project, tmp_path / "cleaned.csv")
    text = (tmp_path / "cleaned.csv").read_text().splitlines()
    assert rows == 3
    assert text == ["image_name,tags", f"{names[0]},a", f"{names[1]},b", f"{names[3]},a"]
    assert all((image_folder / name).exists() for name in names)   # excluding never touches a file
