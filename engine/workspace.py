"""The project workspace on disk and its item table: which file is item i.

A workspace lives in `FOLDER/.labeler/` unless the caller names another folder (for a
read-only image folder). `labels.sqlite` holds the `items` table that gives every image a
stable integer id: ids are dense (0, 1, 2, ...) and never reused, files found later get new
ids, and files that disappear are marked missing, never dropped. Row i of every feature
array is item i. The label store (labeler/) adds its own tables to the same database.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ._atomic import write_error
from ._sqlite import connect, write_transaction
from .data import InputError, scan_images

logger = logging.getLogger(__name__)

WORKSPACE_DIRNAME = ".labeler"
DB_NAME = "labels.sqlite"

_ITEMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,   -- POSIX path relative to the image folder (or absolute)
    size INTEGER,                -- bytes, at the last scan
    mtime_ns INTEGER,            -- at the last scan
    sha1 TEXT,                   -- content hash, filled when the file is read for features
    missing INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Item:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    missing: bool


WRITE_TIMEOUT = 60.0  # seconds another process may hold the database before a write gives up


class Workspace:
    """An image folder and the folder where everything the app derives from it is kept."""

    def __init__(self, folder, workspace=None):
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: not a folder of images (it does not exist or is a file).")
        self.root = Path(workspace).expanduser().resolve() if workspace else self.folder / WORKSPACE_DIRNAME
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"Cannot create the workspace {self.root} ({err.strerror}). If the image folder is "
                f"read-only, give a writable workspace folder (--workspace PATH)."
            ) from err
        self.db_path = self.root / DB_NAME
        # image-named entries the last full scan could not make items of: {"path", "reason"} (data.scan_images)
        self.unusable: list[dict] = []
        with self.connect() as conn:
            conn.executescript(_ITEMS_SCHEMA)

    def connect(self) -> closing[sqlite3.Connection]:
        """`with ws.connect() as conn:` a connection that is closed on exit."""
        return closing(connect(self.db_path))

    def _write(self, conn: sqlite3.Connection):
        """One write transaction on the item table, waiting out other writers (engine/_sqlite.py)."""
        return write_transaction(conn, self.db_path, WRITE_TIMEOUT)

    def features_dir(self, backbone: str, size: int) -> Path:
        return self.root / "features" / f"{backbone}-{size}"

    def cache_dir(self, kind: str) -> Path:
        path = self.root / kind
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:               # a read-only or full disk: say what to do, not a traceback
            raise (write_error(path, err) or err) from err
        return path

    def abspath(self, path: str) -> Path:
        return self.folder / path

    def relative_name(self, path) -> str:
        """The items-table form of `path`: POSIX, relative to the folder when it lies inside it."""
        text = os.fspath(path).strip().replace("\\", "/")
        candidate = Path(text)
        if candidate.is_absolute():
            try:
                return candidate.relative_to(self.folder).as_posix()
            except ValueError:
                try:
                    return candidate.resolve().relative_to(self.folder).as_posix()
                except (ValueError, OSError):
                    return text
        while text.startswith("./"):
            text = text[2:]
        return text

    def sync_items(self, paths: list[str] | None = None) -> list[Item]:
        """Scan the folder (or take `paths`), register new files, refresh size/mtime, mark missing ones.

        Returns every item ever seen, in id order (row i = item i). A full scan also sets
        `unusable`: the entries named like images that cannot be items, with the reason.
        """
        if paths is None:
            scan = scan_images(self.folder)
            found = scan.paths
            self.unusable = [{"path": path, "reason": reason} for path, reason in scan.unusable]
        else:
            found = [_posix(p) for p in paths]
        stats = {p: _stat(self.folder / p) for p in found}
        with self.connect() as conn, self._write(conn):  # read and insert in one transaction: ids never clash
            self._record(conn, stats, full_scan=paths is None)
        return self.items()

    @staticmethod
    def _record(conn, stats: dict, *, full_scan: bool) -> None:
        """Insert new paths with the next ids, refresh size/mtime/missing, mark vanished files missing."""
        known = {row[1]: row for row in conn.execute("SELECT id, path, size, mtime_ns, missing FROM items")}
        next_id = len(known)
        now = time.time()
        for path, stat in stats.items():
            size, mtime = stat if stat else (None, None)
            row = known.get(path)
            if row is None:
                conn.execute("INSERT INTO items (id, path, size, mtime_ns, missing, added) VALUES (?,?,?,?,?,?)",
                             (next_id, path, size, mtime, int(stat is None), now))
                next_id += 1
            elif (row[2], row[3], row[4]) != (size, mtime, int(stat is None)):
                conn.execute("UPDATE items SET size=?, mtime_ns=?, missing=? WHERE id=?",
                             (size, mtime, int(stat is None), row[0]))
        if full_scan:
            gone = [row[0] for path, row in known.items() if path not in stats and not row[4]]
            conn.executemany("UPDATE items SET missing=1 WHERE id=?", [(i,) for i in gone])

    def items(self) -> list[Item]:
        with self.connect() as conn:
            rows = conn.execute("SELECT id, path, size, mtime_ns, missing FROM items ORDER BY id").fetchall()
        return [Item(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def set_hashes(self, hashes: dict[int, str]) -> None:
        with self.connect() as conn:
            with self._write(conn):
                conn.executemany("UPDATE items SET sha1=? WHERE id=?", [(h, i) for i, h in hashes.items()])


def _posix(path) -> str:
    return Path(path).as_posix()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
