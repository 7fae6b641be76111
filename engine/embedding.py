"""`embed`: bring a workspace's feature cache up to date, computing only what is new or changed.

This module imports no torch: when nothing changed (the usual case when an app or CLI opens
a project), answering takes a folder scan and two small file reads.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._workers import default_workers
from .backbones import DEFAULT_BACKBONE, get_backbone_cfg
from .features import DONE, FAILED, FeatureCache
from .ray_embed import ray_or_say_why_not
from .workspace import Item, Workspace

logger = logging.getLogger(__name__)
DEFAULT_SIZE = 160
DEFAULT_BATCH = 32
ProgressFn = Callable[[int, int], None]


@dataclass
class EmbedResult:
    embedded: int
    cached: int
    skipped: list[dict] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    backbone: str = DEFAULT_BACKBONE
    size: int = DEFAULT_SIZE
    n_items: int = 0

    def to_json(self) -> dict:
        return {"embedded": self.embedded, "cached": self.cached, "skipped": self.skipped,
                "layers": self.layers, "backbone": self.backbone, "size": self.size, "items": self.n_items}


def embed(workspace: Workspace, *, backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE,
          batch_size: int = DEFAULT_BATCH, workers: int | None = None, pretrained: bool = True,
          paths: list[str] | None = None, progress: ProgressFn | None = None,
          ray: str | None = None) -> EmbedResult:
    """Compute (or reuse) pooled features of every offered layer for every image of the workspace.

    Only items that are new, or whose size/mtime changed since their features were computed,
    are read; unreadable files are skipped and reported with their reason (again on later runs,
    without re-reading them unless they change), and so are the entries the scan could not
    make items of (broken links, pipes, names that are not UTF-8; `Workspace.unusable`).
    A file that changes while this runs is read as it is then and read again by the next run
    (its size or mtime no longer match); one removed meanwhile is reported as not found.

    `ray`: run the forward passes on the Ray cluster at this address ('local' starts one here, 'auto' joins
    the one `ray start` made; `engine.ray_embed`); without Ray installed, they run here, as they do by default.
    """
    cfg = get_backbone_cfg(backbone)
    items = workspace.sync_items(paths)
    cache = FeatureCache(workspace.features_dir(backbone, size), backbone=backbone, size=size)
    todo = rows_to_compute(items, cache)
    result = EmbedResult(0, 0, layers=list(cfg.layers), backbone=backbone, size=size, n_items=len(items))
    if todo:
        stats = {item.id: (item.size, item.mtime_ns) for item in items}
        if ray is not None and ray_or_say_why_not("embedding"):
            from .ray_embed import compute_rows_ray
            result.embedded = compute_rows_ray(cfg, cache, workspace, todo, stats, size=size, batch_size=batch_size,
                                               pretrained=pretrained, progress=progress, address=ray)
        else:
            from .activations import compute_rows  # torch is needed only now
            result.embedded = compute_rows(cfg, cache, workspace, todo, stats, size=size, batch_size=batch_size,
                                           workers=default_workers() if workers is None else workers,
                                           pretrained=pretrained, progress=progress)
    elif progress:
        progress(0, 0)
    failures = cache.failures
    live = [item for item in items if not item.missing]
    result.skipped = [{"path": item.path, "reason": failures[item.id]} for item in live if item.id in failures]
    result.skipped += workspace.unusable
    computed = {row for row, _ in todo}
    done = cache.done_mask(len(items))
    result.cached = sum(1 for item in live if item.id not in computed and done[item.id])
    return result


def rows_to_compute(items: list[Item], cache: FeatureCache) -> list[tuple[int, str]]:
    """(id, path) of present items with no row yet, or whose file changed since its row was computed."""
    n = len(items)
    size = np.array([-1 if it.size is None else it.size for it in items], dtype=np.int64)
    mtime = np.array([-1 if it.mtime_ns is None else it.mtime_ns for it in items], dtype=np.int64)
    missing = np.array([it.missing for it in items], dtype=bool)
    rows = cache.rows
    known = np.zeros(n, dtype=bool)
    m = min(n, len(rows))
    known[:m] = (np.isin(rows["status"][:m], (DONE, FAILED)) & (rows["size"][:m] == size[:m])
                 & (rows["mtime_ns"][:m] == mtime[:m]))
    return [(int(i), items[i].path) for i in np.flatnonzero(~known & ~missing)]

