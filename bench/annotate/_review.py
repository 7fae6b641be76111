"""Reviewing the grid: label its majority, fix or drop the odd ones out, label what stays selected, and grow
a clean review with find similar while that pays."""
from __future__ import annotations

from collections import Counter

from .policy import Outcome
from .screen import Screen


class ReviewSteps:
    """What the annotator does with a review (a part of `Annotator`, which holds the state they use)."""

    def review(self, ids: list[int], screen: Screen, similar: bool = True) -> dict[int, str]:
        """Look at the grid: the most common label among the unlabeled is the one to click; each odd one
        out gets its own label by key first (or, with label_odd off, is dropped); labeled images that
        do not belong are dropped. Returns what the grid showed (item -> true label)."""
        truth = self.oracle.look(ids)
        self.note_predictions(ids, truth, screen)
        shown = dict(zip(self.session.rows.tolist(), screen.label.tolist()))
        free = [i for i in ids if shown[i] < 0]
        out = self.outcomes[self.key]
        if not free:
            out.add(0, 0, 0, 1)
            return truth
        name, gain = Counter(truth[i] for i in free).most_common(1)[0]
        drop = [i for i in ids if truth[i] != name]
        odd = [i for i in drop if shown[i] < 0] if self.policy.label_odd else []
        drop = [i for i in drop if i not in odd]
        if (1 + len(drop) + len(odd)) / (gain + len(odd)) > self.policy.max_cost:
            self._mixed.update(free)                      # too mixed: leave it for a smaller lasso later
            out.add(len(free), gain, 0, 1)
            self._abandoned += 1
            if self._abandoned == 3:
                self._atlas = None
            return truth
        if self._abandoned >= 3 and len(ids) > 3:          # small lassos labeled again: back to groups
            self._atlas = None
        self._abandoned = 0 if len(ids) > 3 else self._abandoned
        for item in odd:
            self.desk.label_item(item, truth[item])
        for item in drop:
            self.desk.drop(item)
        rate = out.labeled / out.actions if out.actions else 0.0
        grown = self.grow(name, gain / len(free), rate, screen) if self.policy.similar and similar else 0
        self.desk.label(name)
        out.add(len(free), gain, gain + len(odd), 2 + len(drop) + len(odd))
        self.outcomes[self.key].labeled += grown
        self.label_rest(out)
        return truth

    def fix(self, wrong: list[int], truth: dict[int, str]) -> None:
        """The odd ones out of a review: each labeled by its key, or dropped (label_odd off)."""
        for item in wrong:
            if self.policy.label_odd:
                self.desk.label_item(item, truth[item])
            else:
                self.desk.drop(item)

    def label_rest(self, out: Outcome) -> None:
        """The images dropped before labeling stay selected: label their own majority while that costs
        no more than one action per image (its drops plus the label click), as one at a time would."""
        while self.session.review.ids:
            rest = list(self.session.review.ids)
            truth = self.oracle.look(rest)
            _, labels = self.session.human_labels()
            free = [i for i in rest if labels[i] < 0]
            if not free:
                return
            name, gain = Counter(truth[i] for i in free).most_common(1)[0]
            drop = [i for i in rest if truth[i] != name]
            if 1 + len(drop) > gain:
                return
            for item in drop:
                self.desk.drop(item)
            self.desk.label(name)
            out.add(len(free), gain, gain, 1 + len(drop))

    def grow(self, name: str, purity: float, lasso_rate: float, screen: Screen) -> int:
        """Find similar while its batches label more per action than lassos do; returns items added."""
        history = self.similar[self.session.layer]
        free = int((self.session.human_labels()[1][self.session.rows] < 0).sum())
        hopeful = history.lassos == 0 and purity >= 0.9 and free >= 500
        if not hopeful and history.labeled <= lasso_rate * history.actions:
            return 0
        added = 0
        while True:
            new = self.desk.find_similar()
            if not new:
                return added
            truth = self.oracle.look(new)
            self.note_predictions(new, truth, screen)
            wrong = [i for i in new if truth[i] != name]
            self.fix(wrong, truth)
            right = len(new) - len(wrong)
            history.add(len(new), right, len(new) if self.policy.label_odd else right, 1 + len(wrong))
            added += right
            if right / (1 + len(wrong)) <= max(lasso_rate, 1.0):
                return added
