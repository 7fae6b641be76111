"""Train, then check the model's predictions from the surest band down and accept what the checks vouch
for; and how much the annotator trusts the prediction colours of the map."""
from __future__ import annotations

import numpy as np

from engine.firstmodel import wilson_interval

from .screen import Screen

CHECK_RUNGS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)   # confidences the annotator checks and accepts at, top down
CHECK_MIN_PURITY = 0.6                    # below this a check labels under ~1.4 images per action: lasso instead
ACCEPT_MIN_CHECKED = 40                   # checked predictions in a band before accepting it unseen...
ACCEPT_MIN_PRECISION = 0.85              # ...and their precision's 95% lower bound (the error budget uses
                                          # the estimate itself)
ERROR_BUDGET = 0.03                       # accept only while expected wrong acceptances stay below 3% of items
MIN_CHECKS = 25                           # reviewed predictions needed before judging the model's colours
MODEL_BELIEF_MIN = 0.50                   # below this agreement the map's prediction colours are ignored


class CheckSteps:
    """Training and checking (a part of `Annotator`, which holds the state they use)."""

    def maybe_train(self) -> None:
        """Train when the first share of items is labeled and after each further share; then go to the
        Predicted view. The model's cross-validated estimate is optimistic early (the labels so far are
        the easy cluster cores), so what counts is how often its predictions match what reviews show."""
        labeled = int(self.labeled_fraction() * len(self.session.rows))
        n = len(self.session.rows)
        if self._trained_at < 0:
            due = labeled >= self.policy.first_train * n
        else:
            due = labeled - self._trained_at >= self.policy.retrain_every * n
        if not due:
            return
        counts = self.session.label_counts()
        if sum(c >= 2 for c in counts.values()) < 2 or min(counts.values()) < 2:
            return
        self._trained_at = labeled
        growth = self.policy.fine_tune_growth
        if growth is not None and labeled >= (1 + growth) * self._fine_tuned_at:
            self._fine_tune(labeled)                      # then Train fits on its layer beside the ImageNet ones
        if len(self.trains) >= 2 and all(t["agreement"] < MODEL_BELIEF_MIN for t in self.trains[-2:]):
            return                                        # twice no good: this model cannot see the task
        report = self.desk.train()
        self.trains.append({"labeled": report.n_labeled, "estimate": round(report.accuracy, 3),
                            "agreement": 1.0, "accepted": [], "model": self.session.latest_model()})
        self.progress(f"{self.policy.name}: trained on {report.n_labeled}: {report.summary()}")
        self.checks, self._mixed, self._anchor_checks = [], set(), {}
        self._checking, self._rung, self._accepted_at = True, 0, np.inf

    def _fine_tune(self, labeled: int) -> None:
        """Fine-tune on the labels so far (one action); its layer becomes the feature view lassos go back to, and
        Train's features from now on."""
        record = self.desk.fine_tune()
        self._fine_tuned_at = labeled
        accuracy = record["metrics"].get("accuracy", 0.0)
        self.fine_tunes.append({"labeled": record["labels"], "validation": round(accuracy, 3),
                                "seconds": round(self.desk.fine_tune_seconds[-1], 1)})
        if self.session.model_layer is not None:
            self._feature_view = self._tuned_view = (self.session.model_layer.name, "UMAP")
            self._atlas = None
        seconds = self.desk.fine_tune_seconds[-1]
        self.progress(f"{self.policy.name}: fine-tuned on {record['labels']} in {seconds:.0f} s: validation accuracy "
                      f"{accuracy:.3f}")

    def check_step(self) -> bool:
        """Check the model's predictions from the surest band down: a random sample of the unlabeled
        images above a confidence, each shown with its predicted label; drop the wrong ones, accept the
        rest. Once a band's checks are precise enough (ACCEPT_MIN_CHECKED, ACCEPT_MIN_PRECISION) and its
        expected errors fit the budget, accept the whole band unseen and go down a rung. False when
        checks stop paying (the band's precision under CHECK_MIN_PURITY) or no band is left."""
        _, probs, has = self.session.row_predictions()
        _, labels = self.session.human_labels()
        free = has & (labels[self.session.rows] < 0)
        unchecked = free & ~np.isin(self.session.rows, list(self.session.checked_items()))
        confidence = probs.max(1)
        while self._rung < len(CHECK_RUNGS):
            threshold = CHECK_RUNGS[self._rung]
            band = unchecked & (confidence >= threshold) & (confidence < self._accepted_at)
            if band.sum() < 12:
                self._rung += 1
                continue
            right, seen = self.session.checked_precision(threshold, self._accepted_at)
            above = int((unchecked & (confidence >= threshold)).sum())
            if seen >= ACCEPT_MIN_CHECKED and self._accept_band(threshold, right, seen, above):
                return True
            if seen >= 20 and right / seen < CHECK_MIN_PURITY:
                return False
            self._check_band(threshold, above)
            return True
        return False

    def _accept_band(self, threshold: float, right: int, seen: int, above: int) -> bool:
        """Accept every unchecked prediction at >= threshold unseen if `right` of `seen` checks give a
        lower bound of ACCEPT_MIN_PRECISION and the `above` images' expected errors fit the budget."""
        low = wilson_interval(right / seen, seen)[0]
        errors = above * (1 - (right + 1) / (seen + 2))
        budget = ERROR_BUDGET * len(self.session.rows)
        if not (low >= ACCEPT_MIN_PRECISION and self._expected_errors + errors <= budget):
            return False
        self._expected_errors += errors
        accepted = self.desk.accept(threshold)
        self._accepted_at = threshold
        self._rung += 1
        self.trains[-1]["accepted"].append({"threshold": threshold, "count": accepted, "checked": f"{right}/{seen}"})
        self.progress(f"{self.policy.name}: accepted {accepted} at >= {threshold} ({right} of {seen} "
                      f"checked right, lower bound {low:.2f}; expected wrong {errors:.0f})")
        return True

    def _check_band(self, threshold: float, above: int) -> None:
        """One check at >= threshold: fix the wrong predictions shown, accept the rest as shown."""
        ids = self.desk.check(threshold)
        truth = self.oracle.look(ids)
        shown = self.session.review.predicted
        wrong = [i for i in ids if truth[i] != shown[i]]
        self.fix(wrong, truth)
        self.desk.accept_shown()
        out = self.checks_by_rung[threshold]
        labeled = len(ids) if self.policy.label_odd else len(ids) - len(wrong)
        out.add(len(ids), len(ids) - len(wrong), labeled, 2 + len(wrong))
        self.progress(f"check >= {threshold}: {len(ids) - len(wrong)}/{len(ids)} right; band "
                      f"{above} images unchecked")
        self.label_rest(out)

    @property
    def model_weight(self) -> float:
        """How much the prediction colours count: by how often they matched what the reviews showed."""
        if not self.trains or len(self.checks) < MIN_CHECKS:
            return 0.5 if self.trains and self.trains[-1]["estimate"] >= 0.7 else 0.0
        return 0.5 if np.mean([ok for _, ok in self.checks]) >= MODEL_BELIEF_MIN else 0.0

    def note_predictions(self, items: list[int], truth: dict[int, str], screen: Screen) -> None:
        """Compare the model's prediction with what the review shows, for unlabeled reviewed items."""
        row = {int(i): k for k, i in enumerate(self.session.rows)}
        for item in items:
            k = row[item]
            if screen.label[k] < 0 and screen.predicted[k] >= 0:
                self.checks.append((screen.confidence[k], screen.names[screen.predicted[k]] == truth[item]))
        if self.trains and self.checks:
            self.trains[-1]["agreement"] = round(float(np.mean([ok for _, ok in self.checks])), 3)
