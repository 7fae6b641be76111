"""The forward passes of `embed` on a Ray cluster: Ray Data batches on actors that each hold the network.

`compute_rows_ray` is `activations.compute_rows` with the work spread out. The driver (this process)
lists the rows to compute; `map_batches` sends them, a batch at a time, to `_Embedder` actors (one model
loaded per actor, not per batch) that read, decode and hash the files and run the network; the driver
writes what comes back into the same feature cache, by row number (so rows stay in item order whatever
order batches finish in), marks each row done or failed, and flushes every few seconds, so a run that is
stopped keeps what it computed and the next one skips it.

The workers read the files themselves: on a cluster, the image folder must be at the same path on every
node (shared storage); on one machine it always is. Ray is optional (`pip install labeler[ray]`):
`ray_available()` says whether it can be imported, and `embed` falls back to the local path without it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .features import FeatureCache
from .workspace import Workspace

logger = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
LOCAL = "local"      # the address that starts a Ray instance on this machine (what tests and a laptop use)


def ray_available() -> bool:
    """Whether Ray (with Ray Data) is installed, found without importing it (an import takes seconds)."""
    import importlib.util
    try:
        return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
    except (ImportError, ValueError):
        return False


def ray_or_say_why_not(doing: str) -> bool:
    """Whether Ray can be used; when it cannot, the log says that `doing` (e.g. 'embedding') runs here instead."""
    if ray_available():
        return True
    logger.warning("Ray is not installed (pip install 'labeler[ray]'): %s on this machine instead", doing)
    return False


def connect(address: str | None, num_cpus: int | None = None):
    """Join the Ray cluster at `address` ('auto': the one `ray start` made here or RAY_ADDRESS names), or start
    a local instance (`address` None or 'local'); an instance already joined in this process is kept."""
    import ray
    if ray.is_initialized():
        return ray
    if address in (None, "", LOCAL):
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ConnectionError(f"Cannot join the Ray cluster at {address!r}: {err}. Start it with `ray start "
                                  "--head` (see the README, 'Embedding and prediction on a Ray cluster').") from err
    return ray


class _Embedder:
    """A Ray actor: one network, applied to batches of {row, path}; what comes back per row is the pooled
    features of every layer (float16), the file's SHA-1 and, for a file that could not be read, the reason."""

    def __init__(self, backbone: str, size: int, pretrained: bool, threads: int):
        import torch

        from .activations import prepared_network
        from .backbones import get_backbone_cfg
        torch.set_num_threads(max(1, threads))
        cfg = get_backbone_cfg(backbone)
        self.model, self.normalize, self.dims = prepared_network(cfg, size, pretrained)
        self.layers, self.size = list(cfg.layers), size

    def __call__(self, batch: dict) -> dict:
        import torch

        from .activations import _collate, extract_activations, read_row
        samples = [read_row(int(row), Path(path), self.size) for row, path in zip(batch["row"], batch["path"])]
        good, images, good_digests, failed = _collate(samples)
        reasons = dict(failed)
        digests = dict(zip(good, good_digests))
        rows = [sample[0] for sample in samples]
        out = {"row": np.asarray(rows, dtype=np.int64),
               "digest": np.array([digests.get(row, "") for row in rows], dtype=object),
               "reason": np.array([reasons.get(row, "") for row in rows], dtype=object)}
        at = [i for i, sample in enumerate(samples) if sample[1] is not None]     # the order `_collate` keeps
        features = {layer: np.zeros((len(rows), dim), dtype=np.float16) for layer, dim in self.dims.items()}
        if images is not None:
            pooled = extract_activations(self.model, self.normalize(images), self.layers)
            for layer in self.layers:
                features[layer][at] = pooled[layer].to(torch.float16).numpy()
        for index, layer in enumerate(self.layers):     # layer names hold dots: columns are numbered
            out[f"layer{index}"] = features[layer]
        return out


def compute_rows_ray(cfg, cache: FeatureCache, workspace: Workspace, todo: list[tuple[int, str]],
                     stats: dict[int, tuple], *, size: int, batch_size: int, pretrained: bool,
                     progress: ProgressFn | None, address: str | None = None, actors: int | None = None,
                     cpus_per_actor: float = 1.0) -> int:
    """Compute features of the `todo` rows (id, path) into `cache` on Ray; returns how many succeeded.

    `actors`: how many copies of the network run at once (default: the cluster's CPUs / `cpus_per_actor`).
    """
    ray = connect(address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False              # `progress` says how far it is; Ray's own log stays quiet
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    from .activations import RowWriter, prepared_network
    _, _, dims = prepared_network(cfg, size, pretrained=False)    # only the layers' widths: no weights read here
    cache.prepare(list(cfg.layers), dims, len(stats))
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
    folder = workspace.folder
    dataset = ray.data.from_items([{"row": row, "path": str(folder / path)} for row, path in todo],
                                  override_num_blocks=max(1, min(len(todo) // batch_size + 1, 4 * actors)))
    computed = dataset.map_batches(_Embedder, batch_size=batch_size, batch_format="numpy",
                                   compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                                   fn_constructor_kwargs=dict(backbone=cfg.name, size=size, pretrained=pretrained,
                                                              threads=max(1, int(cpus_per_actor))))
    writer = RowWriter(cache, workspace, todo, stats, progress)
    for batch in computed.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        rows, reasons = batch["row"].astype(np.int64), batch["reason"]
        ok = np.array([not reason for reason in reasons], dtype=bool)
        features = {layer: batch[f"layer{index}"][ok] for index, layer in enumerate(cache.layers)}
        writer.add(rows[ok].tolist(), features, batch["digest"][ok], zip(rows[~ok].tolist(), reasons[~ok]))
    return writer.finish()
