"""LabelStore: label definitions, assignments, undo/redo of every operation, predictions, bad input."""
import logging
import sqlite3
from collections import Counter
from contextlib import closing, contextmanager

import numpy as np
import pytest

from engine.workspace import Workspace
from labeler.store import LabelStore, LabelStoreError, LabelerError


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite", actor="me") as opened:
        yield opened


def snapshot(store):
    """Every row of the label tables, read through a separate connection (what is committed)."""
    with closing(sqlite3.connect(store.db_path)) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("label_defs", "assignments", "exclusions")}


def labels_of(store):
    table = store.assignments()
    return {item: sorted(group["label"]) for item, group in table.groupby("item_id")}


# ---- label definitions and assignments ------------------------------------------------------

def test_create_label_gives_distinct_palette_colours_in_display_order(store):
    cat = store.create_label("cat")
    dog = store.create_label("  dog ", colour="#ABC")
    assert (cat.name, cat.position) == ("cat", 0)
    assert (dog.name, dog.colour, dog.position) == ("dog", "#aabbcc", 1)
    assert [label.name for label in store.label_defs()] == ["cat", "dog"]
    assert store.counts() == {"cat": 0, "dog": 0}


def test_single_label_assign_replaces_the_previous_label_and_returns_the_event(store):
    first = store.assign([1, 2, 3], "cat")
    second = store.assign([3, 4], "dog")
    assert 0 < first < second
    assert labels_of(store) == {1: ["cat"], 2: ["cat"], 3: ["dog"], 4: ["dog"]}
    assert store.counts() == {"cat": 2, "dog": 2}
    assert store.event(second).description == "label 2 items 'dog'"


def test_multi_label_assign_adds_labels_and_unassign_removes_one(store):
    store.set_multi_label(True)
    store.assign([1, 2], "cat")
    store.assign([2, 3], "dog")
    assert labels_of(store) == {1: ["cat"], 2: ["cat", "dog"], 3: ["dog"]}
    store.unassign([2], "cat")
    assert labels_of(store) == {1: ["cat"], 2: ["dog"], 3: ["dog"]}
    store.unassign([2, 3])
    assert labels_of(store) == {1: ["cat"]}


def test_assign_that_changes_nothing_records_no_event(store):
    store.assign([1], "cat")
    version = store.version
    assert store.assign([1], "cat") == 0
    assert store.version == version and len(store.history()) == 1


def test_exclude_keeps_labels_and_restore_brings_items_back(store):
    store.assign([1, 2], "cat")
    store.exclude([2, 3], reason="blurry")
    assert store.excluded() == {2, 3} and store.counts() == {"cat": 2}
    store.restore([2])
    assert store.excluded() == {3}


def test_label_matrix_single_label_is_a_vector_with_minus_one_for_unlabeled(store):
    store.assign([0, 3], "cat")
    store.assign([1], "dog")
    names, vector = store.label_matrix(5)
    assert names == ["cat", "dog"] and vector.tolist() == [0, 1, -1, 0, -1]


def test_label_matrix_multi_label_is_a_boolean_matrix(store):
    store.set_multi_label(True)
    store.assign([0, 2], "cat")
    store.assign([2], "dog")
    names, matrix = store.label_matrix(3)
    assert names == ["cat", "dog"]
    assert matrix.tolist() == [[True, False], [False, False], [True, True]]


def test_reorder_labels_changes_display_order_of_counts(store):
    store.assign([0], "cat")
    store.create_label("dog")
    store.reorder_labels(["dog", "cat"])
    assert list(store.counts()) == ["dog", "cat"]


def test_assignments_frame_names_item_label_source_time_and_actor(store):
    store.assign([4], "cat", source="import")
    frame = store.assignments()
    assert list(frame.columns) == ["item_id", "label", "source", "created", "actor"]
    assert frame.iloc[0][["item_id", "label", "source", "actor"]].tolist() == [4, "cat", "import", "me"]


def test_version_increases_on_every_change_including_undo_and_not_on_reads(store):
    versions = [store.version]
    for change in (lambda: store.assign([1], "cat"), lambda: store.exclude([1]), store.undo, store.redo):
        change()
        versions.append(store.version)
    store.counts(), store.label_defs(), store.assignments()
    assert versions == sorted(set(versions)) and store.version == versions[-1]


# ---- undo and redo of every operation --------------------------------------------------------

OPERATIONS = {
    "create_label": lambda s: s.create_label("bird", "#123456"),
    "rename_label": lambda s: s.rename_label("cat", "kitty"),
    "recolour_label": lambda s: s.recolour_label("cat", "#000000"),
    "reorder_labels": lambda s: s.reorder_labels(["dog", "cat"]),
    "merge_labels_into_new": lambda s: s.merge_labels(["cat", "dog"], "pet"),
    "merge_labels_into_existing": lambda s: s.merge_labels(["cat"], "dog"),
    "delete_label_unassign": lambda s: s.delete_label("cat", assignments="unassign"),
    "delete_label_move": lambda s: s.delete_label("cat", assignments="move:dog"),
    "assign_existing_label": lambda s: s.assign([0, 5, 7], "dog"),
    "assign_new_label": lambda s: s.assign([7, 8], "fish"),
    "unassign_all": lambda s: s.unassign([0, 4]),
    "unassign_one_label": lambda s: s.unassign([2, 3], "cat"),
    "exclude": lambda s: s.exclude([0, 7], reason="duplicate"),
    "restore": lambda s: s.restore([6]),
    "accept_predictions": lambda s: s.accept_predictions("m", 0.8),
}


@pytest.mark.parametrize("multi_label", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_undo_restores_the_state_before_and_redo_the_state_after(store, name, multi_label):
    store.set_multi_label(multi_label)
    store.assign([0, 1, 2, 3], "cat")
    store.assign([3, 4, 5] if multi_label else [4, 5], "dog")
    store.exclude([6])
    store.set_predictions("m", [6, 7, 8, 9], ["cat", "fish"], np.array([[0.9, 0.1], [0.95, 0.9], [0.5, 0.5], [0.1, 0.85]]))
    before = snapshot(store)
    OPERATIONS[name](store)
    after = snapshot(store)
    assert after != before
    assert store.undo() is not None
    assert snapshot(store) == before
    assert store.redo() is not None
    assert snapshot(store) == after
    assert store.undo() and snapshot(store) == before


@contextmanager
def traced(store):
    """The SQL statements `store` runs inside the block (one entry per execution, so executemany counts each row)."""
    statements = []
    store._conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        store._conn.set_trace_callback(None)


def statement_kinds(statements):
    return Counter(statement.split()[0].upper() for statement in statements)


def test_bulk_assign_of_10000_items_is_one_transaction_one_compact_event_and_undoes_exactly(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.sync_items(paths=[f"img_{i:05d}.png" for i in range(10_000)])
    with LabelStore(workspace.db_path, actor="me") as store:
        store.assign(range(0, 10_000, 2), "even")
        before = snapshot(store)
        with traced(store) as assigning:
            event = store.assign(range(10_000), "cat")
        after = snapshot(store)
        with traced(store) as undoing:
            description = store.undo()
        assert description == "label 10,000 items 'cat'" and snapshot(store) == before
        with traced(store) as redoing:
            store.redo()
        assert snapshot(store) == after and store.event(event).count == 10_000
        with closing(sqlite3.connect(store.db_path)) as conn:
            payload = conn.execute("SELECT length(payload) FROM events WHERE id=?", (event,)).fetchone()[0]
            n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    for name, statements in (("assign", assigning), ("undo", undoing), ("redo", redoing)):
        kinds = statement_kinds(statements)
        assert (kinds["BEGIN"], kinds["COMMIT"]) == (1, 1), f"{name} is not one transaction: {kinds}"
        # items are read in chunks of ids (20 for 10,000), never one query per item
        assert kinds["SELECT"] < 50, f"{name} ran {kinds['SELECT']} SELECTs for 10,000 items"
    assert sum("INSERT INTO events" in statement for statement in assigning) == 1 and n_events == 2
    assert payload < 10 * 10_000, f"the event's diff takes {payload} bytes for 10,000 items"


def test_undo_and_redo_return_none_when_there_is_nothing_to_do(store):
    assert store.undo() is None and store.redo() is None
    assert not store.can_undo() and not store.can_redo()
    store.assign([1], "cat")
    assert store.can_undo() and not store.can_redo()


def test_a_new_action_clears_the_redo_stack_of_the_same_actor_only(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="alice") as alice, LabelStore(path, actor="bob") as bob:
        alice.assign([1], "cat")
        alice.undo(actor="alice")
        bob.assign([2], "dog")
        assert alice.can_redo("alice")
        alice.assign([3], "cat")
        assert not alice.can_redo("alice")
        assert alice.redo(actor="alice") is None


def test_undo_for_an_actor_leaves_other_actors_changes(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="alice") as alice, LabelStore(path, actor="bob") as bob:
        alice.assign([1], "cat")
        bob.assign([2], "dog")
        assert alice.undo(actor="alice") == "label 1 item 'cat'"
        assert labels_of(alice) == {2: ["dog"]}


def test_undo_keeps_a_later_change_by_another_actor(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="alice") as alice, LabelStore(path, actor="bob") as bob:
        alice.assign([1, 2], "cat")
        bob.assign([2], "dog")
        description = alice.undo(actor="alice")
        assert description == "label 2 items 'cat' (kept 1 later change by others)"
        assert labels_of(alice) == {2: ["dog"]}


def test_undoing_a_label_creation_keeps_the_label_when_another_actor_used_it(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, actor="alice") as alice, LabelStore(path, actor="bob") as bob:
        alice.create_label("cat")
        bob.assign([1], "cat")
        assert alice.undo(actor="alice") == "create label 'cat' (kept 1 later change by others)"
        assert alice.counts() == {"cat": 1}


def test_undo_of_a_delete_whose_name_was_taken_again_says_how_to_fix_it(store):
    store.assign([1], "cat")
    store.delete_label("cat", assignments="unassign")
    with LabelStore(store.db_path, actor="other") as other:
        other.create_label("cat")
    before = snapshot(store)
    with pytest.raises(LabelStoreError, match="Another label is already named 'cat'.*Rename that label first"):
        store.undo(actor="me")
    assert snapshot(store) == before


# ---- predictions ---------------------------------------------------------------------------

def test_predictions_never_overwrite_human_labels_and_accept_only_fills_unlabeled_items(store):
    store.assign([0], "dog")
    store.exclude([3])
    store.set_predictions("m1", [0, 1, 2, 3], ["cat", "dog"], np.array([[0.99, 0.01], [0.9, 0.1], [0.6, 0.4], [1.0, 0.0]]))
    assert labels_of(store) == {0: ["dog"]}
    event = store.accept_predictions("m1", threshold=0.85)
    assert labels_of(store) == {0: ["dog"], 1: ["cat"]}
    assert store.event(event).count == 1
    assert store.assignments().set_index("item_id").loc[1, "source"] == "model"


def test_predictions_returns_the_latest_model_unless_one_is_named(store):
    assert store.predictions() is None
    store.set_predictions("old", [0], ["cat"], [[0.5]])
    store.set_predictions("new", [0, 1], ["cat", "dog"], np.array([[0.2, 0.8], [0.7, 0.3]]))
    model_id, classes, ids, probs = store.predictions()
    assert (model_id, classes, ids.tolist()) == ("new", ["cat", "dog"], [0, 1])
    assert probs.dtype == np.float32 and probs.shape == (2, 2)
    assert store.predictions("old")[0] == "old"


def test_accept_predictions_multi_label_assigns_every_class_above_threshold(store):
    store.set_multi_label(True)
    store.set_predictions("m", [0, 1], ["cat", "dog"], np.array([[0.9, 0.95], [0.1, 0.2]]))
    store.accept_predictions("m", 0.8)
    assert labels_of(store) == {0: ["cat", "dog"]}


# ---- the database ---------------------------------------------------------------------------

def test_reopening_creates_nothing_twice_and_keeps_the_schema_version(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path) as first:
        first.assign([1], "cat")
    with LabelStore(path) as again:
        assert again.counts() == {"cat": 1}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM label_meta WHERE key='schema_version'").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class ReleaseAfterRetries(logging.Handler):
    """Commits `blocker`'s transaction once the store has logged `retries` retries of its lock wait."""

    def __init__(self, blocker, retries):
        super().__init__(logging.DEBUG)
        self.blocker, self.retries, self.seen = blocker, retries, 0

    def emit(self, record):
        if "retrying" in record.getMessage():
            self.seen += 1
            if self.seen == self.retries:
                self.blocker.execute("COMMIT")


def test_a_write_waits_past_the_busy_timeout_while_another_process_holds_the_lock(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("engine._sqlite.BUSY_TIMEOUT_MS", 20)
    caplog.set_level(logging.DEBUG, logger="engine._sqlite")
    store = LabelStore(tmp_path / "labels.sqlite", timeout=10)
    blocker = sqlite3.connect(store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = ReleaseAfterRetries(blocker, retries=3)   # the lock outlasts three busy timeouts
    logging.getLogger("engine._sqlite").addHandler(release)
    try:
        store.assign([1], "cat")
    finally:
        logging.getLogger("engine._sqlite").removeHandler(release)
    assert release.seen == 3 and not blocker.in_transaction
    assert store.counts() == {"cat": 1}
    store.close()
    blocker.close()


def test_a_lock_held_past_the_timeout_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("engine._sqlite.BUSY_TIMEOUT_MS", 20)
    store = LabelStore(tmp_path / "labels.sqlite", timeout=0.2)
    with closing(sqlite3.connect(store.db_path, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(LabelStoreError, match=r"stayed locked by another process for 0 s\. Close other"):
            store.assign([1], "cat")
        blocker.execute("ROLLBACK")
    store.close()


def test_a_database_from_a_newer_labeler_is_refused_with_upgrade_advice(tmp_path):
    path = tmp_path / "labels.sqlite"
    LabelStore(path).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE label_meta SET value=99 WHERE key='schema_version'")
    with pytest.raises(LabelStoreError, match="newer labeler.*schema 99.*Upgrade labeler"):
        LabelStore(path)


def test_a_file_that_is_not_a_database_is_named_with_the_fix(tmp_path):
    path = tmp_path / "labels.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LabelStoreError, match=r"labels.sqlite is not a usable label database .*keep a copy"):
        LabelStore(path)


def test_closing_twice_is_safe_and_a_closed_store_says_so(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.close()
    store.close()
    with pytest.raises(LabelStoreError, match="is closed. Open a new LabelStore"):
        store.counts()


# ---- bad input: one test per kind, asserting the message ------------------------------------

def test_label_error_types_share_the_labeler_base():
    assert issubclass(LabelStoreError, LabelerError)


def test_empty_label_name_is_rejected(store):
    with pytest.raises(LabelStoreError, match=r"Label name '  ' is empty\. Give a name"):
        store.assign([1], "  ")


def test_too_long_label_name_is_rejected(store):
    with pytest.raises(LabelStoreError, match="has 101 characters; at most 100 are allowed"):
        store.create_label("x" * 101)


def test_label_name_with_control_characters_is_rejected(store):
    with pytest.raises(LabelStoreError, match=r"contains control characters \['\\n'\].*Remove them"):
        store.create_label("two\nlines")


def test_label_name_that_is_not_text_is_rejected(store):
    with pytest.raises(LabelStoreError, match="must be text, not int"):
        store.create_label(3)


def test_bad_colour_is_rejected(store):
    with pytest.raises(LabelStoreError, match=r"Colour 'red' is not a hex colour. Use '#rrggbb'"):
        store.create_label("cat", colour="red")


def test_unknown_label_lists_the_existing_ones(store):
    store.create_label("cat")
    with pytest.raises(LabelStoreError, match=r"Unknown label 'Cat'; the labels are: 'cat'. Check the spelling"):
        store.rename_label("Cat", "kitty")


def test_duplicate_label_is_rejected(store):
    store.create_label("cat")
    with pytest.raises(LabelStoreError, match="Label 'cat' already exists"):
        store.create_label("cat")


def test_rename_onto_an_existing_label_suggests_merging(store):
    store.create_label("cat"), store.create_label("dog")
    with pytest.raises(LabelStoreError, match=r"a label 'dog' already exists.*merge_labels\(\['cat'\], 'dog'\)"):
        store.rename_label("cat", "dog")


def test_delete_label_demands_an_explicit_choice_for_its_items(store):
    store.create_label("cat")
    with pytest.raises(TypeError):
        store.delete_label("cat")
    with pytest.raises(LabelStoreError, match=r"assignments='drop' is not allowed; use 'unassign'.*'move:<other label>'"):
        store.delete_label("cat", assignments="drop")


def test_reorder_with_missing_labels_names_them(store):
    store.create_label("cat"), store.create_label("dog")
    with pytest.raises(LabelStoreError, match=r"missing \['dog'\], unknown \['cow'\]"):
        store.reorder_labels(["cat", "cow"])


def test_item_ids_that_are_not_non_negative_integers_are_rejected(store):
    with pytest.raises(LabelStoreError, match=r"non-negative integers.*got \[-1, 'a'\].*Project.ids_for"):
        store.assign([1, -1, "a"], "cat")


def test_item_ids_beyond_the_items_table_are_rejected(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.sync_items(paths=["a.png", "b.png"])
    with LabelStore(workspace.db_path) as store:
        with pytest.raises(LabelStoreError, match=r"Unknown item ids \[2, 7\] \(the project has 2 items, ids 0 to 1\)"):
            store.assign([0, 2, 7], "cat")


def test_unknown_label_source_is_rejected(store):
    with pytest.raises(LabelStoreError, match="Label source 'robot' is unknown; use one of human, model, import"):
        store.assign([1], "cat", source="robot")


def test_switching_to_multi_label_after_labeling_is_refused(store):
    store.assign([1], "cat")
    with pytest.raises(LabelStoreError, match="already single-label and has assignments; multi_label=True is not allowed"):
        store.set_multi_label(True)


def test_two_labels_for_one_item_in_a_single_label_project_are_refused(store):
    with pytest.raises(LabelStoreError, match=r"Item 1 would get 2 labels \['cat', 'dog'\] in a single-label project"):
        store.assign_many({1: ["cat", "dog"]})
    assert store.counts() == {}


def test_predictions_of_the_wrong_shape_are_rejected(store):
    with pytest.raises(LabelStoreError, match=r"probs has shape \(2, 3\); expected .* = \(2, 2\)"):
        store.set_predictions("m", [0, 1], ["cat", "dog"], np.zeros((2, 3)))


def test_probabilities_outside_zero_one_are_rejected(store):
    with pytest.raises(LabelStoreError, match=r"probabilities in \[0, 1\] \(apply softmax"):
        store.set_predictions("m", [0], ["cat"], [[3.0]])


def test_threshold_outside_zero_one_is_rejected(store):
    store.set_predictions("m", [0], ["cat"], [[0.5]])
    with pytest.raises(LabelStoreError, match="threshold 1.5 must be a probability between 0 and 1"):
        store.accept_predictions("m", 1.5)


def test_unknown_model_lists_the_stored_ones(store):
    store.set_predictions("m1", [0], ["cat"], [[0.5]])
    with pytest.raises(LabelStoreError, match=r"No predictions stored for model 'm2'; stored models: 'm1'"):
        store.predictions("m2")
