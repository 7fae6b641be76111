"""Grad-CAM heatmaps of the project's current model, item by item: where it looked for what it predicts.

    cache = HeatmapCache(project)
    shown = cache.get(item_id)          # a Heatmap: the picture with the overlay and the prediction as text
    shown.tile(64)                      # as a thumbnail: the image's own aspect again, letterboxed
    cache.get_many(ids)                 # the review grid's: one inference and one Grad-CAM pass per batch
    cache.cached(ids)                   # what is computed already, without computing anything

The current model is `ModelStore.current_id` (the Model tab chooses it); it is loaded on first use
and again whenever another one becomes current (or its file is rewritten). Pictures are kept per
model and item, the least recently used dropped first. No Panel here: the Label tab wires this up
(`labeler.ui.heatmap_view`). Computing runs under a lock (Grad-CAM hooks the model, so two passes
must not overlap); reading what is cached never waits for it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import SessionError
from .model_store import ModelStore

logger = logging.getLogger(__name__)

NO_MODEL = "No model yet: fine-tune one in the Model tab"
CAPACITY = 256          # pictures kept (about 80 KB each at the default 160 px): a full review grid's worth
BATCH_SIZE = 8          # images per Grad-CAM pass in get_many: about a second on two CPU cores
# torch threads for Grad-CAM: half the cores, so the server (and the person's other work) keeps the rest. On a
# 2-core machine under load, 2 threads made a mobilenet_v2 pass at 160 px ten times slower than 1 (oversubscribed
# OpenMP threads wait on each other): 3.7 s against 0.37 s for one image, 9.3 s against 1.7 s for 8
THREADS = max(1, (os.cpu_count() or 2) // 2)


class NoModelError(SessionError):
    """The project has no finished fine-tuned model, so there is nothing to explain yet."""


@dataclass(frozen=True, eq=False)
class Heatmap:
    """One item explained by one model."""

    item_id: int
    model_id: str
    picture: np.ndarray          # HxWx3 uint8 at the model's input size, as the model saw the image, heatmap over it
    image_size: tuple[int, int]  # the image's own (width, height): the model saw it squashed to a square
    caption: str                 # what the model predicts, as plain text (a person's label names: escape it)

    def fitted(self, size: int) -> Image.Image:
        """The picture with the image's aspect restored, its longer side `size` pixels."""
        width, height = self.image_size
        scale = size / max(width, height, 1)
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        return Image.fromarray(self.picture).resize(shape, Image.BILINEAR)

    def tile(self, size: int) -> np.ndarray:
        """uint8 (size, size, 3), laid out as the thumbnail cache lays out its tiles."""
        from .thumbs import make_tile
        return make_tile(self.fitted(size), size)


def caption(summary: dict) -> str:
    """A task's `summary` of one prediction as one line: "label cat, confidence 93%", "labels a, b", ...."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, dict):  # class -> share of a mask: the largest three
            value = ", ".join(f"{name} {share:.0%}" for name, share in
                              sorted(value.items(), key=lambda pair: -pair[1])[:3])
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, float):
            value = f"{value:.0%}" if key == "confidence" else f"{value:.3g}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


class HeatmapCache:
    """Grad-CAM pictures of the current model of `project` (a labeler.project.Project), computed on demand.

    Args:
        project: whose images are explained (`project.items`) and whose `models/` folder names the model.
        capacity: pictures kept, over all models; the least recently used go first.
        device: where the model runs ("cpu"; "cuda" where a GPU is free).
        threads: torch threads of the thread that computes (torch counts them per thread).
    """

    def __init__(self, project, *, capacity: int = CAPACITY, device: str = "cpu", threads: int = THREADS):
        self.project, self.capacity, self.device, self.threads = project, capacity, device, threads
        self.models = ModelStore(project.workspace.root)
        self._loaded: tuple[str, int] | None = None      # (model id, model file mtime) of `_predictor`
        self._predictor = None
        self._pictures: OrderedDict[tuple[str, int, int], Heatmap] = OrderedDict()
        self._compute_lock = threading.RLock()          # loading and Grad-CAM passes
        self._pictures_lock = threading.Lock()          # the dict only: held for microseconds

    @property
    def model_id(self) -> str | None:
        """The current model's id (None: no model yet)."""
        return self.models.current_id

    def require_model(self) -> str:
        """The current model's id, without loading it; NoModelError when there is none yet."""
        return self._current()[0]

    def _current(self) -> tuple[str, int]:
        model_id = self.models.current_id
        if model_id is None:
            raise NoModelError(f"{NO_MODEL}.")
        path = self.models.model_path(model_id)
        return model_id, path.stat().st_mtime_ns if path.is_file() else 0

    def predictor(self):
        """The current model as an `engine.predictor.Predictor`, loaded again when another one became current.

        Raises NoModelError without a finished model, LearnerError when its file cannot be loaded.
        """
        with self._compute_lock:
            current = self._current()
            if current != self._loaded:
                from engine.predictor import load_exported
                logger.info("loading %s for heatmaps", current[0])
                self._predictor = load_exported(self.models.model_path(current[0]), device=self.device)
                self._loaded = current
                with self._pictures_lock:   # another model's pictures will not be asked for again
                    self._pictures.clear()
            return self._predictor

    def cached(self, item_ids: Sequence[int]) -> dict[int, Heatmap]:
        """The pictures of the current model already computed for `item_ids`; computes nothing."""
        try:
            current = self._current()
        except NoModelError:
            return {}
        found = {}
        with self._pictures_lock:
            for item in item_ids:
                if (heatmap := self._pictures.get(key := (*current, int(item)))) is not None:
                    self._pictures.move_to_end(key)      # recently used: kept longest
                    found[int(item)] = heatmap
        return found

    def get(self, item_id: int) -> Heatmap:
        """One item explained by the current model (computed now unless cached).

        Raises NoModelError without a model, engine ImageReadError when the image cannot be read.
        """
        from engine.interpret import explain_image
        if (hit := self.cached([item_id]).get(item_id)) is not None:
            return hit
        with self._compute_lock, torch_threads(self.threads):
            predictor = self.predictor()
            image = self._image(item_id)
            picture, result = explain_image(predictor, image, heatmap=True)
            return self._keep(item_id, picture, image.size, result)

    def get_many(self, item_ids: Sequence[int], *, batch_size: int = BATCH_SIZE,
                 stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[int, Heatmap]:
        """`item_ids` explained by the current model, computing the missing ones `batch_size` at a time.

        Images that cannot be read are logged and left out. `stop()` is asked between batches (True ends
        early, with what is done); `progress(done, total)` hears after each batch.
        """
        from engine.errors import ImageReadError
        from engine.interpret import explain_images
        found = self.cached(item_ids)
        missing = [int(item) for item in dict.fromkeys(item_ids) if item not in found]
        for start in range(0, len(missing), batch_size):
            if stop is not None and stop():
                break
            with self._compute_lock, torch_threads(self.threads):
                predictor, images = self.predictor(), {}
                for item in missing[start:start + batch_size]:
                    try:
                        images[item] = self._image(item)
                    except ImageReadError as err:
                        logger.warning("no heatmap for item %s: %s", item, err)
                if images:
                    for item, (picture, result) in zip(images, explain_images(predictor, list(images.values()))):
                        found[item] = self._keep(item, picture, images[item].size, result)
            if progress is not None:
                progress(min(start + batch_size, len(missing)), len(missing))
        return found

    def _image(self, item_id: int) -> Image.Image:
        from engine.data import load_image
        path = self.project.items[int(item_id)].path
        return load_image(self.project.workspace.abspath(path))

    def _keep(self, item_id: int, picture: np.ndarray, image_size, result: dict) -> Heatmap:
        """Remember one computed picture (under the compute lock: `_loaded` is the model that made it)."""
        model_id, stamp = self._loaded
        heatmap = Heatmap(int(item_id), model_id, picture, tuple(image_size),
                          caption(self._predictor.task.summary(result)))
        with self._pictures_lock:
            self._pictures[(model_id, stamp, int(item_id))] = heatmap
            self._pictures.move_to_end((model_id, stamp, int(item_id)))
            while len(self._pictures) > self.capacity:
                self._pictures.popitem(last=False)
        return heatmap


class HeatmapWork:
    """Heatmaps a view asks for, computed in a background `Job`: the hovered item first, then the grid's items
    `batch_size` at a time, in the grid's order (the top rows, in sight first, come first).

    `ask(hover=..., grid=...)` replaces what was asked before (a new hover or grid makes the old one's
    remaining items moot) and starts a job unless one is running, which then takes up the new request
    between batches. Whoever shows the heatmaps polls the job and reads `cache.cached(...)`.
    """

    def __init__(self, cache: HeatmapCache, *, batch_size: int = BATCH_SIZE):
        self.cache, self.batch_size = cache, batch_size
        self.job = None                       # the latest labeler.jobs.Job
        self._hover: int | None = None
        self._grid: list[int] = []
        self._busy = False                    # a job is taking requests (changes under the lock only)
        self._lock = threading.Lock()

    def ask(self, *, hover: int | None = None, grid: Sequence[int] | None = None, wait: bool = False):
        """Ask for the heatmap of `hover` and those of `grid` (None: keep what was asked; [] drops the grid's rest).

        Returns the job that started (run to its end here with `wait`), or None when the running one takes the
        request up or nothing is left to do."""
        from .jobs import Job
        with self._lock:
            if hover is not None:
                self._hover = int(hover)
            if grid is not None:
                self._grid = [int(item) for item in grid]
            if self._busy or (self._hover is None and not self._grid):
                return None
            self._busy = True
            self.job = Job(self._work, name="labeler-heatmaps")
        return self.job.run() if wait else self.job.start()

    def _next(self) -> tuple[list[int], bool] | None:
        """The items to compute next and whether it is the hovered one; None (no longer busy) when none is left."""
        with self._lock:
            if self._hover is not None:
                items, self._hover = [self._hover], None
                return items, True
            if self._grid:
                items, self._grid = self._grid[:self.batch_size], self._grid[self.batch_size:]
                return items, False
            self._busy = False
            return None

    def _work(self, job) -> int:
        from engine.errors import ImageReadError
        done = 0
        try:
            while (asked := self._next()) is not None:
                items, hovered = asked
                if hovered:
                    try:
                        self.cache.get(items[0])
                        done += 1
                    except ImageReadError as err:   # the preview shows the plain image, as without heatmaps
                        logger.warning("no heatmap for item %s: %s", items[0], err)
                else:
                    done += len(self.cache.get_many(items, batch_size=len(items)))
                job.report("heatmaps", done, done + len(self._grid))
        finally:
            with self._lock:   # an error ends the job: the next ask starts another
                self._busy = False
        return done


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch computes with `count` threads in this thread while the context lasts."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
