"""Files replaced whole: a reader (or a crash) sees the old version or the new one, never half of one.

One implementation for every cache and export: feature and thumbnail arrays, row states,
metadata, projection caches and label CSVs.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

COPY_ROWS = 4096  # rows copied at a time when an array grows: memory stays bounded at 100k rows


@contextmanager
def atomic_output(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None):
    """Yield a file opened on a temporary name beside `path`; on success it is synced and renamed over `path`."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
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
    new = np.lib.format.open_memmap(temp, mode="w+", dtype=dtype, shape=(n_rows, *row_shape))
    kept = 0 if old is None else old.shape[0]
    for start in range(0, kept, COPY_ROWS):
        stop = min(start + COPY_ROWS, kept)
        new[start:stop] = old[start:stop]
    new.flush()
    del new, old
    os.replace(temp, path)
