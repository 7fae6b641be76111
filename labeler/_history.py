"""Undo and redo over SQLite for several processes at once: the base of the label store.

`UndoableStore` owns the connection and its lock, runs every change in a retried
`BEGIN IMMEDIATE` transaction, writes one `events` row per action (its diff compressed, see
`labeler/_changes.py`) and moves the state backwards and forwards along that log.

Each process or app instance is an *actor*. `undo()` takes the latest event not yet undone
(of one actor if given); `redo()` the most recently undone one. A new action by an actor
discards the redo stack of that actor (events it made or undid), as in any editor.

A browser tab is an actor of its own: `open_tab()` names the store's events "user@host · tab
3f2a9c" (the rows it labels keep naming the person, `actor`). Its `undo_own()` takes back its
own latest action, never another tab's made while it was open, and falls back to the latest
action made before it opened (what a page had done before a reload); `news()` tells what other
tabs did since the tab last looked.
"""
from __future__ import annotations

import logging
import getpass
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import _db
from ._changes import Changes, apply_changes
from ._labels import plural
from .errors import LabelStoreError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One undoable action in the history."""

    id: int
    actor: str
    kind: str           # assign, unassign, exclude, restore, create_label, rename_label, ...
    description: str    # "label 5,000 items 'cat'"
    count: int          # items (or labels) changed
    created: float
    undone: bool


@dataclass(frozen=True)
class Mark:
    """A point in the history: the last event id and the store's version then."""

    event: int
    version: int


LABELING_KINDS = ("assign", "import", "accept_predictions", "relabel")


@dataclass(frozen=True)
class News:
    """What others did since a mark (`UndoableStore.news`)."""

    who: int            # how many others (tabs, processes) acted
    actions: int        # their actions, still done
    labeled: int        # images their labeling actions changed
    undone: int         # earlier actions they undid
    until: Mark         # where the history stood when this was read: the next `news` starts there

    def __bool__(self) -> bool:
        return bool(self.actions or self.undone)

    def describe(self) -> str:
        """One sentence for people ("Another tab labeled 12 images since your last action (shown here now)."),
        or "" when nothing happened."""
        if not self:
            return ""
        who = "Another tab" if self.who <= 1 else f"{self.who} other tabs"
        did = []
        if self.labeled:
            did.append(f"labeled {plural(self.labeled, 'image')}")
        if self.actions and not self.labeled:
            did.append(f"made {plural(self.actions, 'change')}")
        if self.undone:
            did.append(f"undid {plural(self.undone, 'action')}")
        return f"{who} {' and '.join(did)} since your last action (shown here now)."


def _mark(conn) -> Mark:
    last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    return Mark(int(last), int(_db.get_meta(conn, "version", 0)))


def default_actor() -> str:
    """Who a change is recorded as when nobody says: the user's login name at this host ("ana@lab-pc")."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):            # no name for this uid (some containers): the uid itself
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "user"
    return f"{user}@{socket.gethostname()}"


class UndoableStore:
    """A connection to the workspace database with an undoable event log.

    Args:
        db_path: the workspace's `labels.sqlite` (created if needed).
        actor: who makes the changes (default `default_actor()`, "user@host"); undo/redo can be limited to it.
        timeout: seconds to keep retrying while another process holds the write lock.
    """

    def __init__(self, db_path, *, actor: str | None = None, timeout: float = 60.0):
        self.db_path = Path(db_path)
        self.actor = actor or default_actor()
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn = _db.open_connection(self.db_path, self.timeout)
        self.origin = self.actor       # who events are recorded as: the actor, or one tab of it (open_tab)
        self._opened_at = self.mark()  # the history as this instance found it

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.db_path)!r}, actor={self.actor!r})"

    # ---- transactions ---------------------------------------------------------------------

    @contextmanager
    def _write(self):
        with self._lock:
            with _db.write_transaction(self._connection(), self.db_path, self.timeout) as conn:
                yield conn

    @contextmanager
    def _read(self):
        with self._lock:
            with _db.read_transaction(self._connection(), self.db_path, self.timeout) as conn:
                yield conn

    def _connection(self):
        if self._conn is None:
            raise LabelStoreError(f"The label store {self.db_path} is closed. Open a new LabelStore to use it.")
        return self._conn

    def _record(self, conn, kind: str, description: str, count: int, changes: Changes) -> int:
        """Write the event for `changes` (nothing when nothing changed); returns its id or 0."""
        if not changes:
            return 0
        conn.execute("UPDATE events SET state=2 WHERE state=1 AND (actor=? OR undone_by=?)", (self.origin, self.origin))
        cursor = conn.execute("INSERT INTO events (actor, kind, description, count, created, payload) "
                              "VALUES (?,?,?,?,?,?)",
                              (self.origin, kind, description, count, time.time(), changes.encode()))
        _db.bump_version(conn)
        logger.info("%s: %s", self.origin, description)
        return int(cursor.lastrowid)

    @property
    def version(self) -> int:
        """A counter that increases on every change by anyone (compare it to see if a refresh is due)."""
        with self._lock:
            return int(_db.get_meta(self._connection(), "version", 0))

    # ---- undo and redo ----------------------------------------------------------------------

    def undo(self, *, actor: str | None = None) -> str | None:
        """Undo the latest event not yet undone (of `actor` if given); returns its description or None."""
        where, params = ("state=0", ()) if actor is None else ("state=0 AND actor=?", (actor,))
        return self._step(f"SELECT id, description, payload, actor FROM events WHERE {where} ORDER BY id DESC "
                          f"LIMIT 1", params, undo=True)

    def redo(self, *, actor: str | None = None) -> str | None:
        """Redo the latest undone event (of `actor` if given) unless a new action discarded it."""
        where, params = ("state=1", ()) if actor is None else ("state=1 AND actor=?", (actor,))
        return self._step(f"SELECT id, description, payload, actor FROM events WHERE {where} ORDER BY undo_seq DESC "
                          f"LIMIT 1", params, undo=False)

    def _step(self, query: str, params: tuple, *, undo: bool, made_by_others: str = "") -> str | None:
        """Undo or redo the event the query finds (columns id, description, payload, actor); `made_by_others`
        is added to the description returned when that event's actor is not this instance's origin."""
        with self._write() as conn:
            row = conn.execute(query, params).fetchone()
            if row is None:
                return None
            event_id, description, payload, actor = row
            skipped = apply_changes(conn, Changes.decode(payload), undo=undo)
            version = _db.bump_version(conn)
            if undo:
                conn.execute("UPDATE events SET state=1, undone_by=?, undo_seq=? WHERE id=?",
                             (self.origin, version, event_id))
            else:
                conn.execute("UPDATE events SET state=0, undone_by=NULL, undo_seq=NULL WHERE id=?", (event_id,))
        logger.info("%s: %s %s (%d units changed by others since were kept)",
                    self.origin, "undid" if undo else "redid", description, skipped)
        if made_by_others and actor != self.origin:
            description += made_by_others
        return description if not skipped else f"{description} (kept {plural(skipped, 'later change')} by others)"

    # ---- one browser tab among several ------------------------------------------------------

    def open_tab(self) -> str:
        """Record this instance's events as one tab of the actor (a fresh name), its history starting now."""
        self.origin = f"{self.actor} · tab {secrets.token_hex(3)}"
        self._opened_at = self.mark()
        return self.origin

    def mark(self) -> Mark:
        """Where the history stands now: compare a later `news(mark)` with it."""
        with self._read() as conn:
            return _mark(conn)

    _OWN_UNDO = "state=0 AND (actor=? OR id<=?)"      # own actions, then those made before the tab opened
    _OWN_REDO = "state=1 AND undone_by=?"

    def undo_own(self) -> str | None:
        """Undo this tab's latest action still done; with none, the latest one made before the tab opened
        (said so: it may be another tab's). Never an action another tab made while this one was open."""
        return self._step(f"SELECT id, description, payload, actor FROM events WHERE {self._OWN_UNDO} "
                          f"ORDER BY id DESC LIMIT 1", (self.origin, self._opened_at.event), undo=True,
                          made_by_others=" (made before this tab opened)")

    def redo_own(self) -> str | None:
        """Redo the latest action this tab undid, unless its own newer action discarded it."""
        return self._step(f"SELECT id, description, payload, actor FROM events WHERE {self._OWN_REDO} "
                          f"ORDER BY undo_seq DESC LIMIT 1", (self.origin,), undo=False)

    def can_undo_own(self) -> bool:
        with self._read() as conn:
            return conn.execute(f"SELECT 1 FROM events WHERE {self._OWN_UNDO} LIMIT 1",
                                (self.origin, self._opened_at.event)).fetchone() is not None

    def can_redo_own(self) -> bool:
        with self._read() as conn:
            return conn.execute(f"SELECT 1 FROM events WHERE {self._OWN_REDO} LIMIT 1", (self.origin,)).fetchone() \
                is not None

    def news(self, since: Mark) -> News:
        """What others (other tabs, other processes) did after `since`: their actions still done, the images
        their labeling actions changed, and how many earlier actions they undid (their redos are not told)."""
        with self._read() as conn:
            made = conn.execute("SELECT actor, kind, count FROM events WHERE id>? AND actor!=? AND state=0",
                                (since.event, self.origin)).fetchall()
            # by the undo_seq index (`+id`: not the primary key's, which would read the whole history)
            undone = conn.execute("SELECT undone_by FROM events WHERE undo_seq>? AND +id<=? AND state>0 "
                                  "AND undone_by!=?", (since.version, since.event, self.origin)).fetchall()
            until = _mark(conn)              # the same snapshot: nothing falls between two calls
        return News(who=len({row[0] for row in made} | {row[0] for row in undone}), actions=len(made),
                    labeled=sum(count for _, kind, count in made if kind in LABELING_KINDS), undone=len(undone),
                    until=until)

    def can_undo(self, actor: str | None = None) -> bool:
        return self._exists("state=0", actor)

    def can_redo(self, actor: str | None = None) -> bool:
        return self._exists("state=1", actor)

    def _exists(self, where: str, actor: str | None) -> bool:
        with self._read() as conn:
            if actor is None:
                return conn.execute(f"SELECT 1 FROM events WHERE {where} LIMIT 1").fetchone() is not None
            found = conn.execute(f"SELECT 1 FROM events WHERE {where} AND actor=? LIMIT 1", (actor,)).fetchone()
            return found is not None

    def history(self, limit: int = 50) -> list[Event]:
        """The latest events, newest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT id, actor, kind, description, count, created, state FROM events "
                                "ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [Event(*row[:6], undone=bool(row[6])) for row in rows]

    def event(self, event_id: int) -> Event:
        with self._read() as conn:
            row = conn.execute("SELECT id, actor, kind, description, count, created, state FROM events WHERE id=?",
                               (int(event_id),)).fetchone()
        if row is None:
            raise LabelStoreError(f"No event {event_id!r} in the history (event ids start at 1; 0 means "
                                  f"'nothing changed').")
        return Event(*row[:6], undone=bool(row[6]))
