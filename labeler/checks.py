"""Checks of a model's predictions, and accepting them: the session's workflow once a model exists.

A check is a random sample of the unlabeled images a model predicts at or above a confidence,
shown with the predicted labels; the person drops (or relabels) the wrong ones and accepts the
rest. Being random over everything above the threshold, what the checks showed is a fair
estimate of the precision that "Accept all above" would have, unlike a look at the model's
surest images. Verdicts are kept in the label store (`checks` table), so the estimate survives
a reload.

`PredictionChecks` is a part of `labeler.session.Session` (a mixin: it uses the session's
`store`, `rows`, `review` and `human_labels`), kept here so that each file holds one idea.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.firstmodel import wilson_interval

from .errors import SessionError
from .selection import Check, Review

# images in one check of predictions (8 rows of the review grid): on cifar10 the simulated annotator
# (bench/annotate.py) needed 712 actions for 90% with checks of 96, 816 with checks of 48
CHECK_SIZE = 96


@dataclass(frozen=True)
class CheckedPrecision:
    """What checks of the latest model showed at or above a threshold."""

    threshold: float
    right: int
    seen: int

    @property
    def lower_bound(self) -> float:
        """The precision's 95% lower bound (Wilson); 0 when nothing was checked."""
        return wilson_interval(self.right / self.seen, self.seen)[0] if self.seen else 0.0


@dataclass(frozen=True)
class Accepted:
    """What "Accept all above" did: how many images it labeled, and what checks say of them."""

    count: int
    threshold: float
    checked: CheckedPrecision

    @property
    def likely_wrong(self) -> int | None:
        """About how many of the accepted the checks put wrong; None when nothing was checked."""
        checked = self.checked
        return round(self.count * (1 - checked.right / checked.seen)) if checked.seen else None


class PredictionChecks:
    """Predictions of the latest model, checks of them, and accepting them (part of Session)."""

    def latest_model(self) -> str | None:
        """The id of the latest stored model (read without its predictions), or None."""
        models = self.store.prediction_models()
        return models[-1] if models else None

    def predictions(self):
        """(classes, item ids, probs) of the latest stored model, or None."""
        found = self.store.predictions()
        if found is None:
            return None
        _, classes, ids, probs = found
        return classes, ids, probs

    def row_predictions(self):
        """(classes, probs, has) of the latest stored model over the drawn rows, or None: probs is
        (len(rows), len(classes)), zero where `has` is False (the row had no features at training)."""
        found = self.predictions()
        if found is None:
            return None
        classes, ids, probs = found
        where = {int(i): k for k, i in enumerate(ids)}
        at = np.array([where.get(int(i), -1) for i in self.rows], dtype=np.int64)
        has = at >= 0
        by_row = np.zeros((len(self.rows), len(classes)), dtype=np.float32)
        by_row[has] = probs[at[has]]
        return classes, by_row, has

    def check_predictions(self, threshold: float, n: int = CHECK_SIZE, seed: int | None = None):
        """Select a random sample of up to `n` unlabeled images that the latest model predicts at
        `threshold` or above, grouped by the predicted label, which the review shows under each image.

        The person drops the wrong ones and accepts the rest (accept_review): being random over every
        image above the threshold, what they keep is a fair estimate of the precision that "Accept"
        at that threshold would have, unlike a look at the model's surest images."""
        found = self.row_predictions()
        if found is None:
            raise SessionError("Checking predictions needs a trained model: press Train first.")
        model_id = self.latest_model()
        classes, probs, has = found
        _, labels = self.human_labels()
        confidence, predicted = probs.max(1), probs.argmax(1)
        seen = np.isin(self.rows, list(self.checked_items(model_id=model_id)))     # each image is checked once per model
        pool = np.flatnonzero(has & (labels[self.rows] < 0) & (confidence >= threshold) & ~seen)
        if not len(pool):
            raise SessionError(f"No unchecked, unlabeled image is predicted at {threshold:g} or above; lower "
                               f"the threshold or train again.")
        pick = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
        pick = pick[np.lexsort((-confidence[pick], predicted[pick]))]
        ids = self.rows[pick].tolist()
        self.review = Review(ids=ids, predicted={i: classes[c] for i, c in zip(ids, predicted[pick])},
                             check=Check(model_id, float(threshold), len(pool),
                                         {i: float(p) for i, p in zip(ids, confidence[pick])}))
        return self.review

    def accept_review(self) -> int:
        """Label each kept image of a check with the prediction shown under it (one undoable action);
        the dropped ones stay selected, as after any label. Both count toward the precision estimate."""
        review = self.review
        if not review.predicted:
            raise SessionError("Accept shown needs a check of predictions in the review: press Check first.")
        kept = [i for i in review.kept if i in review.predicted]
        if kept:
            self.store.assign_many({i: review.predicted[i] for i in kept}, source="human")
        if review.check is not None:
            check = review.check
            self.store.record_checks(check.model_id, [(i, check.threshold, check.confidence[i], i not in review.dropped)
                                                      for i in review.ids if i in check.confidence])
        self.review = Review(ids=[i for i in review.ids if i in review.dropped])
        return len(kept)

    def _record_check(self, item_id: int, name: str) -> None:
        """An image of a check labeled by itself: a right prediction only when it got the predicted label."""
        check = self.review.check
        if check is not None and item_id in check.confidence:
            self.store.record_checks(check.model_id, [(item_id, check.threshold, check.confidence.pop(item_id),
                                                       self.review.predicted.get(item_id) == name)])

    def checked_precision(self, threshold: float, below: float = np.inf) -> tuple[int, int]:
        """(right, seen) among the checked predictions of the latest model with a confidence in
        [threshold, below), from checks drawn at `threshold` or lower: each is a uniform sample of
        the images at or above its threshold, so of this band too (`below`: where everything above
        was accepted already)."""
        model_id = self.latest_model()
        if model_id is None:
            return 0, 0
        seen = [agreed for _, drawn_at, confidence, agreed in self.store.checks(model_id)
                if drawn_at <= threshold <= confidence < below]
        return sum(seen), len(seen)

    def checked(self, threshold: float) -> CheckedPrecision:
        """What checks of the latest model showed at or above `threshold` (a fair estimate of Accept's precision)."""
        right, seen = self.checked_precision(threshold)
        return CheckedPrecision(float(threshold), right, seen)

    def checked_items(self, right: bool | None = None, model_id: str | None = None) -> set[int]:
        """Items whose prediction by `model_id` (default: the latest model) a check showed: kept (right=True),
        dropped (False) or either."""
        model_id = model_id or self.latest_model()
        if model_id is None:
            return set()
        return {item for item, _, _, agreed in self.store.checks(model_id) if right is None or agreed == right}

    def accept(self, threshold: float) -> int:
        """Label the unlabeled images predicted at `threshold` or above with their prediction, except those
        a check showed to be wrong; returns how many were labeled."""
        model_id = self.latest_model()
        if model_id is None:
            raise SessionError("Accepting predictions needs a trained model: press Train first.")
        before = sum(self.store.counts().values())
        self.store.accept_predictions(model_id, threshold, skip=self.checked_items(right=False, model_id=model_id))
        return sum(self.store.counts().values()) - before

    def accept_above(self, threshold: float) -> Accepted:
        """`accept(threshold)` with what checks say of the accepted."""
        return Accepted(self.accept(threshold), float(threshold), self.checked(threshold))
