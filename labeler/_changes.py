"""What one undoable event changed, and how to apply that change backwards (undo) or forwards (redo).

An event records, per unit it touched, the unit's state before and after:

- ``assign``: per item, its assignment rows ``[label_id, source, created, actor]`` (sorted);
- ``excl``: per item, its exclusion row ``[reason, created, actor]`` or ``None``;
- ``defs``: per label id, its definition ``[name, colour, position]`` or ``None``;
- ``decided``: per item, its cleaning decision rows ``[queue, decision, label, created, actor]``
  (sorted by queue; see `labeler/_decisions.py`).

The diff is stored as one zlib-compressed JSON blob per event, so a bulk action on 10,000
items costs one row in `events`, not 10,000.

Several processes may label the same project. Undo therefore only reverts a unit that is still
as the event left it; a unit someone changed since keeps the later change (the later change
wins) and is counted as skipped. Label definitions are compared field by field, so undoing a
rename still works after someone recoloured the label.
"""
from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass, field

from ._db import select_in
from .errors import LabelStoreError

_NAME, _COLOUR, _POSITION = range(3)


@dataclass
class Changes:
    """The before/after state of every unit one event touched (only units that really changed)."""

    assign: list = field(default_factory=list)   # [item_id, rows_before, rows_after]
    excl: list = field(default_factory=list)     # [item_id, row_before | None, row_after | None]
    defs: list = field(default_factory=list)     # [label_id, def_before | None, def_after | None]
    decided: list = field(default_factory=list)  # [item_id, rows_before, rows_after]

    def add_assign(self, before: dict[int, list], after: dict[int, list]) -> None:
        self.assign.extend([item, before[item], rows] for item, rows in after.items() if rows != before[item])

    def add_excl(self, before: dict[int, list | None], after: dict[int, list | None]) -> None:
        self.excl.extend([item, before[item], row] for item, row in after.items() if row != before[item])

    def add_decided(self, before: dict[int, list], after: dict[int, list]) -> None:
        self.decided.extend([item, before[item], rows] for item, rows in after.items() if rows != before[item])

    def add_def(self, label_id: int, before: list | None, after: list | None) -> None:
        if before != after:
            self.defs.append([label_id, before, after])

    def __bool__(self) -> bool:
        return bool(self.assign or self.excl or self.defs or self.decided)

    def encode(self) -> bytes:
        data = {"assign": self.assign, "excl": self.excl, "defs": self.defs}
        if self.decided:   # absent from events written before decisions existed, and from most events
            data["decided"] = self.decided
        text = json.dumps(data, separators=(",", ":"))
        return zlib.compress(text.encode("utf-8"), 1)

    @classmethod
    def decode(cls, payload: bytes) -> Changes:
        data = json.loads(zlib.decompress(payload).decode("utf-8"))
        return cls(assign=data["assign"], excl=data["excl"], defs=data["defs"], decided=data.get("decided", []))


# ---- reading and writing units -------------------------------------------------------------

def read_assign(conn: sqlite3.Connection, item_ids) -> dict[int, list]:
    """Each item's assignment rows `[label_id, source, created, actor]`, sorted by label id."""
    found: dict[int, list] = {int(item): [] for item in item_ids}
    sql = "SELECT item_id, label_id, source, created, actor FROM assignments WHERE item_id IN ({ids}) " \
          "ORDER BY item_id, label_id"
    for item, label_id, source, created, actor in select_in(conn, sql, list(found)):
        found[item].append([label_id, source, created, actor])
    return found


def write_assign(conn: sqlite3.Connection, rows_by_item: dict[int, list]) -> None:
    conn.executemany("DELETE FROM assignments WHERE item_id=?", [(item,) for item in rows_by_item])
    conn.executemany("INSERT INTO assignments (item_id, label_id, source, created, actor) VALUES (?,?,?,?,?)",
                     [(item, *row) for item, rows in rows_by_item.items() for row in rows])


def read_excl(conn: sqlite3.Connection, item_ids) -> dict[int, list | None]:
    found: dict[int, list | None] = {int(item): None for item in item_ids}
    sql = "SELECT item_id, reason, created, actor FROM exclusions WHERE item_id IN ({ids})"
    for item, reason, created, actor in select_in(conn, sql, list(found)):
        found[item] = [reason, created, actor]
    return found


def write_excl(conn: sqlite3.Connection, row_by_item: dict[int, list | None]) -> None:
    conn.executemany("DELETE FROM exclusions WHERE item_id=?", [(item,) for item in row_by_item])
    conn.executemany("INSERT INTO exclusions (item_id, reason, created, actor) VALUES (?,?,?,?)",
                     [(item, *row) for item, row in row_by_item.items() if row is not None])


def set_excluded(conn: sqlite3.Connection, items: list[int], row: list | None, changes: Changes) -> int:
    """Exclude the items (row) or bring them back (None), noting the diff in `changes`; an item already
    in that state keeps its row. Returns how many items changed."""
    before = read_excl(conn, items)
    after = {item: row for item, current in before.items() if (current is None) != (row is None)}
    changes.add_excl(before, after)
    write_excl(conn, after)
    return len(after)


def read_decided(conn: sqlite3.Connection, item_ids) -> dict[int, list]:
    """Each item's cleaning decision rows `[queue, decision, label, created, actor]`, sorted by queue."""
    found: dict[int, list] = {int(item): [] for item in item_ids}
    sql = "SELECT item_id, queue, decision, label, created, actor FROM decisions WHERE item_id IN ({ids}) " \
          "ORDER BY item_id, queue"
    for item, *row in select_in(conn, sql, list(found)):
        found[item].append(list(row))
    return found


def write_decided(conn: sqlite3.Connection, rows_by_item: dict[int, list]) -> None:
    conn.executemany("DELETE FROM decisions WHERE item_id=?", [(item,) for item in rows_by_item])
    conn.executemany("INSERT INTO decisions (item_id, queue, decision, label, created, actor) VALUES (?,?,?,?,?,?)",
                     [(item, *row) for item, rows in rows_by_item.items() for row in rows])


def read_defs(conn: sqlite3.Connection) -> dict[int, list]:
    """Every label definition `[name, colour, position]` by id, in display order."""
    rows = conn.execute("SELECT id, name, colour, position FROM label_defs ORDER BY position, id")
    return {label_id: [name, colour, position] for label_id, name, colour, position in rows}


def write_def(conn: sqlite3.Connection, label_id: int, definition: list | None) -> None:
    """Insert, update or (with None) delete one definition; a taken name becomes a LabelStoreError."""
    try:
        if definition is None:
            conn.execute("DELETE FROM label_defs WHERE id=?", (label_id,))
        else:
            conn.execute("INSERT INTO label_defs (id, name, colour, position) VALUES (?,?,?,?) "
                         "ON CONFLICT(id) DO UPDATE SET name=excluded.name, colour=excluded.colour, "
                         "position=excluded.position", (label_id, *definition))
    except sqlite3.IntegrityError as err:
        raise LabelStoreError(f"Another label is already named {definition[_NAME]!r} (it was created or "
                              f"renamed since). Rename that label first, then try again.") from err


# ---- applying an event backwards or forwards -----------------------------------------------

def apply_changes(conn: sqlite3.Connection, changes: Changes, *, undo: bool) -> int:
    """Move every unit from the event's after state to its before state (undo) or back (redo).

    Returns how many units were skipped because someone changed them since.
    """
    skipped = 0
    deletions = []
    current_defs = read_defs(conn)
    for label_id, before, after in changes.defs:
        expected, target = (after, before) if undo else (before, after)
        if target is None:
            deletions.append(label_id)
        else:
            skipped += _apply_def(conn, label_id, current_defs.get(label_id), expected, target)
    skipped += _apply_units(conn, changes.assign, read_assign, write_assign, undo)
    skipped += _apply_units(conn, changes.excl, read_excl, write_excl, undo)
    skipped += _apply_units(conn, changes.decided, read_decided, write_decided, undo)
    for label_id in deletions:
        in_use = conn.execute("SELECT 1 FROM assignments WHERE label_id=? LIMIT 1", (label_id,)).fetchone()
        if in_use or label_id not in current_defs:
            skipped += 1   # someone labeled items with it since (or removed it): their work wins
        else:
            write_def(conn, label_id, None)
    return skipped


def _apply_units(conn, units: list, read, write, undo: bool) -> int:
    if not units:
        return 0
    current = read(conn, [unit[0] for unit in units])
    targets = {}
    for key, before, after in units:
        expected, target = (after, before) if undo else (before, after)
        if current[key] == expected:
            targets[key] = target
    write(conn, targets)
    return len(units) - len(targets)


def _apply_def(conn, label_id: int, current: list | None, expected: list | None, target: list) -> int:
    """Re-create a deleted definition or move the fields this event changed; returns 1 when skipped."""
    if expected is None:
        if current is not None:
            return 1
        write_def(conn, label_id, target)
        return 0
    if current is None:
        return 1
    merged = [target[i] if target[i] != expected[i] and current[i] == expected[i] else current[i]
              for i in range(len(current))]
    if merged == current:
        return int(target != expected)
    write_def(conn, label_id, merged)
    return 0
