"""Validation splits: callables items -> (train indices, valid indices), deterministic for a seed.

Random percentage, by top folder, by a list of validation names (CamVid's valid.txt), by a
function, or by group (every frame of one person on the same side).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .data import InputError

logger = logging.getLogger(__name__)


def _split_from_mask(is_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def _check_pct(valid_pct) -> None:
    if not 0 <= valid_pct < 1:
        raise InputError(f"valid_pct={valid_pct!r} is outside [0, 1). Give the validation fraction, e.g. 0.2.")


class RandomSplit:
    """A random ``valid_pct`` of the items go to validation; the same ``seed`` gives the same split."""

    def __init__(self, valid_pct: float = 0.2, seed: int = 0):
        _check_pct(valid_pct)
        self.valid_pct, self.seed = valid_pct, seed

    def __call__(self, items):
        order = np.random.default_rng(self.seed).permutation(len(items))
        is_valid = np.zeros(len(items), bool)
        is_valid[order[:round(self.valid_pct * len(items))]] = True
        return _split_from_mask(is_valid)


class FolderSplit:
    """By the top folder of each item: ``train/...`` and ``valid/...``; items in other folders are left out."""

    def __init__(self, train: str = "train", valid: str = "valid"):
        self.train, self.valid = train, valid

    def __call__(self, items):
        tops = np.array([Path(item).parts[0] if len(Path(item).parts) > 1 else "" for item in items])
        train_idx, valid_idx = np.flatnonzero(tops == self.train), np.flatnonzero(tops == self.valid)
        if len(train_idx) + len(valid_idx) < len(items):
            logger.info("FolderSplit leaves out %d items outside %r and %r",
                        len(items) - len(train_idx) - len(valid_idx), self.train, self.valid)
        return train_idx, valid_idx


class ListSplit:
    """Items named in a list (or a text file with one name a line, like CamVid's ``valid.txt``) are validation.

    A name matches an item by file name or by relative path (any trailing part of the item's path).
    """

    def __init__(self, names_or_txt_path):
        if isinstance(names_or_txt_path, (str, os.PathLike)):
            path = Path(names_or_txt_path)
            if not path.is_file():
                raise InputError(f"Validation list {str(path)!r} is not a file. Give a text file with one "
                                 f"image name a line, or a list of names.")
            names_or_txt_path = path.read_text(encoding="utf-8").splitlines()
        self.names = {str(name).strip().replace("\\", "/").strip("/") for name in names_or_txt_path} - {""}

    def __call__(self, items):
        matched: set[str] = set()
        is_valid = np.zeros(len(items), bool)
        for i, item in enumerate(items):
            parts = Path(item).parts
            tails = {"/".join(parts[k:]) for k in range(len(parts))} & self.names
            is_valid[i], matched = bool(tails), matched | tails
        if len(matched) < len(self.names):
            logger.warning("ListSplit: %d of %d validation names match no item", len(self.names) - len(matched),
                           len(self.names))
        return _split_from_mask(is_valid)


class FuncSplit:
    """Validation where ``is_valid(item)`` is true."""

    def __init__(self, is_valid: Callable[[str], bool]):
        self.is_valid = is_valid

    def __call__(self, items):
        return _split_from_mask(np.array([bool(self.is_valid(item)) for item in items], bool))


class GroupSplit:
    """A random ``valid_pct`` of the *groups* go to validation, each group whole (e.g. all photos of one person)."""

    def __init__(self, group: Callable[[str], str], valid_pct: float = 0.2, seed: int = 0):
        _check_pct(valid_pct)
        self.group, self.valid_pct, self.seed = group, valid_pct, seed

    def __call__(self, items):
        keys = [str(self.group(item)) for item in items]
        groups = sorted(set(keys))
        order = np.random.default_rng(self.seed).permutation(len(groups))
        n_valid = round(self.valid_pct * len(groups))
        if self.valid_pct > 0 and len(groups) > 1:
            n_valid = min(max(n_valid, 1), len(groups) - 1)
        valid_groups = {groups[i] for i in order[:n_valid]}
        return _split_from_mask(np.array([key in valid_groups for key in keys], bool))


# ---------------------------------------------------------------- labelers
