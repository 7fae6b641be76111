"""Prediction with an exported model: one image, or a whole folder in batches decoded by worker processes.

`load_exported` rebuilds what `Learner.export` wrote as a `Predictor`. Images are decoded as training
decodes them (`data.load_image`) and fed as the data block's validation pipeline feeds them (squashed to
size x size, normalized: `augment.build_transforms(train=False)`), so the output for an image is the one
validation computed for it, and metrics on labeled images (`Predictor.metrics`) are validation's metrics.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from . import pooling
from ._workers import worker_start_method
from .augment import build_transforms
from .data import load_image
from .errors import ImageReadError, InputError, LearnerError
from .models import BodyHeadModel, create_model
from .tasks import Task, get_task
from .tta import averaged

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "labeler-model/1"


@dataclass
class _Sample:
    """One image as a worker prepared it; `x` is None when it was left out (`skip`) or stops the run (`error`)."""

    index: int  # position in the paths asked for
    x: torch.Tensor | None = None  # (3, size, size), normalized
    size: tuple[int, int] | None = None  # the image's own (width, height)
    y: torch.Tensor | None = None  # its target as the task's metrics take it; None: no label given
    path: str = ""  # the path asked for (set when the batch is made)
    skip: str | None = None  # why it is left out: the image (or its mask) cannot be read
    error: str | None = None  # a label the task cannot encode (an unknown class)


def _pixels(image, transform) -> torch.Tensor:
    """A decoded RGB PIL image as the validation pipeline makes it: (3, size, size) float32, normalized."""
    uint8 = tv_tensors.Image(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    return transform(uint8).as_subclass(torch.Tensor)


class _Images(Dataset):
    """Decodes, resizes and normalizes images, and encodes their labels, for `Predictor`'s batches."""

    def __init__(self, folder: Path, paths: list[str], labels: list, transform, task: Task, names: list, size: int):
        self.folder, self.paths, self.labels, self.transform = folder, paths, labels, transform
        self.task, self.names, self.size = task, names, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Sample:
        label = self.labels[index]
        try:
            image = load_image(self.folder / self.paths[index])
            target = None if label is None else self.task.encode_one(image, label, self.names, self.size)
        except ImageReadError as err:
            return _Sample(index, skip=str(err))
        except InputError as err:  # sent back as text: the main process raises it, without a worker traceback
            return _Sample(index, error=f"{self.paths[index]}: {err}")
        return _Sample(index, _pixels(image, self.transform), image.size, target)


def _as_list(samples: list[_Sample]) -> list[_Sample]:
    """The DataLoader's collate: the main process stacks what was readable."""
    return samples


def prediction_workers() -> int:
    """Decoding processes for prediction: none on one or two cores, else the cores but two, at most 4.

    Unlike embedding, prediction runs a small network at a small size, so decoding in another process only
    takes a core from the network's threads: on 2 cores, 2,000 cifar10 images at 64 px took 20.7 s with
    one decoding process and 6.3 s with none (`bench/predict.py`).
    """
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores - 2)


class Predictor:
    """An exported model ready to predict on PIL images, image paths or whole folders."""

    def __init__(self, model: nn.Module, task: Task, labels, size: int, mean, std):
        self.model, self.task, self.labels = model.eval(), task, labels
        self.size, self.mean, self.std = size, list(mean), list(std)
        self.transform = build_transforms(size, train=False, mean=self.mean, std=self.std)  # validation's pipeline

    @classmethod
    def from_learner(cls, learner) -> Predictor:
        data = learner.data
        return cls(learner.model, learner.task, data.classes or data.codes, data.size, data.mean, data.std)

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image as the (1, 3, size, size) normalized batch the model predicts on, as validation feeds it."""
        return _pixels(image, self.transform)[None]

    @torch.no_grad()
    def raw_outputs(self, x: torch.Tensor, head_only: bool = False) -> torch.Tensor:
        """The model's raw outputs (float32, on the CPU) for a batch of `preprocess`ed images (or, `head_only`, of
        a body's feature maps from `_forward`); its mode is restored."""
        return self._forward(x, head=head_only)[1]

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, body: bool = False, head: bool = False):
        """(body's feature map or None, output or None) of a batch: the whole model, its body only (`body`), or
        its head only on a feature map (`head`)."""
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device  # channels-last, as the Learner feeds the model
            x = x.to(device, memory_format=torch.channels_last) if x.ndim == 4 else x.to(device)
            if body:
                return self.model.body(x).float().cpu(), None
            return None, (self.model.head(x) if head else self.model(x)).float().cpu()
        finally:
            self.model.train(was_training)

    def outputs(self, folder, paths, *, batch_size: int = 32, workers: int | None = None, progress=None):
        """(path, image size, activated output) per readable image of `paths` under `folder`.

        Images are decoded and resized by `workers` processes (default `prediction_workers()`; 0
        decodes here) and predicted `batch_size` at a time. Unreadable ones are logged and left out.
        `progress(n)` is called with the number of paths each batch handled.
        """
        for path, size, output, _ in self.labeled_outputs(folder, paths, None, batch_size=batch_size,
                                                          workers=workers, progress=progress):
            yield path, size, output

    def labeled_outputs(self, folder, paths, targets: Mapping | None, *, batch_size: int = 32,
                        workers: int | None = None, progress=None, tta: bool | str = False):
        """`outputs` with each image's target: (path, image size, activated output, target).

        `targets[path]` is a label as the labelers give it (a class name, a list of tags, a mask file,
        (k, 2) pixel points); it comes back as the task's metrics take it at the model's size
        (`Task.encode_one`), or None for a path without one. A mask that cannot be read leaves its
        image out, as in training; a label the model cannot know (an unknown class) raises InputError.
        `tta` averages each output over views of the image, as `Learner.validate(tta=...)` does.
        """
        for samples, x in self._batches(folder, paths, targets, batch_size, workers, progress):
            outputs, _ = self.batch_outputs(x, tta=tta)
            yield from ((s.path, s.size, output, s.y) for s, output in zip(samples, outputs))

    def embedded_outputs(self, folder, paths, *, batch_size: int = 32, workers: int | None = None, progress=None):
        """(path, pooled features, activated output) per readable image: the features are the fine-tuned body's
        last feature map pooled as the feature cache pools every layer (`engine.pooling.pool`), for a model with
        a body and a pooled head (a classifier or a regressor; not a U-Net)."""
        self.check_embeddable()
        for samples, x in self._batches(folder, paths, None, batch_size, workers, progress):
            outputs, features = self.batch_outputs(x, embedded=True)
            yield from ((s.path, feature, output) for s, feature, output in zip(samples, features, outputs))

    def check_embeddable(self) -> None:
        """Raises LearnerError for a model without a body and a pooled head (a U-Net): it has no features to map."""
        if not isinstance(self.model, BodyHeadModel):
            raise LearnerError(f"A {self.task.name} model has no pooled body features to map; only classifiers "
                               f"and regressors do.")

    def batch_outputs(self, x: torch.Tensor, embedded: bool = False,
                      tta: bool | str = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(activated outputs, pooled body features or None) of a batch of `preprocess`ed images; the features
        (`embedded`) are the body's last feature map pooled as the feature cache pools every layer
        (`engine.pooling.pool`); `tta` averages the raw outputs over views of the images (`engine.tta`: the
        mirrored one where the task can map it back, and for "zoom" a zoomed centre crop) before the activation.
        What `labeled_outputs`, `embedded_outputs` and Ray's workers compute."""
        if not embedded:
            return self.task.activation(averaged(self.raw_outputs, x, self.task, tta)), None
        fmap, _ = self._forward(x, body=True)
        return self.task.activation(self.raw_outputs(fmap, head_only=True)), pooling.pool(fmap)

    def _batches(self, folder, paths, targets, batch_size, workers, progress):
        """(readable samples, their stacked pixels) per batch of `paths`; see `labeled_outputs`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} is not a positive int. Give the images per forward pass.")
        paths, targets = list(paths), targets or {}
        dataset = _Images(Path(folder), paths, [targets.get(path) for path in paths], self.transform, self.task,
                          list(self.labels or []), self.size)
        workers = prediction_workers() if workers is None else workers
        workers = min(workers, math.ceil(len(paths) / batch_size) - 1)  # one batch: no process to start
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=max(workers, 0), collate_fn=_as_list,
                            multiprocessing_context=worker_start_method() if workers > 0 else None)
        for samples in loader:
            kept = [sample for sample in samples if sample.x is not None]
            for sample in samples:
                if sample.error:
                    raise InputError(sample.error)
                if sample.skip:
                    logger.warning("%s", sample.skip)
            if kept:
                for sample in kept:
                    sample.path = paths[sample.index]
                yield kept, torch.stack([sample.x for sample in kept])
            if progress is not None:
                progress(len(samples))

    def metrics(self, outputs, targets) -> dict[str, float]:
        """The task's metrics over every (output, target) pair, computed as validation computes them: over the
        whole set at once (all pixels of all images, not a mean of per-image scores).

        A copy of the task scores, so a multi-label threshold tuned on these images is not the model's afterwards.
        """
        outputs, targets = list(outputs), list(targets)
        if not targets:
            raise InputError("No image with a label to score. Check that the label file names the images predicted.")
        return copy.copy(self.task).metrics(torch.stack(outputs), torch.stack(targets))

    def predict(self, image) -> dict:
        """Label and probabilities, tags, a mask at the image's size, or points in the image's pixels."""
        from PIL import Image
        image = image if isinstance(image, Image.Image) else load_image(image)
        output = self.task.activation(self.raw_outputs(self.preprocess(image)))[0]
        return self.task.decode(output, image.size, self.labels)


def load_exported(path, device="cpu") -> Predictor:
    """Rebuild an exported model (no pretrained weights needed) as a `Predictor`; `path` may also be the file's
    bytes (what Ray's workers get)."""
    if isinstance(path, bytes):
        state, path = torch.load(io.BytesIO(path), map_location=device, weights_only=True), "the model's bytes"
    elif not Path(path).is_file():
        raise LearnerError(f"Model file {str(path)!r} does not exist. Give a file written by `labeler train --out` "
                           f"or Learner.export.")
    else:
        state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT:
        raise LearnerError(f"{path} is not a model exported by Learner.export (expected format {EXPORT_FORMAT}).")
    config = dict(state["model_config"])
    model = create_model(config.pop("task"), config.pop("backbone"), config.pop("n_out"), pretrained=False, **config)
    model.load_state_dict(state["state_dict"])
    task = get_task(state["task"])(**state["task_config"])
    labels = state["classes"] or state["codes"]
    model = model.to(device, memory_format=torch.channels_last)  # about 1.6x faster convolutions on CPU
    return Predictor(model, task, labels, state["size"], state["mean"], state["std"])
