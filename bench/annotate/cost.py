"""The cost model: what the simulated person may see (`Oracle`), what each action costs (`Desk`), and the
runner's score of the result (`Judge`), which the policies never see."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from labeler.session import Session

LEVELS = (0.5, 0.8, 0.9)                  # labeled shares whose first crossing the judge records


class PeekError(RuntimeError):
    """The annotator asked for the true label of an item that is not in the review grid."""


class Oracle:
    """The person's eyes: the true label of an image, only while it is in the session's review grid."""

    def __init__(self, truth: dict[int, str], session: Session):
        self._truth, self._session = truth, session
        self.looked: set[int] = set()
        self.looks = 0

    def look(self, ids) -> dict[int, str]:
        shown = set(self._session.review.ids)
        hidden = [int(i) for i in ids if int(i) not in shown]
        if hidden:
            raise PeekError(f"items {hidden[:5]} are not in the review grid; a person cannot see what they are")
        self.looks += len(ids)
        self.looked.update(int(i) for i in ids)
        return {int(i): self._truth[int(i)] for i in ids}


class Desk:
    """The app's controls, each costing one action; `on_change` runs after anything that labels."""

    def __init__(self, session: Session, on_change, seed: int = 0):
        self.session, self._on_change, self.seed = session, on_change, seed
        self.actions = 0
        self.by_kind: Counter = Counter()
        self.shown: set[int] = set()                 # every item that ever appeared in the review grid
        self.fine_tune_spec = None                   # a labeler.finetune.TrainSpec (default: the Model tab's)
        self.fine_tune_seconds: list[float] = []     # wall time of each fine-tune, reported apart from actions

    def _spend(self, kind: str) -> None:
        self.actions += 1
        self.by_kind[kind] += 1

    def lasso(self, polygon: np.ndarray) -> list[int]:
        """Select the drawn items inside a polygon in the current view's coordinates."""
        from matplotlib.path import Path as Polygon
        self._spend("lasso")
        inside = Polygon(np.asarray(polygon, dtype=float)).contains_points(self.session.coords())
        review = self.session.select(self.session.rows[inside])
        self.shown.update(review.ids)
        return list(review.ids)

    def label_one(self, item: int, oracle: Oracle) -> None:
        """One image at a time: the image is shown, its label clicked (the one-at-a-time baseline's unit)."""
        self._spend("one image")
        self.session.select([item])
        self.shown.add(int(item))
        self.session.label_review(oracle.look([item])[int(item)])
        self._on_change()

    def label_item(self, item: int, name: str) -> None:
        """One image of the review labeled by itself (its label's key pressed over it); it leaves the review."""
        self._spend("label one")
        self.session.label_item(item, name)
        self._on_change()

    def drop(self, item: int) -> None:
        self._spend("drop")
        if not self.session.review.toggle(int(item)):
            raise RuntimeError(f"item {item} was already dropped")

    def label(self, name: str) -> int:
        self._spend("label")
        count = self.session.label_review(name)
        self._on_change()
        return count

    def step_layer(self, step: int) -> None:
        self._spend("layer")
        self.session.step_layer(step)

    def step_view(self, step: int) -> None:
        self._spend("view")
        self.session.step_view(step)

    def find_similar(self) -> list[int]:
        """Add the 50 most similar unlabeled items to the review; returns the new ones."""
        self._spend("find similar")
        before = set(self.session.review.ids)
        new = [i for i in self.session.find_similar(50).ids if i not in before]
        self.shown.update(new)
        return new

    def separate(self, labels: list[str]) -> None:
        self._spend("separate")
        self.session.separate(labels)

    def train(self):
        self._spend("train")
        return self.session.train()

    def fine_tune(self) -> dict:
        """Fine-tune on the labels so far as the Model tab's button does (a child process that also maps every
        image), and wait for it: one action, its wall time kept apart. Returns the model's record."""
        from labeler.finetune import TrainSpec, start_training
        self._spend("fine-tune")
        started = time.perf_counter()
        run = start_training(self.session.project, self.fine_tune_spec or TrainSpec(seed=self.seed))
        run.join()
        self.fine_tune_seconds.append(time.perf_counter() - started)
        if run.error or not run.record:
            raise RuntimeError(f"the fine-tune failed: {run.error or run.stage}")
        self.session.refresh_model_layer()
        return run.record

    def accept(self, threshold: float) -> int:
        self._spend("accept")
        count = self.session.accept(threshold)
        self._on_change()
        return count

    def check(self, threshold: float) -> list[int]:
        """Check predictions: a random sample of unlabeled images predicted at >= threshold, each shown
        with its predicted label."""
        self._spend("check")
        review = self.session.check_predictions(threshold, seed=self.actions + 100_003 * self.seed)
        self.shown.update(review.ids)
        return list(review.ids)

    def accept_shown(self) -> int:
        self._spend("accept shown")
        count = self.session.accept_review()
        self._on_change()
        return count


@dataclass
class Judge:
    """Counts labeled items and their accuracy after every change; keeps the first point past each level."""

    truth: dict[int, str]
    session: Session
    desk: Desk | None = None
    milestones: dict[float, dict] = field(default_factory=dict)
    labeled_fraction: float = 0.0

    def __call__(self) -> None:
        names, labels = self.session.human_labels()
        rows = self.session.rows
        given = labels[rows]
        done = given >= 0
        right = sum(names[g] == self.truth[int(i)] for i, g in zip(rows[done], given[done]))
        self.labeled_fraction = done.sum() / len(rows)
        for level in LEVELS:
            if level not in self.milestones and self.labeled_fraction >= level:
                self.milestones[level] = {"level": level, "actions": self.desk.actions,
                                          "labeled": int(done.sum()), "accuracy": right / max(1, done.sum())}
