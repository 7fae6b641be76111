"""One forward pass with hooks on all offered layers -> pooled features per layer.

`extract_activations(model, images, layers)` hides the hook mechanism; `compute_rows` runs
image files through it into a feature cache (`engine.embedding.embed` decides which rows need it).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import pooling
from ._fuse import fuse_conv_bn
from ._hooks import truncated_forward
from ._workers import worker_start_method
from .backbones import create_backbone
from .data import ImageReadError, decode_image, read_image_bytes, to_model_array
from .features import DONE, FAILED, FeatureCache
from .workspace import Workspace

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
FLUSH_SECONDS = 3.0  # how often computed rows are made visible to other readers (the app opens on them)


@torch.inference_mode()
def extract_activations(model: nn.Module, images: torch.Tensor, layers: list[str],
                        pool: Callable[[torch.Tensor], torch.Tensor] | None = pooling.pool) -> dict[str, torch.Tensor]:
    """Pooled outputs of `layers` for a normalized batch, in one forward pass.

    The model is run in eval mode and its previous mode restored afterwards; hooks are always
    removed. Pass `pool=None` for the raw feature maps.
    """
    was_training = model.training
    model.eval()
    try:
        return truncated_forward(model, images, layers, pool)
    finally:
        model.train(was_training)


class Normalizer(nn.Module):
    """uint8 (B, H, W, 3) batch -> float (B, 3, H, W), normalized, channels_last."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class _ImageRows(Dataset):
    """Reads, hashes and decodes files for the rows to compute; failures come back as reasons."""

    def __init__(self, workspace: Workspace, rows: list[tuple[int, str]], size: int):
        self.folder, self.rows, self.size = workspace.folder, rows, size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row, path = self.rows[index]
        return read_row(row, self.folder / path, self.size)


def read_row(row: int, path, size: int):
    """(row, uint8 tensor, the file's SHA-1, None), or (row, None, None, reason) for a file that cannot be read."""
    try:
        data = read_image_bytes(path)
        image = to_model_array(decode_image(data, path, size=size), size)
        return row, torch.from_numpy(image), hashlib.sha1(data).hexdigest(), None
    except ImageReadError as err:
        return row, None, None, err.reason


def _collate(samples):
    good = [s for s in samples if s[1] is not None]
    batch = torch.stack([s[1] for s in good]) if good else None
    return [s[0] for s in good], batch, [s[2] for s in good], [(s[0], s[3]) for s in samples if s[1] is None]


def _layer_dims(model, layers, size, normalize) -> dict[str, int]:
    probe = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    out = extract_activations(model, normalize(probe), layers)
    return {name: int(t.shape[1]) for name, t in out.items()}


def compute_rows(cfg, cache: FeatureCache, workspace: Workspace, todo: list[tuple[int, str]],
                 stats: dict[int, tuple], *, size: int, batch_size: int, workers: int, pretrained: bool,
                 progress: ProgressFn | None) -> int:
    """Compute features of the `todo` rows (id, path) into `cache`; returns how many succeeded."""
    model, normalize, dims = prepared_network(cfg, size, pretrained)
    cache.prepare(list(cfg.layers), dims, len(stats))
    return _run(model, normalize, cache, workspace, todo, stats, size, batch_size, workers, progress)


def prepared_network(cfg, size: int, pretrained: bool):
    """(model, normalizer, {layer: width}) for inference: BatchNorm folded, channels_last (also on Ray's actors)."""
    model = create_backbone(cfg.name, pretrained=pretrained)
    fuse_conv_bn(model)
    model = model.to(memory_format=torch.channels_last)
    normalize = Normalizer(cfg.mean, cfg.std)
    return model, normalize, _layer_dims(model, list(cfg.layers), size, normalize)


def _run(model, normalize, cache, workspace, todo, stats, size, batch_size, workers, progress) -> int:
    loader = DataLoader(_ImageRows(workspace, todo, size), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, persistent_workers=False,
                        multiprocessing_context=worker_start_method() if workers else None)
    writer = RowWriter(cache, workspace, todo, stats, progress)
    for rows, batch, digests, failed in loader:
        features = None
        if batch is not None:
            out = extract_activations(model, normalize(batch), cache.layers)
            features = {layer: out[layer].to(torch.float16).numpy() for layer in cache.layers}
        writer.add(rows, features, digests, failed)
    return writer.finish()


class RowWriter:
    """Writes computed rows into a feature cache as they arrive, in any order: each layer's features at the
    row's index, the row marked done (with its file's size and mtime) or failed (with the reason, logged),
    the cache flushed every FLUSH_SECONDS (readers see progress; a killed run keeps it), `progress(done, total)`
    told, and the files' hashes stored at the end. Shared by the local path and `engine.ray_embed`."""

    def __init__(self, cache: FeatureCache, workspace: Workspace, todo: list[tuple[int, str]], stats: dict[int, tuple],
                 progress: ProgressFn | None):
        self.cache, self.workspace, self.stats, self.progress = cache, workspace, stats, progress
        self.arrays = cache.open_for_writing()
        self.paths, self.total = dict(todo), len(todo)
        self.done = self.embedded = 0
        self.hashes: dict[int, str] = {}
        self.last_flush = time.monotonic()

    def add(self, rows: list[int], features: dict | None, digests, failed) -> None:
        """`rows` computed (`features`: layer -> float16 array, a row each; `digests`: their files' SHA-1) and
        `failed` (row, reason) pairs."""
        if rows:
            for layer in self.cache.layers:
                self.arrays[layer][rows] = features[layer]
            for row, digest in zip(rows, digests):
                self.cache.mark(row, *self.stats[row], DONE)
                self.hashes[row] = str(digest)
            self.embedded += len(rows)
        for row, reason in failed:
            logger.warning("skipped %s: %s", self.workspace.folder / self.paths[row], reason)
            self.cache.mark(row, *(v if v is not None else -1 for v in self.stats[row]), FAILED, str(reason))
            self.done += 1
        self.done += len(rows)
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.cache.flush(self.arrays)
            self.last_flush = time.monotonic()
        if self.progress:
            self.progress(self.done, self.total)

    def finish(self) -> int:
        """Flush, store the hashes; how many rows were computed."""
        self.cache.flush(self.arrays)
        self.workspace.set_hashes(self.hashes)
        return self.embedded
