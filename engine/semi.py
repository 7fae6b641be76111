"""Learning from the unlabeled images too: FixMatch-style pseudo-labels with consistency under augmentation.

Each training step also draws `ratio` unlabeled images per labeled one. The model's prediction on a weak
view (a flip) of each unlabeled image is its pseudo-label, kept only where it is confident (its probability
at least `threshold`); the model is then trained to give that label to a strong view of the same image
(RandAugment and a cut-out patch), with weight `weight` beside the labeled loss (Sohn et al., 2020,
"FixMatch"). The weak and strong views go through the model in one batch with the labeled images, so batch
norm sees them together, as in the paper.

Per task:
  classify    the class of the weak view, where its softmax probability >= threshold
  multilabel  per tag: on where p >= threshold, off where p <= 1 - threshold; unsure tags are left out
  segment     per pixel, as classify; the strong view changes colours only (no geometry, no cut-out), so every
              pixel's pseudo-label still belongs to the same pixel
  regress     not offered: a regressed point has no probability to tell a confident prediction from a guess
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .data import load_image
from .datablock import first_readable
from .errors import InputError, LearnerError

__all__ = ["SemiSupervised", "UnlabeledImages", "check_offered", "pseudo_label_loss"]

def check_offered(task) -> None:
    """A LearnerError saying why, for a task that cannot learn from unlabeled images (`Task.no_pseudo_labels`)."""
    if task.no_pseudo_labels:
        task.pseudo_targets(torch.zeros(1, 1), 0.5)      # raises the task's own message


class UnlabeledImages(Dataset):
    """(weak view, strong view) of each unlabeled image, normalized as the labeled images are.

    The size follows `labeled` (the training split's dataset), so progressive resizing moves both.
    """

    def __init__(self, folder, items: list[str], labeled, *, pixels: bool = False, magnitude: int = 10):
        if not items:
            raise InputError("There are no unlabeled images to learn from: every image has a label, or none is left "
                             "after the test split.")
        self.folder, self.items, self.labeled = Path(folder), list(items), labeled
        if pixels:   # colours only, so each pixel of the strong view is the same pixel of the weak one
            self.strong = v2.Compose([v2.ColorJitter(0.4, 0.4, 0.4, 0.05), v2.RandomAutocontrast(p=0.5),
                                      v2.RandomEqualize(p=0.3), v2.RandomAdjustSharpness(2, p=0.5)])
        else:
            self.strong = v2.RandAugment(num_ops=2, magnitude=magnitude)
        self.erase = None if pixels else v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=0)
        self._bad: dict[int, str] = {}

    def __len__(self):
        return len(self.items)

    def _normalized(self, image: torch.Tensor) -> torch.Tensor:
        return v2.functional.normalize(v2.functional.to_dtype(image, torch.float32, scale=True),
                                       list(self.labeled.mean), list(self.labeled.std))

    def __getitem__(self, index: int):
        _, image = first_readable(lambda i: load_image(self.folder / self.items[i]), index, len(self.items),
                                  self._bad, f"left unlabeled in {str(self.folder)!r}")
        size = self.labeled.size
        pixels = tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        weak = v2.RandomHorizontalFlip()(v2.functional.resize(pixels, [size, size], antialias=True))
        strong = self._normalized(self.strong(weak))
        if self.erase is not None:
            strong = self.erase(strong)
        return self._normalized(weak).as_subclass(torch.Tensor), strong.as_subclass(torch.Tensor)


def pseudo_label_loss(task, weak: torch.Tensor, strong: torch.Tensor, threshold: float
                      ) -> tuple[torch.Tensor, float]:
    """(the consistency loss of the strong view's raw outputs against the weak view's confident pseudo-labels,
    the share of pseudo-labels kept). `weak` carries no gradient; the loss averages over every image (or tag,
    or pixel), kept or not, as FixMatch does, so few confident predictions mean a small push."""
    targets, keep = task.pseudo_targets(weak.detach().float(), threshold)
    losses = task.loss(strong.float(), targets, reduction="none")
    return (losses * keep).mean(), float(keep.float().mean())


class SemiSupervised:
    """The unlabeled side of a `Learner`'s training steps (`Learner.use_unlabeled` makes one)."""

    def __init__(self, learner, items: list[str], *, threshold: float = 0.95, ratio: int = 2, weight: float = 1.0,
                 folder=None):
        task = learner.task
        check_offered(task)
        if not 0 < threshold < 1:
            raise LearnerError(f"The confidence threshold must be between 0 and 1 (e.g. 0.95), not {threshold}.")
        if not isinstance(ratio, int) or ratio < 1:
            raise LearnerError(f"The unlabeled share must be a whole number of unlabeled images per labeled one "
                               f"(e.g. 2), not {ratio!r}.")
        smoothing = getattr(task, "label_smoothing", 0.0)
        ceiling = 1 - smoothing + smoothing / learner.data.n_out   # the probability smoothing trains towards
        if smoothing and threshold >= ceiling - 1e-6:
            raise LearnerError(f"Label smoothing {smoothing:g} keeps every probability below {ceiling:.3f}, so a "
                               f"confidence threshold of {threshold:g} would keep no pseudo-label. Lower the "
                               f"threshold or the smoothing.")
        if not weight > 0:
            raise LearnerError(f"The unlabeled loss weight must be above 0, not {weight}.")
        train = learner.data.train
        labeled = train.dataset
        self.task, self.threshold, self.ratio, self.weight = task, float(threshold), ratio, float(weight)
        self.dataset = UnlabeledImages(folder or labeled.folder, items, labeled, pixels=task.pixel_aligned)
        self.loader = DataLoader(self.dataset, batch_size=train.batch_size * ratio, shuffle=True, drop_last=False,
                                 num_workers=train.num_workers,
                                 generator=torch.Generator().manual_seed(torch.initial_seed() % 2 ** 63))
        self._batches = None
        self.kept: list[float] = []   # the share of pseudo-labels kept, per step of this epoch

    def consistency(self, weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
        """`pseudo_label_loss` of one step's raw outputs, weighted; the share kept goes into this epoch's report."""
        loss, kept = pseudo_label_loss(self.task, weak, strong, self.threshold)
        self.kept.append(kept)
        return self.weight * loss

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (weak, strong) batch; the unlabeled images are cycled through, reshuffled each pass."""
        if self._batches is None:
            self._batches = iter(self.loader)
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self.loader)
            return next(self._batches)

    def epoch_report(self) -> dict[str, float]:
        """{"pseudo_labeled": the mean share of unlabeled images (tags, pixels) confident enough this epoch}."""
        report = {"pseudo_labeled": float(sum(self.kept) / len(self.kept))} if self.kept else {}
        self.kept = []
        return report
