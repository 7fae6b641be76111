"""The label tables inside the workspace's `labels.sqlite`, and transactions that never report a lock.

The engine's `items` table lives in the same file; these tables refer to its ids. Every
write is one `BEGIN IMMEDIATE ... COMMIT` through engine/_sqlite.py (WAL, lock waits retried
so callers never see "database is locked"), here with `synchronous=FULL`: labels are the one
thing that must never be lost.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from engine import _sqlite

from .errors import LabelStoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 500             # ids per `IN (...)` query, well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS label_meta (
    key TEXT PRIMARY KEY,
    value                          -- schema_version, multi_label (0/1), version (change counter)
);
CREATE TABLE IF NOT EXISTS label_defs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so undo can restore a deleted label
    name TEXT NOT NULL UNIQUE,
    colour TEXT NOT NULL,                   -- "#rrggbb"
    position INTEGER NOT NULL               -- display order (ties broken by id)
);
CREATE TABLE IF NOT EXISTS assignments (
    item_id INTEGER NOT NULL,               -- items.id
    label_id INTEGER NOT NULL,              -- label_defs.id
    source TEXT NOT NULL,                   -- human, model or import
    created REAL NOT NULL,                  -- unix time
    actor TEXT NOT NULL,                    -- which app instance or process
    PRIMARY KEY (item_id, label_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assignments_by_label ON assignments (label_id);
CREATE TABLE IF NOT EXISTS exclusions (
    item_id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    actor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (       -- cleaning: what a person decided about an item in a queue
    item_id INTEGER NOT NULL,
    queue TEXT NOT NULL,                    -- label_issues, top_losses, duplicates, odd_files
    decision TEXT NOT NULL,                 -- keep, relabel or exclude
    label TEXT NOT NULL,                    -- the new label of a relabel, "" otherwise
    created REAL NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (item_id, queue)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,                     -- assign, unassign, exclude, create_label, ...
    description TEXT NOT NULL,              -- "label 5,000 items 'cat'"
    count INTEGER NOT NULL,                 -- items (or labels) the event changed
    created REAL NOT NULL,
    payload BLOB NOT NULL,                  -- zlib-compressed JSON diff: see labeler/_changes.py
    state INTEGER NOT NULL DEFAULT 0,       -- 0 done, 1 undone (redo possible), 2 undone and discarded
    undone_by TEXT,
    undo_seq INTEGER                        -- label_meta.version when undone: redo takes the latest
);
CREATE INDEX IF NOT EXISTS events_by_actor ON events (actor, state, id);
CREATE INDEX IF NOT EXISTS events_by_undo ON events (undo_seq);  -- a tab's redo, and what others undid lately
CREATE TABLE IF NOT EXISTS checks (          -- what a person saw when checking a model's predictions
    model_id TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    threshold REAL NOT NULL,                -- the check sampled uniformly from images predicted at or above it
    confidence REAL NOT NULL,               -- the probability of the prediction shown
    agreed INTEGER NOT NULL,                -- 1: kept as predicted, 0: dropped or labeled otherwise
    created REAL NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (model_id, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the latest model is the highest seq
    model_id TEXT NOT NULL UNIQUE,
    classes TEXT NOT NULL,                  -- JSON list of class names, column order of probs
    n_items INTEGER NOT NULL,
    item_ids BLOB NOT NULL,                 -- int64, little-endian
    probs BLOB NOT NULL,                    -- float32 (n_items, len(classes)), little-endian, C order
    created REAL NOT NULL
);
"""


def open_connection(db_path: Path, timeout: float) -> sqlite3.Connection:
    """A connection to `db_path` with WAL, synchronous=FULL and the busy timeout; creates the tables."""
    conn = None
    try:
        conn = _sqlite.connect(db_path, synchronous="FULL")
        with write_transaction(conn, db_path, timeout):
            _create_schema(conn)
    except sqlite3.OperationalError as err:
        _close(conn)
        raise LabelStoreError(f"Cannot open the label database {db_path} ({err}). Check that its folder "
                              f"exists and is writable, or give another workspace.") from err
    except sqlite3.DatabaseError as err:
        _close(conn)
        raise LabelStoreError(f"{db_path} is not a usable label database ({err}). It may be damaged or not a "
                              f"labeler file: keep a copy, then move it away or give another workspace "
                              f"(--workspace) to start a fresh one.") from err
    except _sqlite.DatabaseBusyError as err:
        _close(conn)
        raise LabelStoreError(str(err)) from err
    except BaseException:
        _close(conn)
        raise
    return conn


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        conn.close()


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO label_meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO label_meta (key, value) VALUES ('version', 0)")
    found = conn.execute("SELECT value FROM label_meta WHERE key='schema_version'").fetchone()[0]
    if int(found) > SCHEMA_VERSION:
        raise LabelStoreError(f"The label database was written by a newer labeler (schema {found}; this one "
                              f"reads up to {SCHEMA_VERSION}). Upgrade labeler to open it.")


def write_transaction(conn: sqlite3.Connection, db_path: Path, timeout: float):
    """`BEGIN IMMEDIATE` ... `COMMIT` with lock waits retried; a lock that outlasts `timeout` is a LabelStoreError."""
    return _sqlite.write_transaction(conn, db_path, timeout, LabelStoreError, "label database")


@contextmanager
def read_transaction(conn: sqlite3.Connection, db_path: Path, timeout: float) -> Iterator[sqlite3.Connection]:
    """A consistent snapshot for several SELECTs (WAL readers never wait for writers)."""
    _sqlite.retry_busy(lambda: conn.execute("BEGIN"), db_path, timeout, LabelStoreError, "label database")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def select_in(conn: sqlite3.Connection, sql: str, ids: Sequence[int]) -> list[tuple]:
    """Rows of `sql` (which holds one `{ids}` placeholder for an IN list) for every id, in chunks."""
    rows: list[tuple] = []
    for part in chunks(list(ids)):
        rows.extend(conn.execute(sql.format(ids=",".join("?" * len(part))), part).fetchall())
    return rows


def bump_version(conn: sqlite3.Connection) -> int:
    """Count one more change (call inside a write transaction); returns the new version."""
    conn.execute("UPDATE label_meta SET value = value + 1 WHERE key='version'")
    return int(conn.execute("SELECT value FROM label_meta WHERE key='version'").fetchone()[0])


def get_meta(conn: sqlite3.Connection, key: str, default=None):
    row = conn.execute("SELECT value FROM label_meta WHERE key=?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value) -> None:
    conn.execute("INSERT OR REPLACE INTO label_meta (key, value) VALUES (?, ?)", (key, value))
