"""A labeling project: an image folder, its workspace (engine) and its label store, opened together.

    project = Project("photos")                  # scans photos/, keeps photos/.labeler/labels.sqlite
    ids = project.ids_for(["cats/1.jpg", "cats/2.jpg"])
    project.store.assign(ids, "cat")
    project.labels                                # DataFrame: image_name, label, source, ...

Reopening the same folder restores everything: item ids are stable (files found later get new
ids), vanished files are marked missing and keep their labels.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from engine.workspace import Item, Workspace

from ._labels import SOURCES
from .errors import LabelStoreError
from .store import LabelStore

logger = logging.getLogger(__name__)

_SHOWN_UNKNOWN = 10


class Project:
    """An image folder with its workspace and labels.

    Args:
        folder: the folder of images.
        workspace: where derived data and labels.sqlite go (default FOLDER/.labeler).
        multi_label: True/False to choose the mode of a new project (an error if it contradicts
            one that already has labels); None keeps what the project has (single-label when new).
        actor: who makes the changes (default "hostname:pid"), for undo per app instance.
    """

    def __init__(self, folder, workspace=None, *, multi_label: bool | None = None, actor: str | None = None):
        self.workspace = Workspace(folder, workspace)
        self.folder: Path = self.workspace.folder
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

    # ---- file names and item ids -------------------------------------------------------------

    def ids_for(self, paths: Iterable) -> list[int]:
        """Item ids of image paths (relative to the folder, or absolute inside it), in the order given."""
        by_path = {item.path: item.id for item in self.items}
        paths = list(paths)
        keys = [self.relative_name(path) for path in paths]
        if any(key not in by_path for key in keys):
            by_path = {item.path: item.id for item in self.refresh_items()}
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


def _joined(values) -> str:
    """The distinct sources of one item's labels, e.g. 'human' or 'human,model'."""
    return ",".join(dict.fromkeys(values))
