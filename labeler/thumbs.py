"""Thumbnails of every item as one uint8 memory-mapped array on disk, row i = item i.

`ThumbCache(workspace, size=64)` keeps, in `<workspace>/thumbs/`:
  `<size>.npy`       uint8 (n_items, size, size, 3): each image fitted inside size x size,
                     aspect kept, centred on a dark grey pad; unreadable files hold a dark red
                     tile with an X;
  `<size>-<s>.npy`   the same tiles averaged down to s = size/2, size/4, ... (not below 8):
                     the map draws thousands of small tiles per view, and shrinking them from
                     the full size each time would cost more than everything else together;
  `<size>.rows.npy`  for each row, the file size and mtime it was made from and its status
                     (the row layout and states of `engine.features`);
  `<size>.json`      a version that changes whenever rows change, and the reason each failed
                     file could not be read.
`build()` makes only the rows that are new or whose file changed, the rule `engine.embedding`
uses for features, streaming through the files a few dozen at a time, so memory stays flat at
100k items. The arrays are grown by writing new files and renaming them over the old ones, and
progress is flushed every few seconds (pixels first, then the row states that vouch for
them), so a killed build keeps what it made.
"""
from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from engine.data import ImageReadError, decode_image, read_image_bytes
from engine._workers import default_workers, worker_start_method
from engine.embedding import rows_to_compute
from engine._atomic import grow_npy, save_npy, write_text
from engine.features import DONE, FAILED, PENDING, ROW_DTYPE, RowStates
from engine.workspace import Item, Workspace

from .errors import ThumbnailError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

PAD_RGB = (40, 40, 40)  # around a fitted image, and the whole tile of a row not built yet
FAILED_RGB = (96, 16, 16)  # the tile of a file that cannot be read ...
CROSS_RGB = (220, 90, 90)  # ... crossed out
DEFAULT_SIZE = 64

_CHUNK = 32  # files per task sent to a worker process
_FLUSH_SECONDS = 5.0
_MIN_LEVEL = 8  # the smallest tile size stored


@dataclass
class ThumbBuildResult:
    """What `ThumbCache.build` did: rows made now, rows reused, and the files that failed (with reasons)."""

    built: int
    cached: int
    failed: list[dict] = field(default_factory=list)
    n_items: int = 0


class ThumbCache(RowStates):
    """The thumbnails of one workspace at one tile size (see the module docstring for the files)."""

    def __init__(self, workspace: Workspace, size: int = DEFAULT_SIZE):
        self.workspace, self.size = workspace, _check_size(size)
        self.dir = workspace.cache_dir("thumbs")
        self.levels = _levels(size)
        self.path = self.dir / f"{size}.npy"
        self._files = {level: self.dir / f"{size}-{level}.npy" for level in self.levels[1:]} | {size: self.path}
        self._rows_path = self.dir / f"{size}.rows.npy"
        self._meta_path = self.dir / f"{size}.json"
        self._paths: list[str] = []
        self.reload()

    # -- reading -------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the files (after another process built rows)."""
        self.meta = json.loads(self._meta_path.read_text()) if self._meta_path.exists() else {}
        rows = np.load(self._rows_path) if self._rows_path.exists() else np.zeros(0, dtype=ROW_DTYPE)
        self._arrays = self._open("r")
        self.rows = rows[: self._n_array_rows()]  # rows beyond the arrays vouch for nothing

    def get(self, ids, size: int | None = None) -> np.ndarray:
        """uint8 (k, s, s, 3) tiles of `ids`, s = `size` (default: the cache's size).

        A size in `levels` is read as stored; any other is resized from the nearest larger
        level. Failed files give the crossed-out tile, rows not built yet a plain grey one.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and ids.min() < 0:
            raise IndexError(f"Item ids must be >= 0; got {int(ids.min())}.")
        size = self.size if size is None else _check_size(size)
        level = _source_level(self.levels, size)
        stored = np.zeros(len(ids), dtype=bool)  # made, well or as a failure tile
        known = ids < len(self.rows)
        stored[known] = self.rows["status"][ids[known]] != PENDING
        if stored.size and stored.all():  # the usual case: one gather, no second copy
            tiles = np.asarray(self._arrays[level][ids])
        else:
            tiles = np.empty((len(ids), level, level, 3), dtype=np.uint8)
            tiles[~stored] = PAD_RGB
            if stored.any():
                tiles[stored] = self._arrays[level][ids[stored]]
        return resize_tiles(tiles, size)

    def jpeg(self, item_id: int, size: int | None = None, quality: int = 85) -> bytes:
        """One tile as JPEG bytes, at the cache's size or resized to `size` x `size`."""
        tile = Image.fromarray(self.get([item_id])[0])
        if size is not None and size != self.size:
            tile = _fit(tile, size)
        return encode_jpeg(tile, quality)

    def preview_jpeg(self, item_id: int, size: int = 256, quality: int = 85) -> bytes:
        """The original image fitted inside `size` x `size` (aspect kept, EXIF orientation applied,
        no padding) as JPEG, for a hover preview; the tile at `size` if the file cannot be read.

        Decodes in the calling thread (`engine.data.decode_image` is not thread-safe): call it
        from one thread, or while no in-process (`workers=0`) build runs in another."""
        path = self._path_of(item_id)
        if path is not None:
            full = self.workspace.abspath(path)
            try:
                return encode_jpeg(_fit(decode_image(read_image_bytes(full), full, size=size), size), quality)
            except ImageReadError as err:
                logger.debug("preview of item %s falls back to its tile: %s", item_id, err.reason)
        return self.jpeg(item_id, size=size, quality=quality)

    # -- building ------------------------------------------------------------------------
    def build(self, items: Sequence[Item] | None = None, progress: ProgressFn | None = None,
              workers: int | None = None) -> ThumbBuildResult:
        """Make the missing and out-of-date rows; returns what was built, reused and failed.

        `items` is the workspace's whole item list in id order (default `workspace.items()`;
        pass `workspace.sync_items()` to scan the folder first). `workers` decoding processes
        (default: one per core but one, at most 4); 0 decodes in this process. `progress(done,
        total)` is called after every chunk of files.
        """
        items = list(self.workspace.items() if items is None else items)
        _check_dense(items)
        self._paths = [item.path for item in items]
        todo = rows_to_compute(items, self)
        if todo:
            stats = [(_or_minus_one(it.size), _or_minus_one(it.mtime_ns)) for it in items]
            self._prepare(len(items))
            self._write_rows(todo, stats, default_workers() if workers is None else workers, progress)
        elif progress:
            progress(0, 0)
        live = [item for item in items if not item.missing]
        failures, done, computed = self.failures, self.done_mask(len(items)), {row for row, _ in todo}
        return ThumbBuildResult(
            built=sum(1 for row in computed if done[row]),
            cached=sum(1 for item in live if item.id not in computed and done[item.id]),
            failed=[{"path": item.path, "reason": failures[item.id]} for item in live if item.id in failures],
            n_items=len(items))

    def _write_rows(self, todo, stats, workers, progress) -> None:
        arrays = self._open("r+")
        folder = str(self.workspace.folder)
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        done, last_flush = 0, time.monotonic()
        try:
            for ids, tiles, failed in _run_chunks(folder, chunks, self.size, workers):
                for level in self.levels:  # each level halves the one before: a box filter throughout
                    tiles = resize_tiles(tiles, level)
                    arrays[level][ids] = tiles
                for row in ids:
                    self.mark(row, *stats[row], DONE)
                for row, reason in failed:
                    logger.warning("no thumbnail for %s: %s", self.workspace.abspath(self._paths[row]), reason)
                    self.mark(row, *stats[row], FAILED, reason)
                done += len(ids)
                if time.monotonic() - last_flush > _FLUSH_SECONDS:  # a killed build keeps what it made
                    self._flush(arrays)
                    last_flush = time.monotonic()
                if progress:
                    progress(done, len(todo))
        finally:
            self._flush(arrays)
            del arrays
            self._arrays = self._open("r")

    def _flush(self, arrays: dict[int, np.memmap]) -> None:
        """Pixels first, then the row states that vouch for them, then the metadata."""
        for array in arrays.values():
            array.flush()
        self.meta.update(size=self.size, levels=list(self.levels), version=self.version + 1)
        save_npy(self._rows_path, self.rows)
        write_text(self._meta_path, json.dumps(self.meta, indent=1))

    def _prepare(self, n_rows: int) -> None:
        """Grow every level and the row states to `n_rows` (a crash leaves old or new files)."""
        if self._n_array_rows() < n_rows:  # readers keep the old maps (of the old files) meanwhile
            for level, path in self._files.items():
                grow_npy(path, n_rows, (level, level, 3), np.uint8)
        if len(self.rows) < n_rows:
            rows = np.zeros(n_rows, dtype=ROW_DTYPE)
            rows[: len(self.rows)] = self.rows
            self.rows = rows
        self._arrays = self._open("r")

    def _open(self, mode: str) -> dict[int, np.memmap] | None:
        """Every level's array, or None when one is absent or not made for this size (all are remade)."""
        arrays = {}
        for level, path in self._files.items():
            if not path.exists():
                return None
            array = np.load(path, mmap_mode=mode)
            if array.dtype != np.uint8 or array.shape[1:] != (level, level, 3):
                logger.warning("ignoring %s: %s %s is not uint8 (n, %d, %d, 3)", path, array.dtype, array.shape,
                               level, level)
                return None
            arrays[level] = array
        return arrays

    def _n_array_rows(self) -> int:
        """Rows present in every level (a build killed while growing them can leave them uneven)."""
        return 0 if self._arrays is None else min(array.shape[0] for array in self._arrays.values())

    def _path_of(self, item_id: int) -> str | None:
        if item_id >= len(self._paths):  # paths never change for an id, so a cached list stays true
            self._paths = [item.path for item in self.workspace.items()]
        return self._paths[item_id] if 0 <= item_id < len(self._paths) else None


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ThumbnailError(f"Thumbnail size must be a positive int of pixels (e.g. 64), not {size!r}.")
    return int(size)


def _levels(size: int) -> tuple[int, ...]:
    """The stored sizes: `size`, then halves while they stay whole and >= 8 (64 -> 64, 32, 16, 8)."""
    levels = [size]
    while levels[-1] % 2 == 0 and levels[-1] // 2 >= _MIN_LEVEL:
        levels.append(levels[-1] // 2)
    return tuple(levels)


def _source_level(levels: tuple[int, ...], size: int) -> int:
    """The level to read for tiles of `size`: the smallest one above it that it divides, else the largest."""
    fitting = [level for level in levels if level >= size and level % size == 0]
    return min(fitting) if fitting else levels[0]


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value


# -- tiles ----------------------------------------------------------------------------------
def make_tile(image: Image.Image, size: int) -> np.ndarray:
    """uint8 (size, size, 3): `image` fitted inside the square, aspect kept, centred on `PAD_RGB`."""
    fitted = _fit(image, size)
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = PAD_RGB
    top, left = (size - fitted.height) // 2, (size - fitted.width) // 2
    tile[top:top + fitted.height, left:left + fitted.width] = np.asarray(fitted)
    return tile


def failed_tile(size: int) -> np.ndarray:
    """uint8 (size, size, 3): the dark red, crossed-out tile of a file that cannot be read."""
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = FAILED_RGB
    yy, xx = np.indices((size, size))
    margin, half_width = size // 4, max(1, size // 24) / 2
    inside = (yy >= margin) & (yy < size - margin) & (xx >= margin) & (xx < size - margin)
    cross = (np.abs(yy - xx) <= half_width) | (np.abs(yy + xx - (size - 1)) <= half_width)
    tile[inside & cross] = CROSS_RGB
    return tile


def resize_tiles(tiles: np.ndarray, size: int) -> np.ndarray:
    """uint8 (k, size, size, 3) from square tiles (k, s, s, 3), fast for the usual sizes.

    Shrinking by a whole factor (64 -> 32, 16, 8) averages pixel blocks in one Pillow call over
    all tiles stacked (blocks never straddle two tiles); growing by a whole factor repeats
    pixels; any other ratio resizes tile by tile (slower: about 25 us a tile).
    """
    k, s = tiles.shape[0], tiles.shape[1]
    if s == size:
        return tiles
    if k == 0:
        return np.empty((0, size, size, 3), dtype=np.uint8)
    if s % size == 0:
        stacked = Image.fromarray(np.ascontiguousarray(tiles).reshape(k * s, s, 3))
        return np.asarray(stacked.reduce(s // size)).reshape(k, size, size, 3)
    if size % s == 0:
        factor = size // s
        return tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.stack([np.asarray(Image.fromarray(t).resize((size, size), Image.BILINEAR)) for t in tiles])


def _fit(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled (up or down) so its longer side is `size`, aspect kept."""
    width, height = image.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new == image.size:
        return image
    return image.resize(new, Image.LANCZOS if scale < 1 else Image.BICUBIC)


def encode_jpeg(image: Image.Image | np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of a PIL image or a uint8 (h, w, 3) array: tiles, previews, the map and the review grid."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _make_tiles(folder: str, jobs: list[tuple[int, str]], size: int):
    """Worker task: (ids, tiles (k, size, size, 3), [(id, reason)] of the files that failed)."""
    tiles = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    failed = []
    for index, (row, path) in enumerate(jobs):
        full = os.path.join(folder, path)
        try:
            tiles[index] = make_tile(decode_image(read_image_bytes(full), full, size=size), size)
        except ImageReadError as err:
            tiles[index] = failed_tile(size)
            failed.append((row, err.reason))
    return [row for row, _ in jobs], tiles, failed


def _run_chunks(folder: str, chunks: list, size: int, workers: int) -> Iterator[tuple]:
    """Results of `_make_tiles` for each chunk, in order, with at most a few chunks in flight."""
    if workers <= 0:
        for chunk in chunks:
            yield _make_tiles(folder, chunk, size)
        return
    context = multiprocessing.get_context(worker_start_method())
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from _bounded_map(pool, folder, chunks, size, in_flight=4 * workers)


def _bounded_map(pool: Executor, folder: str, chunks: list, size: int, in_flight: int) -> Iterator[tuple]:
    pending: deque[Future] = deque()
    for chunk in chunks:
        pending.append(pool.submit(_make_tiles, folder, chunk, size))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- files ----------------------------------------------------------------------------------
def _check_dense(items: list[Item]) -> None:
    for index, item in enumerate(items):
        if item.id != index:
            raise ThumbnailError(f"build() needs the workspace's whole item list in id order (row i = item i); "
                             f"position {index} holds item {item.id}. Pass workspace.items() or leave items out.")

