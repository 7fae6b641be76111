"""The label store: label definitions, assignments, exclusions, predictions and undo, in SQLite.

It shares the workspace's `labels.sqlite` with the engine's `items` table (item ids are that
table's ids). Every call that changes something is one transaction and, except
`set_predictions`, one undoable event whose diff is kept compactly in the `events` table
(see `labeler/_changes.py`). Several processes may use the same store at once: each names
itself with `actor`, undo and redo can be limited to one actor, and `version` tells a reader
cheaply whether anyone changed anything.

    store = LabelStore(workspace.db_path)
    store.assign([0, 1, 2], "cat")
    store.undo()                      # -> "label 3 items 'cat'"
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from . import _db
from ._changes import Changes, read_assign, read_defs, set_excluded, write_assign, write_def
from ._decisions import CleaningDecisions
from ._history import Event, UndoableStore
from ._labels import Label, next_colour, plural, validate_colour, validate_name, validate_source
from ._predictions import (check_threshold, confident_labels, read_predictions, validate_predictions,
                           write_predictions)
from .errors import LabelerError, LabelStoreError

logger = logging.getLogger(__name__)

DELETE_CHOICES = "'unassign' (the items become unlabeled) or 'move:<other label>'"
_KINDS_WITHOUT_ASSIGNMENTS = ("create_label", "rename_label", "recolour_label", "reorder_labels", "exclude", "restore",
                              "keep")


class LabelStore(CleaningDecisions, UndoableStore):
    """Labels of one project, shared safely by several app instances and processes.

    Cleaning decisions (keep / relabel / exclude an item seen in a cleaning queue) come from
    `CleaningDecisions` (labeler/_decisions.py): `decide(...)` and `decisions()`.

    Args:
        db_path: the workspace's `labels.sqlite` (created if needed).
        actor: who the changes are recorded as (default "user@host"); undo/redo can be limited to it.
        timeout: seconds to keep retrying while another process holds the write lock.
    """

    # ---- project-wide settings --------------------------------------------------------------

    @property
    def multi_label(self) -> bool:
        """Whether an item may carry several labels (False until a project says otherwise)."""
        with self._lock:
            return bool(_db.get_meta(self._connection(), "multi_label", 0))

    @multi_label.setter
    def multi_label(self, value: bool) -> None:
        self.set_multi_label(value)

    def set_multi_label(self, value: bool) -> None:
        """Choose single- or multi-label; possible only before the first assignment."""
        if not isinstance(value, (bool, np.bool_)):
            raise LabelStoreError(f"multi_label must be True or False, not {value!r}.")
        with self._write() as conn:
            current = _db.get_meta(conn, "multi_label")
            if current is not None and bool(current) == bool(value):
                return
            if self._has_assignments(conn):
                mode = "multi-label" if current else "single-label"
                raise LabelStoreError(
                    f"This project is already {mode} and has assignments; multi_label={bool(value)} is not "
                    f"allowed now. Choose the mode before labeling, or start a new workspace (--workspace).")
            _db.set_meta(conn, "multi_label", int(bool(value)))
            _db.bump_version(conn)

    def _has_assignments(self, conn) -> bool:
        marks = ",".join("?" * len(_KINDS_WITHOUT_ASSIGNMENTS))
        return bool(conn.execute("SELECT 1 FROM assignments LIMIT 1").fetchone()
                    or conn.execute(f"SELECT 1 FROM events WHERE kind NOT IN ({marks}) LIMIT 1",
                                    _KINDS_WITHOUT_ASSIGNMENTS).fetchone())

    def _multi(self, conn) -> bool:
        """The mode, fixed from now on (an assignment is about to be written)."""
        current = _db.get_meta(conn, "multi_label")
        if current is None:
            _db.set_meta(conn, "multi_label", 0)
        return bool(current)

    # ---- label definitions ------------------------------------------------------------------

    def label_defs(self) -> list[Label]:
        """Every label, in display order."""
        with self._read() as conn:
            return [Label(label_id, *row) for label_id, row in read_defs(conn).items()]

    def create_label(self, name, colour=None) -> Label:
        """A new label (at the end of the display order); an existing name is an error."""
        name = validate_name(name)
        colour = None if colour is None else validate_colour(colour)
        with self._write() as conn:
            defs = read_defs(conn)
            if name in {row[0] for row in defs.values()}:
                raise LabelStoreError(f"Label {name!r} already exists. Use it as it is, or pick another name.")
            changes = Changes()
            label_id = self._new_label(conn, name, colour, defs, changes)
            self._record(conn, "create_label", f"create label {name!r}", 1, changes)
            return Label(label_id, *read_defs(conn)[label_id])

    def _new_label(self, conn, name: str, colour: str | None, defs: dict, changes: Changes) -> int:
        position = max((row[2] for row in defs.values()), default=-1) + 1
        colour = colour or next_colour(row[1] for row in defs.values())
        cursor = conn.execute("INSERT INTO label_defs (name, colour, position) VALUES (?,?,?)", (name, colour, position))
        label_id = int(cursor.lastrowid)
        defs[label_id] = [name, colour, position]
        changes.add_def(label_id, None, [name, colour, position])
        return label_id

    def _ensure_labels(self, conn, names: Iterable[str], changes: Changes) -> dict[str, int]:
        """Ids of `names` (already validated), creating the ones that do not exist yet."""
        defs = read_defs(conn)
        ids = {row[0]: label_id for label_id, row in defs.items()}
        for name in names:
            if name not in ids:
                ids[name] = self._new_label(conn, name, None, defs, changes)
        return ids

    def _label_id(self, conn, name, defs: dict | None = None) -> int:
        defs = read_defs(conn) if defs is None else defs
        name = name.strip() if isinstance(name, str) else name
        for label_id, row in defs.items():
            if row[0] == name:
                return label_id
        known = ", ".join(repr(row[0]) for row in defs.values()) or "none yet"
        raise LabelStoreError(f"Unknown label {name!r}; the labels are: {known}. Check the spelling "
                              f"(names are case-sensitive) or create it first.")

    def _update_def(self, kind: str, name, description: str, field: int, value) -> None:
        with self._write() as conn:
            defs = read_defs(conn)
            label_id = self._label_id(conn, name, defs)
            before = defs[label_id]
            after = list(before)
            after[field] = value
            changes = Changes()
            changes.add_def(label_id, before, after)
            write_def(conn, label_id, after)
            self._record(conn, kind, description, 1, changes)

    def rename_label(self, old, new) -> None:
        new = validate_name(new)
        if new == old:
            return
        with self._read() as conn:
            if new in {row[0] for row in read_defs(conn).values()}:
                raise LabelStoreError(f"Cannot rename {old!r} to {new!r}: a label {new!r} already exists. "
                                      f"To put both under one name, use merge_labels([{old!r}], {new!r}).")
        self._update_def("rename_label", old, f"rename label {old!r} to {new!r}", 0, new)

    def recolour_label(self, name, colour) -> None:
        colour = validate_colour(colour)
        self._update_def("recolour_label", name, f"recolour label {name!r} to {colour}", 1, colour)

    def reorder_labels(self, names: Sequence[str]) -> None:
        """Put the labels in this display order; `names` must list every label once."""
        with self._write() as conn:
            defs = read_defs(conn)
            current = [row[0] for row in defs.values()]
            if sorted(names) != sorted(current):
                missing = sorted(set(current) - set(names))
                unknown = sorted(set(names) - set(current))
                raise LabelStoreError(f"reorder_labels needs every label exactly once; missing {missing}, unknown "
                                      f"{unknown}, given {list(names)}. Pass all of: {current}.")
            changes = Changes()
            for position, name in enumerate(names):
                label_id = self._label_id(conn, name, defs)
                after = [name, defs[label_id][1], position]
                changes.add_def(label_id, defs[label_id], after)
                write_def(conn, label_id, after)
            self._record(conn, "reorder_labels", "reorder labels", len(changes.defs), changes)

    def merge_labels(self, sources: Sequence[str], target: str) -> int:
        """Move every item of `sources` to `target` (created if needed) and delete the sources."""
        target = validate_name(target)
        if isinstance(sources, str) or not sources:
            raise LabelStoreError(f"sources must be a non-empty list of label names, got {sources!r}; "
                                  f"e.g. merge_labels(['kitten', 'cats'], 'cat').")
        with self._write() as conn:
            defs = read_defs(conn)
            source_ids = {self._label_id(conn, name, defs) for name in sources if name != target}
            changes = Changes()
            target_id = self._ensure_labels(conn, [target], changes)[target]
            moved = self._move_items(conn, source_ids, target_id, changes)
            for label_id in source_ids:
                changes.add_def(label_id, defs[label_id], None)
                write_def(conn, label_id, None)
            names = ", ".join(repr(defs[i][0]) for i in sorted(source_ids))
            return self._record(conn, "merge_labels", f"merge {names} into {target!r} ({plural(moved, 'item')})",
                                moved, changes)

    def delete_label(self, name, *, assignments: str) -> int:
        """Delete a label; `assignments` says what happens to its items: 'unassign' or 'move:<other label>'."""
        if assignments != "unassign" and not (isinstance(assignments, str) and assignments.startswith("move:")):
            raise LabelStoreError(f"assignments={assignments!r} is not allowed; use {DELETE_CHOICES}.")
        with self._write() as conn:
            defs = read_defs(conn)
            label_id = self._label_id(conn, name, defs)
            changes = Changes()
            if assignments == "unassign":
                moved = self._move_items(conn, {label_id}, None, changes)
                what = f"unlabel {plural(moved, 'item')}"
            else:
                other = assignments[len("move:"):]
                other_id = self._label_id(conn, other, defs)
                if other_id == label_id:
                    raise LabelStoreError(f"Cannot move the items of {name!r} to itself; name another label.")
                moved = self._move_items(conn, {label_id}, other_id, changes)
                what = f"move {plural(moved, 'item')} to {other!r}"
            changes.add_def(label_id, defs[label_id], None)
            write_def(conn, label_id, None)
            return self._record(conn, "delete_label", f"delete label {name!r} ({what})", moved, changes)

    def _move_items(self, conn, source_ids: set[int], target_id: int | None, changes: Changes) -> int:
        """Replace assignments to `source_ids` by `target_id` (None: drop them); returns the items moved."""
        if not source_ids:
            return 0
        items = _db.select_in(conn, "SELECT DISTINCT item_id FROM assignments WHERE label_id IN ({ids})",
                              sorted(source_ids))
        before = read_assign(conn, [row[0] for row in items])
        after = {}
        for item, rows in before.items():
            kept = [row for row in rows if row[0] not in source_ids]
            moved = [row for row in rows if row[0] in source_ids]
            if target_id is not None and all(row[0] != target_id for row in kept):
                kept.append([target_id, *moved[0][1:]])
            after[item] = sorted(kept)
        changes.add_assign(before, after)
        write_assign(conn, after)
        return len(after)

    # ---- assignments and exclusions -------------------------------------------------------

    def assign(self, item_ids, label, *, source: str = "human") -> int:
        """Label items (creating the label if new); single-label replaces each item's previous label.

        Returns the event id (0 when nothing changed).
        """
        name = validate_name(label)
        return self.assign_many({item: [name] for item in self._item_list(item_ids)}, source=source)

    def assign_many(self, labels_by_item: Mapping[int, Sequence[str] | str], *, source: str = "human",
                    kind: str = "assign", description: str | None = None) -> int:
        """Give each item its labels, all in one undoable event (used by imports); returns the event id."""
        source = validate_source(source)
        items = self._item_list(list(labels_by_item))
        checked: dict[str, str] = {}   # each distinct name is validated once, even for 100k items
        wanted = {}
        for item, names in zip(items, labels_by_item.values()):
            names = [names] if isinstance(names, str) else list(names)
            for name in names:
                if not isinstance(name, str) or name not in checked:
                    checked[name] = validate_name(name)   # raises for anything but a usable name
            wanted[item] = list(dict.fromkeys(checked[name] for name in names))
        with self._write() as conn:
            self._check_items_exist(conn, wanted)
            changes = Changes()
            count = self._assign_rows(conn, wanted, source, changes)
            if description is None:
                labels = sorted({name for names in wanted.values() for name in names})
                what = repr(labels[0]) if len(labels) == 1 else f"{len(labels)} labels"
                description = f"label {plural(count, 'item')} {what}"
            return self._record(conn, kind, description, count, changes)

    def _assign_rows(self, conn, wanted: dict[int, list[str]], source: str, changes: Changes) -> int:
        multi = self._multi(conn)
        for item, names in wanted.items():
            if len(names) > 1 and not multi:
                raise LabelStoreError(f"Item {item} would get {len(names)} labels {names} in a single-label project. "
                                      f"Give one label per item, or make the project multi-label before labeling.")
        ids = self._ensure_labels(conn, sorted({name for names in wanted.values() for name in names}), changes)
        before = read_assign(conn, wanted)
        now = time.time()
        after = {}
        for item, names in wanted.items():
            rows = before[item]
            new_ids = {ids[name] for name in names}
            kept = [row for row in rows if (row[0] not in new_ids and multi) or (row[0] in new_ids and row[1] == source)]
            have = {row[0] for row in kept}
            kept.extend([label_id, source, now, self.actor] for label_id in new_ids - have)
            if sorted(kept) != rows:
                after[item] = sorted(kept)
        changes.add_assign(before, after)
        write_assign(conn, after)
        return len(after)

    def unassign(self, item_ids, label=None) -> int:
        """Remove `label` (every label when None) from items; returns the event id (0: nothing changed)."""
        items = self._item_list(item_ids)
        with self._write() as conn:
            label_id = None if label is None else self._label_id(conn, label)
            before = read_assign(conn, items)
            after = {item: [row for row in rows if label_id is not None and row[0] != label_id]
                     for item, rows in before.items()}
            after = {item: rows for item, rows in after.items() if rows != before[item]}
            changes = Changes()
            changes.add_assign(before, after)
            write_assign(conn, after)
            what = "" if label is None else f" {label!r}"
            return self._record(conn, "unassign", f"unlabel {plural(len(after), 'item')}{what}", len(after), changes)

    def exclude(self, item_ids, reason: str = "") -> int:
        """Set items aside (unreadable, off-topic, duplicate...); their labels are kept."""
        items = self._item_list(item_ids)
        if not isinstance(reason, str):
            raise LabelStoreError(f"reason must be text, not {reason!r}.")
        return self._set_exclusions(items, [reason, time.time(), self.actor], "exclude")

    def restore(self, item_ids) -> int:
        """Bring excluded items back."""
        return self._set_exclusions(self._item_list(item_ids), None, "restore")

    def _set_exclusions(self, items: list[int], row: list | None, kind: str) -> int:
        with self._write() as conn:
            if row is not None:
                self._check_items_exist(conn, items)
            changes = Changes()
            count = set_excluded(conn, items, row, changes)
            return self._record(conn, kind, f"{kind} {plural(count, 'item')}", count, changes)

    @staticmethod
    def _item_list(item_ids) -> list[int]:
        """Distinct item ids as ints, in the order given."""
        if isinstance(item_ids, (int, np.integer)):
            values = [item_ids]
        elif isinstance(item_ids, np.ndarray):
            values = item_ids.ravel().tolist()
        else:
            values = list(item_ids)
        bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0]
        if bad:
            raise LabelStoreError(f"Item ids must be non-negative integers (rows of the items table); got "
                                  f"{bad[:5]!r}. Use Project.ids_for(paths) to turn file names into ids.")
        return list(dict.fromkeys(int(v) for v in values))

    def _check_items_exist(self, conn, items: Iterable[int]) -> None:
        has_items = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='items'").fetchone()
        if not has_items:
            return
        known = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        unknown = sorted(item for item in items if item >= known)
        if unknown:
            raise LabelStoreError(f"Unknown item ids {unknown[:10]} (the project has {known} items, ids 0 to "
                                  f"{known - 1}). Refresh the items (Project.refresh_items) or check the ids.")

    # ---- reading labels ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Items per label, in display order (0 for unused labels)."""
        return {name: sum(by_source.values()) for name, by_source in self.counts_by_source().items()}

    def counts_by_source(self) -> dict[str, dict[str, int]]:
        """Items per label and source (human, model, import), in display order."""
        with self._read() as conn:
            defs = read_defs(conn)
            rows = conn.execute("SELECT label_id, source, COUNT(*) FROM assignments GROUP BY label_id, source")
            result = {row[0]: {} for row in defs.values()}
            for label_id, source, count in rows:
                if label_id in defs:
                    result[defs[label_id][0]][source] = count
        return result

    def assignments(self):
        """Every assignment: a DataFrame with columns item_id, label, source, created, actor."""
        import pandas as pd  # imported on use: a store opened by a short script need not load pandas
        with self._read() as conn:
            rows = conn.execute("SELECT a.item_id, d.name, a.source, a.created, a.actor FROM assignments a "
                                "JOIN label_defs d ON d.id = a.label_id ORDER BY a.item_id, d.position, d.id").fetchall()
        return pd.DataFrame(rows, columns=["item_id", "label", "source", "created", "actor"])

    def label_matrix(self, n_items: int) -> tuple[list[str], np.ndarray]:
        """Label names in display order and, single-label, an int array (-1 = unlabeled), multi-label a
        bool matrix (n_items, n_labels)."""
        with self._read() as conn:
            defs = read_defs(conn)
            multi = bool(_db.get_meta(conn, "multi_label", 0))
            pairs = np.array(conn.execute("SELECT item_id, label_id FROM assignments").fetchall(), dtype=np.int64)
        names = [row[0] for row in defs.values()]
        column = {label_id: k for k, label_id in enumerate(defs)}
        pairs = pairs.reshape(-1, 2)
        if pairs.size and pairs[:, 0].max() >= n_items:
            raise LabelStoreError(f"n_items={n_items} but item {int(pairs[:, 0].max())} has a label; pass the "
                                  f"number of items in the project (len(project.items)).")
        columns = np.array([column[label_id] for label_id in pairs[:, 1]], dtype=np.int64)
        if multi:
            matrix = np.zeros((n_items, len(names)), dtype=bool)
            matrix[pairs[:, 0], columns] = True
            return names, matrix
        vector = np.full(n_items, -1, dtype=np.int64)
        vector[pairs[:, 0]] = columns
        return names, vector

    def excluded(self) -> set[int]:
        with self._read() as conn:
            return {row[0] for row in conn.execute("SELECT item_id FROM exclusions")}

    # ---- predictions ------------------------------------------------------------------------

    def set_predictions(self, model_id: str, item_ids, classes: Sequence[str], probs) -> None:
        """Store (replace) a model's class probabilities for some items; human labels are untouched."""
        model_id, ids, classes, probs = validate_predictions(model_id, item_ids, classes, probs)
        with self._write() as conn:
            self._check_items_exist(conn, ids.tolist())
            write_predictions(conn, model_id, ids, classes, probs)
            _db.bump_version(conn)

    def predictions(self, model_id: str | None = None):
        """(model_id, classes, item_ids, probs) of `model_id`, or of the latest model when None; None if none."""
        with self._read() as conn:
            return read_predictions(conn, model_id)

    def prediction_models(self) -> list[str]:
        with self._read() as conn:
            return [row[0] for row in conn.execute("SELECT model_id FROM predictions ORDER BY seq")]

    def record_checks(self, model_id: str, verdicts) -> int:
        """Remember what a person saw in a check of `model_id`'s predictions: (item, threshold,
        confidence, agreed) per image. Kept beside the labels, not in the undo history: undoing the
        labels does not unsee the images."""
        now = time.time()
        rows = [(str(model_id), int(item), float(threshold), float(confidence), int(bool(agreed)), now, self.actor)
                for item, threshold, confidence, agreed in verdicts]
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO checks (model_id, item_id, threshold, confidence, agreed, "
                             "created, actor) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def checks(self, model_id: str) -> list[tuple[int, float, float, bool]]:
        """(item, threshold, confidence, agreed) of every checked prediction of `model_id`."""
        with self._read() as conn:
            rows = conn.execute("SELECT item_id, threshold, confidence, agreed FROM checks WHERE model_id=?",
                                (str(model_id),)).fetchall()
        return [(int(i), float(t), float(c), bool(a)) for i, t, c, a in rows]

    def accept_predictions(self, model_id: str, threshold: float, item_ids=None, skip=()) -> int:
        """Label unlabeled, non-excluded items with the classes predicted at >= threshold (source 'model');
        only `item_ids` when given, never those in `skip` (e.g. predictions a person said are wrong).

        One undoable event; returns its id (0 when no item qualified). `event(id).count` is the number labeled.
        """
        threshold = check_threshold(threshold)
        wanted_items = None if item_ids is None else set(self._item_list(item_ids))
        with self._write() as conn:
            found = read_predictions(conn, model_id)
            if found is None:
                raise LabelStoreError("No predictions are stored yet; train a model (or call set_predictions) first.")
            found_id, classes, ids, probs = found
            keep = np.ones(len(ids), dtype=bool) if wanted_items is None else np.isin(ids, list(wanted_items))
            busy = {row[0] for row in conn.execute("SELECT item_id FROM assignments UNION SELECT item_id FROM exclusions")}
            keep &= ~np.isin(ids, list(busy | set(self._item_list(skip))))
            wanted = confident_labels(classes, ids[keep], probs[keep], threshold, self._multi(conn))
            changes = Changes()
            count = self._assign_rows(conn, wanted, "model", changes)
            description = f"accept {plural(count, 'prediction')} of {found_id!r} at >= {threshold:g}"
            return self._record(conn, "accept_predictions", description, count, changes)


__all__ = ["DELETE_CHOICES", "Event", "Label", "LabelStore", "LabelStoreError", "LabelerError"]
