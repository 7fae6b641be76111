"""SQLite as every writer of the workspace database uses it: WAL, a busy timeout, and lock waits retried.

SQLite's busy timeout waits for another writer once; `BEGIN IMMEDIATE` and `COMMIT` are also
retried with backoff until `timeout` seconds have passed, so a caller never sees "database is
locked" while another process (a second tab, the CLI) is merely busy.
"""
from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DatabaseBusyError, DiskWriteError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000   # one wait inside SQLite; retry_busy repeats it until the caller's timeout
# SQLite result codes that mean the disk cannot take the write (sqlite3.Error.sqlite_errorname)
_DISK_FULL = ("SQLITE_FULL", "SQLITE_IOERR")
_READ_ONLY = ("SQLITE_READONLY", "SQLITE_CANTOPEN")


def disk_error(err: sqlite3.Error, db_path: Path) -> DiskWriteError | None:
    """The DiskWriteError `err` stands for (a full or read-only disk), or None for any other failure.

    SQLite rolls back what it could not write, so the database itself stays whole; the message
    says what to do instead of showing "disk I/O error" with a traceback.
    """
    name = getattr(err, "sqlite_errorname", "") or ""
    if name.startswith(_DISK_FULL):
        return DiskWriteError.about(db_path, str(err), DiskWriteError.FULL)
    if name.startswith(_READ_ONLY):
        return DiskWriteError.about(db_path, str(err), DiskWriteError.READ_ONLY)
    return None


def connect(db_path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """An autocommit connection (explicit transactions) in WAL mode with the busy timeout."""
    conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"), db_path, 60.0)
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection, db_path: Path, timeout: float,
                      error_type: type[Exception] = DatabaseBusyError,
                      what: str = "database") -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` (retried while another writer holds the lock) ... `COMMIT`, or `ROLLBACK` on error."""
    retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), db_path, timeout, error_type, what)
    try:
        yield conn
        retry_busy(lambda: conn.execute("COMMIT"), db_path, timeout, error_type, what)
    except BaseException as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        translated = disk_error(err, db_path) if isinstance(err, sqlite3.Error) else None
        if translated is not None:
            raise translated from err
        raise


def retry_busy(statement, db_path: Path, timeout: float, error_type: type[Exception] = DatabaseBusyError,
               what: str = "database"):
    """Run `statement()` until it does not fail with a busy/locked error or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as err:
            text = str(err).lower()
            if "locked" not in text and "busy" not in text:
                translated = disk_error(err, db_path)
                if translated is not None:
                    raise translated from err
                raise
            if time.monotonic() >= deadline:
                raise error_type(
                    f"The {what} {db_path} stayed locked by another process for {timeout:.0f} s. "
                    f"Close other labeler windows or scripts writing to it, then try again.") from err
            logger.debug("%s busy (%s); retrying in %.3f s", what, err, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)
