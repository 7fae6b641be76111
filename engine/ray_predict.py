"""Prediction over a whole folder on a Ray cluster: the same path as `engine.ray_embed`.

`ray_outputs` is `Predictor.labeled_outputs` (or, `embedded`, `Predictor.embedded_outputs`) with the forward
passes spread out: the driver lists the images; `map_batches` sends them, a batch at a time, to `_Predicting`
actors that each rebuild the exported model once (its bytes go through Ray's object store, so the model file
need not be on the workers' storage) and decode, resize and predict as validation does
(`Predictor.batch_outputs`); the driver gets each image's output back and yields them in the order asked for,
whatever order batches finish in. As with embedding, the workers read the images themselves: on a cluster the
folder must be at the same path on every node.

Used by `labeler predict --ray` (and its `--store`), and by the fine-tune's pass over every image of a project
(`labeler.model_layer.build_model_layer`) when a Ray address is configured (`LABELER_RAY_ADDRESS`).
"""
from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .errors import InputError
from .ray_embed import connect

logger = logging.getLogger(__name__)


class _Predicting:
    """A Ray actor holding one exported model: batches of {index, path, label} (the label pickled; b'' for none)
    in, {index, result} out, where `result` is per image the pickled (skip, error, size, output, target, feature):
    why it was left out or an error that stops the run, else its (width, height), the activated output, its
    encoded target (or None) and its pooled body features (`embedded`, or None), as numpy arrays."""

    def __init__(self, model: list, folder: str, embedded: bool, threads: int):
        import ray
        import torch

        from .predictor import load_exported
        torch.set_num_threads(max(1, threads))
        self.predictor = load_exported(ray.get(model[0]))      # the bytes, put in the object store once
        self.folder, self.embedded = Path(folder), embedded
        if embedded:
            self.predictor.check_embeddable()

    def __call__(self, batch: dict) -> dict:
        import torch

        from .predictor import _Images
        predictor = self.predictor
        paths = [str(path) for path in batch["path"]]
        labels = [pickle.loads(label) if len(label) else None for label in batch["label"]]
        images = _Images(self.folder, paths, labels, predictor.transform, predictor.task,
                         list(predictor.labels or []), predictor.size)
        samples = [images[i] for i in range(len(paths))]
        kept = [sample for sample in samples if sample.x is not None]
        outputs = features = None
        if kept:
            outputs, features = predictor.batch_outputs(torch.stack([sample.x for sample in kept]), self.embedded)
        results, at = [], 0
        for sample in samples:
            if sample.x is None:
                results.append(pickle.dumps((sample.skip, sample.error, None, None, None, None)))
                continue
            target = None if sample.y is None else sample.y.numpy()
            feature = None if features is None else features[at].numpy()
            results.append(pickle.dumps((None, None, sample.size, outputs[at].numpy(), target, feature)))
            at += 1
        return {"index": np.asarray(batch["index"], dtype=np.int64), "result": np.array(results, dtype=object)}


def ray_outputs(model_file, folder, paths: list[str], targets: Mapping | None = None, *, embedded: bool = False,
                batch_size: int = 32, address: str | None = None, actors: int | None = None,
                cpus_per_actor: float = 1.0, progress: Callable[[int], None] | None = None
                ) -> Iterator[tuple]:
    """(path, image size, activated output, target, pooled features) per readable image of `paths` under `folder`,
    in the order of `paths`, computed on the Ray cluster at `address` (`ray_embed.connect`).

    As `Predictor.labeled_outputs`: `targets[path]` is a label as the labelers give it (None: no target), images
    that cannot be read are logged and left out, and a label the model cannot know raises InputError. The
    features are None unless `embedded` (a classifier or a regressor). `progress(n)` hears how many images each
    batch handled. `actors`: copies of the model at once (default: the cluster's CPUs / `cpus_per_actor`).
    """
    import torch

    from .predictor import load_exported
    model_bytes = Path(model_file).read_bytes()
    predictor = load_exported(model_bytes)       # here too: a file that is no model fails before Ray starts
    if embedded:
        predictor.check_embeddable()
    paths, targets = list(paths), targets or {}
    if not paths:
        return
    ray = connect(address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
    actors = min(actors, math.ceil(len(paths) / batch_size))      # no actor waiting for a batch that never comes
    model = ray.put(model_bytes)
    rows = [{"index": index, "path": path,
             "label": b"" if targets.get(path) is None else pickle.dumps(targets[path])}
            for index, path in enumerate(paths)]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size + 1, 4 * actors)))
    computed = dataset.map_batches(_Predicting, batch_size=batch_size, batch_format="numpy",
                                   compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                                   fn_constructor_kwargs=dict(model=[model], folder=str(folder), embedded=embedded,
                                                              threads=max(1, int(cpus_per_actor))))
    waiting: dict[int, bytes] = {}     # results that came back before an earlier image's
    following = 0
    for batch in computed.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        waiting.update(zip(batch["index"].tolist(), batch["result"]))
        if progress is not None:
            progress(len(batch["index"]))
        while following in waiting:
            skip, error, size, output, target, feature = pickle.loads(waiting.pop(following))
            path = paths[following]
            following += 1
            if error:
                raise InputError(error)
            if skip:
                logger.warning("%s", skip)
                continue
            yield (path, tuple(size), torch.from_numpy(output), None if target is None else torch.from_numpy(target),
                   None if feature is None else torch.from_numpy(feature))
