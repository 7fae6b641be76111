"""Cleaning decisions: keep an item as it is, relabel it or exclude it, from a cleaning queue.

Each decision is one undoable event that holds both the record (the `decisions` table: one
row per item and queue, so a queue can show what was decided even after it is computed
again) and its effect: relabel assigns the label (source `human`), exclude sets the item
aside (`exclusions`, the user's file is never touched), keep and relabel bring an excluded
item back. Undo takes back the record and the effect together.

    store.decide([12], "label_issues", "relabel", "cat")
    store.decide([40, 41], "duplicates", "exclude")
    store.decide([7], "top_losses", "keep")
    store.decisions()        # DataFrame: item_id, queue, decision, label, created, actor
"""
from __future__ import annotations

import time

from ._changes import Changes, read_decided, set_excluded, write_decided
from ._labels import plural, validate_name
from .errors import LabelStoreError

DECISIONS = ("keep", "relabel", "exclude")
MAX_QUEUE_LENGTH = 50


class CleaningDecisions:
    """The decision methods of `LabelStore` (a mixin: it uses the store's transactions and assignments)."""

    def decide(self, item_ids, queue: str, decision: str, label: str | None = None) -> int:
        """Record `decision` ('keep', 'relabel' with `label`, or 'exclude') for items seen in `queue`.

        One undoable event; returns its id (0 when nothing changed: the same decision again).
        """
        items = self._item_list(item_ids)
        queue = _check_queue(queue)
        name = _check_decision(decision, label)
        with self._write() as conn:
            self._check_items_exist(conn, items)
            changes = Changes()
            if decision == "relabel":
                self._assign_rows(conn, {item: [name] for item in items}, "human", changes)
            set_excluded(conn, items, [f"cleaning: {queue}", time.time(), self.actor] if decision == "exclude"
                          else None, changes)
            _set_decided(conn, items, [queue, decision, name, time.time(), self.actor], changes)
            what = f" {name!r}" if name else ""
            return self._record(conn, decision, f"{decision} {plural(len(items), 'item')}{what} ({queue})",
                                len(items), changes)

    def decisions(self, queue: str | None = None):
        """The cleaning decisions (of one queue, or all): DataFrame item_id, queue, decision, label, created, actor."""
        import pandas as pd  # imported on use, as in `assignments`
        where, params = ("", ()) if queue is None else (" WHERE queue=?", (queue,))
        with self._read() as conn:
            rows = conn.execute("SELECT item_id, queue, decision, label, created, actor FROM decisions"
                                f"{where} ORDER BY created, item_id", params).fetchall()
        return pd.DataFrame(rows, columns=["item_id", "queue", "decision", "label", "created", "actor"])


def _check_queue(queue) -> str:
    if not isinstance(queue, str) or not queue.strip() or len(queue) > MAX_QUEUE_LENGTH:
        raise LabelStoreError(f"queue must be the name of a cleaning queue (text of 1 to {MAX_QUEUE_LENGTH} "
                              f"characters, e.g. 'label_issues'), not {queue!r}.")
    return queue.strip()


def _check_decision(decision, label) -> str:
    """The validated label of a relabel ('' for the other decisions)."""
    if decision not in DECISIONS:
        raise LabelStoreError(f"Unknown decision {decision!r}; use one of {', '.join(DECISIONS)}.")
    if decision != "relabel":
        if label is not None:
            raise LabelStoreError(f"A {decision!r} decision takes no label (got {label!r}); use "
                                  f"decide(..., 'relabel', {label!r}) to change the label.")
        return ""
    if label is None:
        raise LabelStoreError("A 'relabel' decision needs the new label: decide(items, queue, 'relabel', 'cat').")
    return validate_name(label)


def _set_decided(conn, items: list[int], row: list, changes: Changes) -> None:
    """Replace each item's decision in row's queue by `row` (unless it is already that decision)."""
    queue, decision, label = row[:3]
    before = read_decided(conn, items)
    after = {}
    for item, rows in before.items():
        if any(old[:3] == [queue, decision, label] for old in rows):
            continue
        after[item] = sorted([old for old in rows if old[0] != queue] + [row])
    changes.add_decided(before, after)
    write_decided(conn, after)
