"""The lasso policies' annotator: its state and main loop. Its steps live beside it, one module per idea:
surveying the map before the first model (`_survey.py`), training and checking the model's predictions
(`_checks.py`), choosing a lasso in a feature view or the Predicted view (`_lassos.py`), and reviewing
what a lasso or find similar brought into the grid (`_review.py`)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from labeler.session import Session

from ._checks import CheckSteps
from ._lassos import LassoSteps
from ._review import ReviewSteps
from ._survey import SurveySteps
from .cost import LEVELS, Desk, Oracle
from .policy import Outcome, Policy


class Annotator(SurveySteps, CheckSteps, LassoSteps, ReviewSteps):
    """Looks at the map, lassos what looks pure, reviews, labels; sees truth only through the oracle."""

    def __init__(self, policy: Policy, session: Session, desk: Desk, oracle: Oracle, goal: float = LEVELS[-1],
                 progress=None):
        self.policy, self.session, self.desk, self.oracle, self.goal = policy, session, desk, oracle, goal
        self.progress = progress or (lambda text: None)
        self._cap = 4 * len(session.rows) + 100         # actions before giving up on the goal
        # what it has learned so far (reported by the runner)
        self.outcomes: dict[tuple[str, str], Outcome] = defaultdict(Outcome)
        self.similar: dict[str, Outcome] = defaultdict(Outcome)
        self.trains: list[dict] = []                   # Train's models, each with what its checks accepted
        self.fine_tunes: list[dict] = []               # the fine-tunes (policy fine_tune_growth)
        self.checks: list[tuple[float, bool]] = []     # (confidence, right) of predictions seen in reviews
        # checking the latest model's predictions (_checks.py)
        self._expected_errors = 0.0
        self._checking = False                          # checking the latest model's predictions
        self._rung = 0                                  # index into CHECK_RUNGS
        self._accepted_at = np.inf                      # everything the model predicts above was accepted
        self.checks_by_rung: dict[float, Outcome] = defaultdict(Outcome)
        self._trained_at = -1                           # labeled items when the model was last trained
        self._fine_tuned_at = 0                         # ... and last fine-tuned
        # the Predicted view (_lassos.py)
        self._feature_view: tuple[str, str] | None = None
        self._explored: tuple[str, str] | None = None   # the purest view explore() found
        self._tuned_view: tuple[str, str] | None = None  # the latest fine-tuned layer's UMAP, where lassos go
        self._anchor_checks: dict[str, tuple[int, int]] = {}   # per label: (right, seen) in lassos at its anchor
        self._review_size = policy.review_size
        # lassos in a feature view (_lassos.py, _review.py) and the survey before the first model (_survey.py)
        self._mixed: set[int] = set()
        self._atlas: tuple | None = None
        self._survey: tuple | None = None              # (view key, k-means centres not lassoed yet)
        self._tried: set[int] = set()                  # regions of the current atlas lassoed already
        self._abandoned = 0                             # lassos in a row left unlabeled (too mixed)

    # -- what is visible -----------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return self.session.layer, self.session.view.name

    def labeled_fraction(self) -> float:
        _, labels = self.session.human_labels()
        return float((labels[self.session.rows] >= 0).mean())

    def _done(self) -> bool:
        return self.labeled_fraction() >= self.goal or self.desk.actions >= self._cap

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        if self.policy.start:
            layer, view = self.policy.start
            self.goto(layer % len(self.session.layers), [v.name for v in self.session.views].index(view))
        if self.policy.explore:
            self.explore()
        since_check = 0
        while not self._done():
            if self.policy.train:
                self.maybe_train()
            if self.policy.survey and not self.trains:
                self.survey_step()
                continue
            if self._checking:
                if self.check_step():
                    continue
                self._checking = False
                if self.policy.predicted and self.session.view.name != "Predicted":
                    self._feature_view = self._tuned_view or self.key   # back to the fine-tuned layer's map
                    self.goto(self.session.layer_index, [v.name for v in self.session.views].index("Predicted"))
            if self.session.view.name == "Predicted":
                if not self.predicted_step():
                    self._leave_predicted()
                    continue
            elif not self.lasso_step():
                if self._explored is None or self.key == self._explored:
                    break
                self._feature_view, self._tuned_view = self._explored, None   # nothing pays in a fine-tuned layer
                self._go_key(self._explored)
                continue
            since_check += 1
            if since_check % 20 == 0:
                self.progress(f"{self.policy.name}: {self.desk.actions} actions, "
                              f"{self.labeled_fraction():.0%} labeled, view {self.key}")

    def goto(self, layer_index: int, view_index: int) -> None:
        """Step (one action each) to a layer and view, the short way round."""
        for count, current, step in ((len(self.session.layers), self.session.layer_index, self.desk.step_layer),
                                     (len(self.session.views), self.session.view_index, self.desk.step_view)):
            target = layer_index if step == self.desk.step_layer else view_index
            forward = (target - current) % count
            for _ in range(min(forward, count - forward)):
                step(1 if forward <= count - forward else -1)

    def _go_key(self, key: tuple[str, str]) -> None:
        layer, view = key
        self.goto(self.session.layers.index(layer), [v.name for v in self.session.views].index(view))
