"""Choosing the next lasso: in a feature view, the region of the atlas expected to label most per action;
in the Predicted view, the unlabeled images nearest the label anchor whose lassos came out purest."""
from __future__ import annotations

import numpy as np

from engine.projection import class_anchors

from .screen import Region, Screen, atlas, expected_rate, outline, point_spacing, read_screen


class LassoSteps:
    """Lasso steps (a part of `Annotator`, which holds the state they use)."""

    def regions(self, screen: Screen, redraw: bool = False) -> list[Region]:
        """The lassos on offer, redrawn when the map moved, 40% of their items got labeled, or asked."""
        free = int((screen.label < 0).sum())
        key = (self.key, screen.xy.shape, float(screen.xy[:5].sum()))
        if redraw or self._atlas is None or self._atlas[0] != key or free < 0.6 * self._atlas[1]:
            sizes = (1, 3) if self._abandoned >= 3 else (8, 25)     # stuck: single items and pairs
            self._atlas = (key, free, atlas(screen.xy, screen.label, sizes=sizes, seed=self.desk.seed))
            self._tried = set()
        return self._atlas[2]

    def lasso_step(self, colours: bool = True) -> bool:
        """Lasso the region expected to label most per action; review it. False when nothing is left."""
        screen = read_screen(self.session, self.model_weight, use_colours=colours)
        out = self.outcomes[self.key]
        new_purity = out.purity if out.free >= 30 else 0.5
        mixed = np.isin(self.session.rows, list(self._mixed))
        for redraw in (False, True):
            regions = self.regions(screen, redraw)
            scores = np.array([0.0 if k in self._tried else expected_rate(r, screen, new_purity)
                               * (1 - 0.7 * mixed[r.members].mean()) for k, r in enumerate(regions)])
            if len(scores) and scores.max() >= 1 / self.policy.max_cost:
                break
        if not len(scores) or scores.max() <= 0:
            return False
        best = int(scores.argmax())
        self._tried.add(best)
        ids = self.desk.lasso(regions[best].polygon)
        self.review(ids, screen)
        return True

    def predicted_step(self) -> bool:
        """In the Predicted view: lasso the unlabeled images closest to one label's anchor (those the
        model is surest of) and review them. The label is the one whose lasso should label most per
        action, judged by how pure earlier lassos at its anchor came out (a prior of 3 in 4 before any);
        the lasso size follows the purity. False when no anchor pays more than one item per action."""
        screen = read_screen(self.session, use_colours=False)
        free = np.flatnonzero((screen.label < 0) & ~np.isin(self.session.rows, list(self._mixed)))
        classes = self.session.predictions()[0]
        if len(free) < 2:
            return False
        rate, c, group = self._best_anchor(screen, free, classes)
        if rate < 1.0:
            self.progress(f"{self.policy.name}: Predicted view: no label's anchor pays (best {rate:.2f} per action)")
            return False
        polygon = outline(screen.xy, group, screen.label >= 0, point_spacing(screen.xy))
        ids = self.desk.lasso(polygon)
        row = {int(i): k for k, i in enumerate(self.session.rows)}
        free_ids = [i for i in ids if screen.label[row[i]] < 0]
        truth = self.review(ids, screen)
        right = sum(truth[i] == classes[c] for i in free_ids)
        old_right, old_seen = self._anchor_checks.get(classes[c], (0, 0))
        self._anchor_checks[classes[c]] = (old_right + right, old_seen + len(free_ids))
        purity = right / max(1, len(free_ids))
        grow = 1.3 if purity >= 0.93 else 0.7 if purity < 0.8 else 1.0
        self._review_size = int(np.clip(self._review_size * grow, 6, 120))
        return True

    def _best_anchor(self, screen: Screen, free: np.ndarray, classes) -> tuple[float, int, np.ndarray]:
        """(items per action, label index, rows to lasso) for the label anchor whose lasso pays most."""
        anchors = class_anchors(len(classes))               # where the labels' piles sit
        size = min(self._review_size, len(free))
        best = None
        for c, anchor in enumerate(anchors):
            dist = np.linalg.norm(screen.xy[free] - anchor, axis=1)
            near = np.argsort(dist)[:size]
            right, seen = self._anchor_checks.get(classes[c], (0, 0))
            purity = (right + 3) / (seen + 4)
            rate = size * purity / (2 + size * (1 - purity)) - dist[near].mean()   # ties: the closer group
            if best is None or rate > best[0]:
                best = (rate, c, free[near])
        return best

    def _leave_predicted(self) -> None:
        """Nothing pure is left around the anchors: back to lassos in the best feature view until the
        next training moves the map."""
        out = self.outcomes[self.key]
        self.progress(f"{self.policy.name}: leaving the Predicted view after {out.lassos} lassos there "
                      f"(purity {out.purity:.2f}, {out.labeled} labeled for {out.actions} actions)")
        self._go_key(self._feature_view or self.key)
