"""The data side of training: split items, label them, and serve augmented batches. No UI imports.

The steps of fastai's data block, as small callables:

- a *splitter* maps the item list to ``(train_idx, valid_idx)`` (deterministic);
- a *labeler* maps one item (a path relative to the image folder) to its target;
- :func:`build_data` infers the task from the targets (or the labeler's ``task``) and returns
  a :class:`TaskData` whose loaders yield ``(x, y)`` batches in the layout the training loop
  expects; the task object (`engine.tasks`) encodes the targets and makes each sample:

  ========== ================================================================
  classify   y int64 (B,), index into ``classes``
  multilabel y float32 (B, C) multi-hot over ``classes``
  segment    y int64 (B, H, W) code index; ``void_code`` where the loss ignores
  regress    y float32 (B, 2k): points x0, y0, x1, y1 ... scaled to [-1, 1] of the
             transformed ``size`` x ``size`` image (pixel = (v + 1) / 2 * size);
             other numeric targets are passed through untransformed
  ========== ================================================================

x is always float32 (B, 3, size, size), normalized with the backbone's mean and std.
An image that cannot be read is skipped with a logged reason: the sample is replaced by
the next readable item, so a run never stops on one bad file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from .augment import DEFAULT_AUGMENT, build_transforms, denormalize, tile
from .backbones import DEFAULT_BACKBONE
from .data import load_image
from .errors import ImageReadError, InputError
from .splits import FolderSplit, FuncSplit, GroupSplit, ListSplit, RandomSplit  # noqa: F401  (part of this API)
from .tasks import TASKS, Targets, Task, get_task

logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "FolderSplit",
    "FuncSplit",
    "GroupSplit",
    "LabelFromCSV",
    "LabelFromRegex",
    "ListSplit",
    "MaskLabel",
    "PointsLabel",
    "RandomSplit",
    "TaskData",
    "build_data",
    "infer_task",
    "label_from_folder",
]


# ---------------------------------------------------------------- splitters

def label_from_folder(item) -> str:
    """The name of the folder holding the item (``cats/001.jpg`` -> ``cats``)."""
    parent = Path(item).parent.name
    if not parent:
        raise InputError(f"Item {str(item)!r} is not inside a folder, so label_from_folder has no label for it. "
                         f"Put images in one folder per class, or use another labeler.")
    return parent


class LabelFromCSV:
    """Labels from a CSV such as fastai's ``image_name,tags``; with ``delimiter=" "`` a label is a list of tags.

    An item matches a row by relative path (a leading ``./`` is ignored), file name, or file name
    without extension.
    """

    def __init__(self, csv_path, image_column: str = "image_name", label_column: str = "tags", delimiter=None):
        import pandas as pd
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        for column in (image_column, label_column):
            if column not in table.columns:
                raise InputError(f"CSV {str(csv_path)!r} has no column {column!r} (columns: {list(table.columns)}). "
                                 f"Pass image_column= and label_column= naming its columns.")
        self.csv_path, self.delimiter = str(csv_path), delimiter
        self.labels = {name.replace("\\", "/").strip().removeprefix("./"): label   # labeler's exports write ./-rf.png
                       for name, label in zip(table[image_column], table[label_column])}

    def __call__(self, item):
        path = Path(item)
        for key in (path.as_posix(), path.name, path.stem):
            if key in self.labels:
                label = self.labels[key]
                return [tag for tag in label.split(self.delimiter) if tag] if self.delimiter else label
        raise InputError(f"Item {str(item)!r} has no row in {self.csv_path!r}. Add it to the CSV, or leave it out "
                         f"of the items.")


class LabelFromRegex:
    """The first group of ``pattern`` searched in the item's relative path (e.g. ``r"([^/]+)_\\d+\\.jpg$"``)."""

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)
        if self.pattern.groups < 1:
            raise InputError(f"Pattern {pattern!r} has no group. Put the label part in parentheses.")

    def __call__(self, item):
        found = self.pattern.search(Path(item).as_posix())
        if found is None:
            raise InputError(f"Pattern {self.pattern.pattern!r} does not match item {str(item)!r}. "
                             f"Fix the pattern, or leave the item out.")
        return found.group(1)


class MaskLabel:
    """Segmentation: ``mask_path(Path(item))`` gives the mask file (relative paths are under the image folder).

    Mask pixels are indices into ``codes`` (a list, or a text file with one code a line).
    ``void_code`` marks pixels the loss ignores; pixels outside ``codes`` become void.
    """

    task = "segment"  # the task its labels are for (`infer_task`)

    def __init__(self, mask_path: Callable[[Path], Path], codes, void_code: int | None = None):
        if isinstance(codes, (str, os.PathLike)):
            codes = Path(codes).read_text(encoding="utf-8").split()
        self.mask_path, self.codes, self.void_code = mask_path, [str(code) for code in codes], void_code
        if void_code is not None and not 0 <= void_code < 256:
            raise InputError(f"void_code={void_code!r} is outside 0..255. Give the mask value of void pixels.")

    def __call__(self, item) -> Path:
        return Path(self.mask_path(Path(item)))


class PointsLabel:
    """Regression on points: ``points(item)`` gives a (k, 2) array of pixel x, y in the image as loaded."""

    task = "regress"  # the task its labels are for (`infer_task`); they follow the augmentation

    def __init__(self, points: Callable[[str], np.ndarray]):
        self.points = points

    def __call__(self, item) -> np.ndarray:
        value = np.asarray(self.points(item), dtype=np.float32)
        if value.ndim != 2 or value.shape[1] != 2:
            raise InputError(f"Points of item {str(item)!r} have shape {value.shape}, not (k, 2). "
                             f"Return one (x, y) pixel pair per row.")
        return value


def infer_task(labeler, targets: list) -> str:
    """The task a labeler names (its ``task``: MaskLabel, PointsLabel), else the first registered task whose
    ``matches`` accepts the labels: classify for str, multilabel for lists of str, regress for numbers."""
    named = getattr(labeler, "task", None)
    if named is not None:
        return get_task(named, InputError).name
    for name, task in TASKS.items():
        if task.matches(targets):
            return name
    raise InputError(f"Cannot infer the task from a label of type {type(targets[0]).__name__} ({targets[0]!r}). "
                     f"Pass task= one of {tuple(TASKS)}.")


# ---------------------------------------------------------------- labels

def _label_all(labeler, items: list[str]) -> list:
    targets = [labeler(item) for item in items]
    shapes = {np.shape(target) for target in targets if isinstance(target, np.ndarray)}
    if len(shapes) > 1:
        raise InputError(f"Labels have different shapes {sorted(shapes)}. Give every item the same number "
                         f"of points or values.")
    return targets


# ---------------------------------------------------------------- dataset

class _ItemDataset(Dataset):
    """(x, y) samples for one split; ``size`` can change between epochs (progressive resizing)."""

    def __init__(self, folder: Path, items: list[str], targets: Targets, task: type[Task], size: int,
                 augment: dict | None, mean, std):
        self.folder, self.items, self.targets, self.task = folder, items, targets, task
        self.augment, self.mean, self.std = augment, tuple(mean), tuple(std)
        self.size, self._transform, self._bad = size, None, {}

    def __len__(self):
        return len(self.items)

    def __getstate__(self):  # worker processes rebuild the transform
        return {**self.__dict__, "_transform": None}

    def transform(self, train: bool | None = None):
        """The v2 pipeline at the current size (``train=None``: augmented when this split augments)."""
        augmented = self.augment is not None if train is None else train
        if self._transform is None or self._transform[0] != (self.size, augmented):
            params = {**DEFAULT_AUGMENT, **(self.augment or {})}
            fill = self.targets.void_code if self.targets.void_code is not None else 0
            pipeline = build_transforms(self.size, train=augmented, mean=self.mean, std=self.std, mask_fill=fill,
                                        **params)
            self._transform = ((self.size, augmented), pipeline)
        return self._transform[1]

    def raw_sample(self, index: int) -> dict:
        """The untransformed sample dict of item ``index`` (the image and the task's extras); raises ImageReadError."""
        image = load_image(self.folder / self.items[index])
        sample = {"image": tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))}
        return {**sample, **self.task.sample_extras(self.targets, index, image)}

    def label_targets(self) -> torch.Tensor | None:
        """Every item's target in the batch layout, without decoding images; None where the task needs them."""
        return self.task.label_targets(self.targets, self.folder, self.items)

    def to_xy(self, index: int, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed sample as the (x, y) pair of the batch layout in the module docstring."""
        return self.task.to_xy(self.targets, index, sample)

    def __getitem__(self, index: int):
        current, sample = first_readable(self.raw_sample, index, len(self.items), self._bad,
                                         f"of this split in {str(self.folder)!r}")
        return self.to_xy(current, self.transform()(sample))


def first_readable(read, index: int, n: int, bad: dict, where: str):
    """(i, read(i)) for the first item from `index` on (wrapping round) that can be read: an unreadable one is
    logged once, remembered in `bad` ({i: reason}) and skipped, so a batch never fails for one broken file."""
    for step in range(n):
        current = (index + step) % n
        if current in bad:
            continue
        try:
            return current, read(current)
        except ImageReadError as err:
            bad[current] = err.reason
            logger.warning("skipping unreadable image %s: %s", err.path, err.reason)
    raise InputError(f"None of the {n} images {where} can be read (see the log). Check the image folder.")


# ---------------------------------------------------------------- pictures of samples

def _picture(x: torch.Tensor, y: torch.Tensor, dataset: _ItemDataset) -> np.ndarray:
    """HWC uint8 of one (x, y) sample as the task draws it (a mask blended in, points as dots)."""
    return dataset.task.picture(denormalize(x, dataset.mean, dataset.std), y, dataset.targets)


# ---------------------------------------------------------------- what the training loop consumes

@dataclass
class TaskData:
    """Loaders and facts about one training task (see the module docstring for the batch layout)."""

    task: str
    classes: list[str] | None
    codes: list[str] | None
    void_code: int | None
    n_out: int  # outputs the model head needs: classes, codes, or 2 x points / values
    train: DataLoader
    valid: DataLoader
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    items_train: list[str] = field(default_factory=list)
    items_valid: list[str] = field(default_factory=list)
    points: int = 0  # regression targets that are (x, y) points: how many (0: plain values)

    def set_size(self, size: int) -> None:
        """Progressive resizing: batches drawn from now on (the next epoch's iterator) come at ``size``."""
        if not isinstance(size, int) or size < 8:
            raise InputError(f"size={size!r} is not an int >= 8. Give the side of the square images in pixels.")
        self.size = size
        for loader in (self.train, self.valid):
            loader.dataset.size = size

    def show_batch(self, n: int = 8, split: str = "train") -> np.ndarray:
        """A uint8 grid of the first ``n`` samples of ``split`` as the model sees them (augmented for train)."""
        dataset = {"train": self.train, "valid": self.valid}[split].dataset
        pictures = [_picture(*dataset[index], dataset) for index in range(min(n, len(dataset)))]
        if not pictures:
            raise InputError(f"The {split} split is empty, so there is no batch to show. Check the splitter.")
        return tile(pictures)

    def preview_augmentations(self, item_index: int = 0, n: int = 8) -> np.ndarray:
        """A uint8 grid of one training item under ``n`` random draws of the training augmentation."""
        dataset = self.train.dataset
        if not 0 <= item_index < len(dataset):
            raise InputError(f"item_index={item_index} is outside 0..{len(dataset) - 1} (training items).")
        sample, transform = dataset.raw_sample(item_index), dataset.transform(train=True)
        return tile([_picture(*dataset.to_xy(item_index, transform(sample)), dataset) for _ in range(n)])


def _augment_params(augment) -> dict | None:
    if augment is True:
        return dict(DEFAULT_AUGMENT)
    if augment is False or augment is None:
        return None
    if isinstance(augment, dict) and set(augment) <= set(DEFAULT_AUGMENT):
        return {**DEFAULT_AUGMENT, **augment}
    raise InputError(f"augment={augment!r} is not True, False or a dict with keys from {sorted(DEFAULT_AUGMENT)}. "
                     f"Pass one of those.")


def _check_split(train_idx, valid_idx, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    train_idx, valid_idx = np.asarray(train_idx, np.int64), np.asarray(valid_idx, np.int64)
    if np.intersect1d(train_idx, valid_idx).size:
        raise InputError("The splitter put some items in both train and valid. Make the two index sets disjoint.")
    if len(train_idx) == 0:
        raise InputError(f"The splitter left no training items out of {n_items}. Check its folder names, list "
                         f"or valid_pct.")
    return train_idx, valid_idx


def build_data(folder, items: list[str], splitter, labeler, *, task=None, size=224, batch_size=32,
               backbone=DEFAULT_BACKBONE, augment=True, workers=0, seed=0) -> TaskData:
    """Split, label and wrap ``items`` (paths relative to ``folder``) into train and valid loaders.

    ``task=None`` infers it from the labels (:func:`infer_task`). ``augment`` is True (the
    defaults of :func:`engine.augment.build_transforms`), False, or a dict overriding some of
    them. Normalization comes from ``backbone``'s pretrained weights.
    """
    from .backbones import get_backbone_cfg
    items, folder = [str(item) for item in items], Path(folder)
    if not items:
        raise InputError(f"No items to train on in {str(folder)!r}. Label some images first.")
    if task is not None and task not in TASKS:
        raise InputError(f"task={task!r} is not one of {tuple(TASKS)}. Pass one of them, or None to infer it.")
    train_idx, valid_idx = _check_split(*splitter(items), len(items))
    used = np.concatenate([train_idx, valid_idx])
    targets = _label_all(labeler, [items[i] for i in used])
    task = get_task(task or infer_task(labeler, targets), InputError)
    encoded = task.encode(labeler, targets, folder)
    cfg = get_backbone_cfg(backbone)
    mean, std = cfg.mean, cfg.std
    n_train = len(train_idx)

    def subset(rows: slice) -> Targets:
        return dataclasses.replace(encoded, values=encoded.values[rows])

    items_train, items_valid = [items[i] for i in train_idx], [items[i] for i in valid_idx]
    train_set = _ItemDataset(folder, items_train, subset(slice(0, n_train)), task, size, _augment_params(augment),
                             mean, std)
    valid_set = _ItemDataset(folder, items_valid, subset(slice(n_train, None)), task, size, None, mean, std)
    loader_args = {"batch_size": batch_size, "num_workers": workers, "persistent_workers": False}
    train = DataLoader(train_set, shuffle=True, drop_last=n_train > batch_size,
                       generator=torch.Generator().manual_seed(seed), **loader_args)
    valid = DataLoader(valid_set, shuffle=False, **loader_args)
    logger.info("%s data: %d train, %d valid items, %d outputs", task.name, len(items_train), len(items_valid),
                encoded.n_out)
    return TaskData(task.name, encoded.classes, encoded.codes, encoded.void_code, encoded.n_out, train, valid, size,
                    tuple(mean), tuple(std), items_train, items_valid,
                    encoded.n_out // 2 if encoded.points else 0)
