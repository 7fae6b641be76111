"""A labeling project: an image folder, its workspace (engine) and its label store, opened together.

    project = Project("photos")                  # scans photos/, keeps photos/.labeler/labels.sqlite
    ids = project.ids_for(["cats/1.jpg", "cats/2.jpg"])
    project.store.assign(ids, "cat")
    project.labels                                # DataFrame: image_name, label, source, ...

Reopening the same folder restores everything: item ids are stable (files found later get new
ids), vanished files are marked missing and keep their labels.

A project also owns its caches, all rebuildable from the images: thumbnails (`project.thumbs`),
per-layer features of its backbone (`project.features()`) and projections (`projections_dir`).
Opening a folder in the app is one pipeline of stages, `project.prepare(progress)`: thumbnails
first (about ten times quicker), then features; each stage computes only what is new.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from engine.workspace import Item, Workspace

from ._labels import SOURCES
from .errors import LabelStoreError
from .store import LabelStore

logger = logging.getLogger(__name__)

_SHOWN_UNKNOWN = 10
# the Ray cluster that opening a project computes features on (unset: this machine); `labeler serve --ray` sets it
RAY_ADDRESS_VARIABLE = "LABELER_RAY_ADDRESS"
StageProgress = Callable[[str, int, int], None]   # (stage, done, total)
_WORKSPACE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def workspace_lock(root) -> threading.Lock:
    """One lock per workspace in this process: two tabs (or the Clean tab and the opening) never
    compute the same caches at once. It holds no user state."""
    with _LOCKS_GUARD:
        return _WORKSPACE_LOCKS.setdefault(str(root), threading.Lock())


class Project:
    """An image folder with its workspace and labels.

    Args:
        folder: the folder of images.
        workspace: where derived data and labels.sqlite go (default FOLDER/.labeler).
        multi_label: True/False to choose the mode of a new project (an error if it contradicts
            one that already has labels); None keeps what the project has (single-label when new).
        actor: who the changes are recorded as (default "user@host").
        backbone, size: the pretrained CNN and image edge whose features the project's map uses.
    """

    def __init__(self, folder, workspace=None, *, multi_label: bool | None = None, actor: str | None = None,
                 backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE):
        self.workspace = Workspace(folder, workspace)
        self.folder: Path = self.workspace.folder
        self.backbone, self.size = backbone, size
        self.store = LabelStore(self.workspace.db_path, actor=actor)
        try:
            if multi_label is not None:
                self.store.set_multi_label(multi_label)
            self.items: list[Item] = self.workspace.sync_items()
        except BaseException:
            self.store.close()
            raise
        logger.info("opened %s: %d items (%d missing)", self.folder, len(self.items),
                    sum(item.missing for item in self.items))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.folder)!r}, items={len(self.items)})"

    def refresh_items(self, *, rescan: bool = False) -> list[Item]:
        """Re-read the items table (another process may have added items); `rescan` also scans the folder."""
        self.items = self.workspace.sync_items() if rescan else self.workspace.items()
        return self.items

    @property
    def multi_label(self) -> bool:
        return self.store.multi_label

    # ---- caches: thumbnails, features, projections -------------------------------------------

    @cached_property
    def thumbs(self):
        """The thumbnail cache (a uint8 memmap of small tiles, row i = item i)."""
        from .thumbs import ThumbCache
        return ThumbCache(self.workspace)

    def features(self):
        """The feature cache of the project's backbone and size, as it is on disk now."""
        from engine.features import FeatureCache
        return FeatureCache(self.workspace.features_dir(self.backbone, self.size), backbone=self.backbone,
                            size=self.size)

    @property
    def projections_dir(self) -> Path:
        return self.workspace.cache_dir("projections")

    def needs_preparing(self) -> bool:
        """Whether some present image lacks a thumbnail or features (or changed since they were made). A file
        that could not be read counts as made until it changes: opening the folder again does not retry it."""
        from engine.embedding import rows_to_compute
        return bool(rows_to_compute(self.items, self.features()) or rows_to_compute(self.items, self.thumbs))

    def prepare(self, progress: StageProgress | None = None) -> None:
        """Bring every cache up to date, stage by stage: thumbnails, then features.

        `progress(stage, done, total)` hears about each stage. Other readers (the app's map) see
        computed feature rows every few seconds while this runs. With a Ray address configured
        (`RAY_ADDRESS_VARIABLE`, which `labeler serve --ray` sets), the features are computed on that cluster.
        """
        from engine.embedding import embed

        def stage(name: str):
            return (lambda done, total: progress(name, done, total)) if progress else None
        with workspace_lock(self.workspace.root):
            self.thumbs.build(progress=stage("Making thumbnails"))
            embed(self.workspace, backbone=self.backbone, size=self.size,
                  progress=stage(f"Computing features ({self.backbone})"),
                  ray=os.environ.get(RAY_ADDRESS_VARIABLE) or None)
        self.refresh_items()

    # ---- file names and item ids -------------------------------------------------------------

    def ids_for(self, paths: Iterable) -> list[int]:
        """Item ids of image paths (relative to the folder, or absolute inside it), in the order given."""
        by_path = {item.path: item.id for item in self.items}
        paths = list(paths)
        if any(self.item_key(path, by_path) not in by_path for path in paths):
            by_path = {item.path: item.id for item in self.refresh_items()}
        keys = [self.item_key(path, by_path) for path in paths]
        unknown = [str(path) for path, key in zip(paths, keys) if key not in by_path]
        if unknown:
            shown = ", ".join(map(repr, unknown[:_SHOWN_UNKNOWN]))
            more = f" and {len(unknown) - _SHOWN_UNKNOWN} more" if len(unknown) > _SHOWN_UNKNOWN else ""
            raise LabelStoreError(f"{len(unknown)} path(s) are not images of {self.folder}: {shown}{more}. "
                                  f"Give paths relative to that folder (as in project.items), or rescan it "
                                  f"with project.refresh_items(rescan=True) if the files are new.")
        return [by_path[key] for key in keys]

    def relative_name(self, path) -> str:
        """The items-table form of `path` (see Workspace.relative_name)."""
        return self.workspace.relative_name(path)

    def item_key(self, path, known) -> str:
        """The item path `path` stands for among `known` (item paths): itself when it is one, since
        ' a.png' can be a file's real name, else its `relative_name` (blanks trimmed, `./` dropped)."""
        return path if isinstance(path, str) and path in known else self.relative_name(path)

    def paths_for(self, item_ids: Iterable[int]) -> list[str]:
        by_id = {item.id: item.path for item in self.items}
        return [by_id[int(item_id)] for item_id in item_ids]

    # ---- labels as tables --------------------------------------------------------------------

    @property
    def labels(self):
        """One row per labeled item: item_id, image_name, label (single-label) or labels + tags
        (multi-label), source, created, actor, excluded, missing."""
        import pandas as pd
        table = self.store.assignments()
        by_id = {item.id: item for item in self.refresh_items()}
        excluded = self.store.excluded()
        if self.store.multi_label and len(table):
            table = table.groupby("item_id", sort=True).agg(
                labels=("label", list), source=("source", _joined), created=("created", "max"),
                actor=("actor", "last")).reset_index()
            table.insert(3, "tags", table["labels"].map(" ".join))
        elif self.store.multi_label:
            table = pd.DataFrame(columns=["item_id", "labels", "tags", "source", "created", "actor"])
        table.insert(1, "image_name", [by_id[i].path if i in by_id else None for i in table["item_id"]])
        # stored as Unix seconds; shown as local date and time, to the second
        table["created"] = pd.to_datetime(table["created"].astype(float), unit="s", utc=True) \
            .dt.tz_convert(_local_zone()).dt.floor("s")
        table["excluded"] = table["item_id"].isin(excluded)
        table["missing"] = [by_id[i].missing if i in by_id else True for i in table["item_id"]]
        return table.reset_index(drop=True)

    def summary(self) -> dict:
        """Counts for people: items, labeled / unlabeled / excluded / missing, and per label by source."""
        items = self.refresh_items()
        labeled = set(self.store.assignments()["item_id"].tolist())
        excluded = self.store.excluded()
        present = {item.id for item in items if not item.missing}
        per_label = {name: {"total": sum(by_source.values()), **{s: by_source.get(s, 0) for s in SOURCES}}
                     for name, by_source in self.store.counts_by_source().items()}
        return {"folder": str(self.folder), "multi_label": self.store.multi_label, "items": len(items),
                "missing": len(items) - len(present), "labeled": len(labeled - excluded),
                "excluded": len(excluded), "unlabeled": len(present - labeled - excluded), "labels": per_label}


def _local_zone():
    """This machine's time zone, for showing when labels were made."""
    import datetime
    return datetime.datetime.now().astimezone().tzinfo


def _joined(values) -> str:
    """The distinct sources of one item's labels, e.g. 'human' or 'human,model'."""
    return ",".join(dict.fromkeys(values))
