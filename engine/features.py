"""Per-layer pooled features on disk: float16 memory-mapped arrays, row i = item i.

A cache folder (`features/<backbone>-<size>/`) holds one `<layer>.npy` per layer, `rows.npy`
(for each row: the file size and mtime it was computed from, and whether it succeeded) and
`meta.json` (layers, widths, a version that changes whenever any row changes, and the
reasons for files that could not be read). Files are grown by writing a new file and
renaming it over the old one, so a crash leaves either the old or the new array.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from . import pooling
from ._atomic import grow_npy, save_npy, write_error, write_text
from .errors import FeatureCacheError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

ROW_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("status", "i1")])
PENDING, DONE, FAILED = 0, 1, 2


class RowStates:
    """Per-row bookkeeping shared by the caches whose row i belongs to item i.

    Subclasses hold `rows` (a ROW_DTYPE array: size and mtime each row was made from, status)
    and `meta` (a dict with a `version` and the `failures` reasons), as stored on disk.
    """

    rows: np.ndarray
    meta: dict

    @property
    def version(self) -> int:
        """Changes whenever a row is (re)computed: part of every key derived from the cache."""
        return int(self.meta.get("version", 0))

    @property
    def failures(self) -> dict[int, str]:
        """Item id -> why its file could not be read."""
        return {int(k): v for k, v in self.meta.get("failures", {}).items()}

    def done_mask(self, n: int | None = None) -> np.ndarray:
        """Boolean mask of rows holding valid data (padded with False to n rows)."""
        n = len(self.rows) if n is None else n
        mask = np.zeros(n, dtype=bool)
        m = min(n, len(self.rows))
        mask[:m] = self.rows["status"][:m] == DONE
        return mask

    def mark(self, row: int, size: int, mtime_ns: int, status: int, reason: str | None = None) -> None:
        """Record what row `row` was made from and whether it worked (with the reason when not)."""
        self.rows[row] = (size, mtime_ns, status)
        failures = self.meta.setdefault("failures", {})
        if reason is None:
            failures.pop(str(row), None)
        else:
            failures[str(row)] = reason


class FeatureCache(RowStates):
    """Read and write the per-layer feature arrays of one backbone at one image size."""

    def __init__(self, directory, *, backbone: str, size: int):
        self.dir = Path(directory)
        self.backbone, self.size = backbone, size
        self.meta = self._read_meta()
        self.rows = self._read_rows()

    # -- reading -------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        return list(self.meta.get("layers", []))

    def load(self, layer: str, pooling_name: str | None = None, *, mmap: bool = True) -> np.ndarray:
        """(n_rows, dim) float16 features of `layer` (memory-mapped), columns picked by `pooling_name`."""
        if layer not in self.layers:
            raise FeatureCacheError(
                f"No features for layer {layer!r} in {self.dir}. Layers here: {', '.join(self.layers) or 'none'}. "
                f"Run `labeler embed` first."
            )
        array = np.load(self.dir / f"{_safe(layer)}.npy", mmap_mode="r" if mmap else None)
        return array if pooling_name is None else pooling.select(array, pooling_name)

    def projection_key(self, layer: str, pooling_name: str, rows) -> str:
        """The cache key of a projection of `layer`'s `pooling_name` columns over the item ids `rows`.

        `engine.projection.cached_projection` adds the method and its parameters; the app and the
        CLI both key their projections here, so each reuses what the other computed. The key names
        this cache's version (re-embedded features miss) and the exact rows (a projection over other
        images, even as many, is another projection).
        """
        ids = np.ascontiguousarray(np.asarray(rows, dtype=np.int64))
        digest = hashlib.sha1(ids.tobytes()).hexdigest()[:16]
        return f"{self.backbone}-{self.size}/{layer}/{pooling_name}/v{self.version}/rows-{len(ids)}-{digest}"

    # -- writing -------------------------------------------------------------------------
    def prepare(self, layers: list[str], dims: dict[str, int], n_rows: int) -> None:
        """Make sure every layer's array exists with at least `n_rows` rows and the right width."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:               # a read-only or full disk: say what to do, not a traceback
            raise (write_error(self.dir, err) or err) from err
        if self.layers and (self.layers != list(layers) or self.meta.get("dims") != dims):
            raise FeatureCacheError(
                f"{self.dir} holds features for layers {self.layers}, not {list(layers)}; "
                f"delete that folder to recompute."
            )
        self.meta.update(backbone=self.backbone, size=self.size, layers=list(layers), dims=dims,
                         pooling_grid=pooling.GRID)
        for layer in layers:
            grow_npy(self.dir / f"{_safe(layer)}.npy", n_rows, (dims[layer],), np.float16)
        if len(self.rows) < n_rows:
            rows = np.zeros(n_rows, dtype=ROW_DTYPE)
            rows[: len(self.rows)] = self.rows
            self.rows = rows
        self.flush()

    def open_for_writing(self) -> dict[str, np.memmap]:
        return {layer: np.load(self.dir / f"{_safe(layer)}.npy", mmap_mode="r+") for layer in self.layers}

    def flush(self, arrays: dict[str, np.memmap] | None = None) -> None:
        """Write features first, then the row states that vouch for them, then the metadata."""
        for array in (arrays or {}).values():
            array.flush()
        self.meta["version"] = self.version + 1
        save_npy(self.dir / "rows.npy", self.rows)
        write_text(self.dir / "meta.json", json.dumps(self.meta, indent=1))

    # -- internals -----------------------------------------------------------------------
    def _read_meta(self) -> dict:
        path = self.dir / "meta.json"
        if not path.exists():
            return {}
        meta = json.loads(path.read_text())
        if (meta.get("backbone"), meta.get("size")) != (self.backbone, self.size):
            raise FeatureCacheError(f"{self.dir} was made for {meta.get('backbone')} at {meta.get('size')} px.")
        return meta

    def _read_rows(self) -> np.ndarray:
        path = self.dir / "rows.npy"
        return np.load(path) if path.exists() else np.zeros(0, dtype=ROW_DTYPE)


def _safe(layer: str) -> str:
    return layer.replace("/", "_")
