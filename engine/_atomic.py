"""Files replaced whole: a reader (or a crash) sees the old version or the new one, never half of one.

One implementation for every cache and export: feature and thumbnail arrays, row states,
metadata, projection caches, label CSVs and exported folder trees. What it creates gets the
user's normal permissions (0o666 for files and 0o777 for folders, less the process umask), as
`open` and `mkdir` give; `tempfile` would give 0o600 / 0o700, which no colleague and no job
running as another user could read.
"""
from __future__ import annotations

import errno
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DiskWriteError

COPY_ROWS = 4096  # rows copied at a time when an array grows: memory stays bounded at 100k rows
_ATTEMPTS = 100   # random names tried before giving up (a clash is already one in 4 billion)
# errno values that mean "this disk cannot take the write", whatever the write was
_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def write_error(path, err: OSError, *, creating: bool = True) -> DiskWriteError | None:
    """The DiskWriteError for `err` raised while writing `path`, or None when `err` is about something else.

    Permission errors count only while `creating` the file: an EACCES from a caller's body may be a
    read of some other file, and must keep its own message.
    """
    if isinstance(err, DiskWriteError):
        return None
    reason = err.strerror or str(err)
    if err.errno in _FULL:
        return DiskWriteError.about(path, reason, DiskWriteError.FULL)
    if err.errno == errno.EROFS or (creating and err.errno in _READ_ONLY):
        return DiskWriteError.about(path, reason, DiskWriteError.READ_ONLY)
    return None


def _create_beside(path: Path, tag: str, create):
    """`create(candidate)` on a new hidden name `.<name>.<random>.<tag>` beside `path`; returns (result, name)."""
    for _ in range(_ATTEMPTS):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.{tag}"
        try:
            return create(candidate), candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise (write_error(path, err) or err) from err
    raise FileExistsError(f"No free temporary name beside {path} after {_ATTEMPTS} tries.")


def new_dir_beside(path, tag: str = "tmp") -> Path:
    """A new empty hidden folder beside `path` (to build something whole, then rename it to `path`)."""
    return _create_beside(Path(path), tag, lambda candidate: os.mkdir(candidate, 0o777))[1]


@contextmanager
def atomic_output(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None):
    """Yield a file opened on a temporary name beside `path`; on success it is synced and renamed over `path`."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    handle, temp = _create_beside(path, "tmp", lambda candidate: os.open(candidate, flags, 0o666))
    try:
        with os.fdopen(handle, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as err:
        Path(temp).unlink(missing_ok=True)
        translated = write_error(path, err, creating=False) if isinstance(err, OSError) else None
        if translated is not None:
            raise translated from err
        raise


def save_npy(path, array: np.ndarray) -> None:
    with atomic_output(path) as f:
        np.save(f, array)


def write_text(path, text: str) -> None:
    with atomic_output(path, "w", encoding="utf-8") as f:
        f.write(text)


def grow_npy(path: Path, n_rows: int, row_shape: tuple[int, ...], dtype) -> None:
    """Make the .npy at `path` hold at least `n_rows` rows of `row_shape`, keeping the rows it had.

    A file with another row shape is started afresh. The new array is written under a
    temporary name and renamed, so a crash leaves the old or the new file.
    """
    old = np.load(path, mmap_mode="r") if path.exists() else None
    if old is not None and old.shape[1:] != tuple(row_shape):
        old = None
    if old is not None and old.shape[0] >= n_rows:
        return
    temp = path.with_name(f".{path.name}.grow.npy")
    try:
        new = np.lib.format.open_memmap(temp, mode="w+", dtype=dtype, shape=(n_rows, *row_shape))
        _reserve(temp)
        kept = 0 if old is None else old.shape[0]
        for start in range(0, kept, COPY_ROWS):
            stop = min(start + COPY_ROWS, kept)
            new[start:stop] = old[start:stop]
        new.flush()
        del new, old
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise (write_error(path, err) or err) from err


def _reserve(path: Path) -> None:
    """Allocate every block of the (sparse) file at `path` now.

    A memory map of a sparse file on a full disk (a small tmpfs) dies of SIGBUS at the first
    write to a page with no block behind it; reserved up front, a full disk is an OSError here.
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        allocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: go on
            raise
    finally:
        os.close(fd)
