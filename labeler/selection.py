"""The selection under review: which images, which were dropped, what is shown on each.

One person's review lives in their `labeler.session.Session`; the review grid (labeler/ui/review.py)
draws it and drops images from it directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    """A random sample of the model's unlabeled predictions at or above a confidence, shown for review."""

    model_id: str
    threshold: float
    pool: int                     # unlabeled images predicted at >= threshold when the sample was drawn
    confidence: dict[int, float]  # item -> the probability of its shown prediction


@dataclass
class Review:
    """The selection under review: ids in order, the ones dropped, similarity where found."""

    ids: list[int] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    similarity: dict[int, float] = field(default_factory=dict)
    predicted: dict[int, str] = field(default_factory=dict)     # a check: the label shown under each image
    check: Check | None = None

    @property
    def kept(self) -> list[int]:
        return [i for i in self.ids if i not in self.dropped]

    def toggle(self, item_id: int) -> bool:
        """Drop an item from the review, or take it back; returns True when it is now dropped."""
        if item_id in self.dropped:
            self.dropped.discard(item_id)
            return False
        self.dropped.add(item_id)
        return True
