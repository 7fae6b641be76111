"""A simulated annotator: how many of the app's actions it takes to label a folder, beside two baselines.

The annotator knows the true labels of a folder (folder names, an `image_name,tags` CSV, or head
direction derived from face keypoints) but acts only through the app's own session logic
(labeler/session.py) on a real project: switch layer or view, lasso a polygon of the 2D map, drop
an item from the review grid, label one item of the review by itself (its label's key over it),
click or type a label for the rest, find similar, separate labels, train, check predictions,
accept the shown predictions, accept everything above a confidence. Each of these costs one
action. It sees a true label only for an item in the review grid (`Oracle.look` refuses any
other), as a person sees the images they selected; everything else it decides from what the app
shows: the map, the colours of labels and predictions, what its checks of predictions showed.

Three policies run on the same folder, each in a fresh label store beside the shared feature cache:
  annotator       a few lassos in PCA 1-2 and UMAP of every layer to find the purest view; then lassos
                  of small groups around the centres of a k-means partition of that map, so the first
                  labels cover all of it; trains at 8% labeled and after each further 8%; after each
                  training checks the model's predictions from the surest band down (a random sample
                  above a confidence, the wrong ones labeled by key, the rest accepted as shown) and
                  accepts a whole band unseen once its checks show enough precision within an error
                  budget (check_step); when checks stop paying, lassos next to the label anchors of the
                  Predicted view and then in the best feature view, with find similar when it pays.
  one view        UMAP of the last layer only: lasso, label the odd ones by key (or drop them), label
                  the rest (no layer switching, no find similar, no training).
  one at a time   one action per image.

`--drop-odd` makes both lasso policies drop the odd ones out instead of labeling each by its key
(dropped images stay selected and get their own majority label while that costs no more than one
action per image): the cost model of the platform.ai demo, where every odd one is clicked away.

    .venv/bin/python bench/annotate.py FOLDER [--labels CSV | --faces-direction KEYPOINTS] [--json]
    .venv/bin/python bench/annotate.py ../shared/data/cifar10
    .venv/bin/python bench/annotate.py ../shared/data/faces/images --faces-direction ../shared/data/faces/keypoints.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import Workspace, embed  # noqa: E402
from engine.embedding import DEFAULT_SIZE  # noqa: E402
from engine.firstmodel import wilson_interval  # noqa: E402
from engine.projection import class_anchors  # noqa: E402
from labeler.project import Project  # noqa: E402
from labeler.session import Session  # noqa: E402

LEVELS = (0.5, 0.8, 0.9)
FACES_LOW, FACES_HIGH = 0.40, 0.60        # nose tip position between the jaw ends: left / frontal / right
SURVEY_SIZE = 10                          # images per lasso while surveying the map before the first model
CHECK_RUNGS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)   # confidences the annotator checks and accepts at, top down
CHECK_MIN_PURITY = 0.6                    # below this a check labels under ~1.4 images per action: lasso instead
ACCEPT_MIN_CHECKED = 40                   # checked predictions in a band before accepting it unseen...
ACCEPT_MIN_PRECISION = 0.85              # ...and their precision's 95% lower bound (the error budget uses
                                          # the estimate itself)
ERROR_BUDGET = 0.03                       # accept only while expected wrong acceptances stay below 3% of items
MIN_CHECKS = 25                           # reviewed predictions needed before judging the model's colours
MODEL_BELIEF_MIN = 0.50                   # below this agreement the map's prediction colours are ignored


class PeekError(RuntimeError):
    """The annotator asked for the true label of an item that is not in the review grid."""


# ---- true labels -------------------------------------------------------------------------------

def truth_from_folders(paths: list[str]) -> dict[str, str]:
    """Label = the first folder of each image path (folder-per-class)."""
    flat = [p for p in paths if "/" not in p]
    if flat:
        raise SystemExit(f"{len(flat)} image(s) are not inside a class folder (e.g. {flat[0]!r}); "
                         f"give the labels with --labels CSV.")
    return {p: p.split("/")[0] for p in paths}


def truth_from_csv(csv_path: Path) -> dict[str, str]:
    """`image_name,tags` (the first tag counts when there are several)."""
    with open(csv_path, newline="") as handle:
        return {row["image_name"]: row["tags"].split()[0] for row in csv.DictReader(handle) if row["tags"].strip()}


def faces_direction(keypoints_csv: Path, low: float = FACES_LOW, high: float = FACES_HIGH) -> dict[str, str]:
    """Where the head faces in the image, from 68 keypoints: the nose tip (30) between the jaw ends (0, 16).

    r = (x30 - x0) / (x16 - x0): below `low` the face turns to the image's left, above `high` to its
    right, frontal between. Names listed twice in the CSV get the mean r of their rows.
    """
    ratios = defaultdict(list)
    with open(keypoints_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            x0, x16, x30 = float(row["x0"]), float(row["x16"]), float(row["x30"])
            ratios[row["image_name"]].append((x30 - x0) / (x16 - x0) if x16 != x0 else 0.5)
    return {name: "left" if np.mean(r) < low else "right" if np.mean(r) > high else "frontal"
            for name, r in ratios.items()}


# ---- what a person sees and does ---------------------------------------------------------------

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


# ---- scoring (the runner's side: the policy never sees it) ------------------------------------

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


# ---- the map as the annotator sees it -----------------------------------------------------------

@dataclass
class Screen:
    """One view: positions, visible labels (-1 none), label names, predictions and a belief per item."""

    xy: np.ndarray
    label: np.ndarray
    names: list[str]
    belief: np.ndarray            # (rows, len(names) + 1): last column = "a label not given yet"
    predicted: np.ndarray         # per row: predicted label index (-1: no prediction)
    confidence: np.ndarray        # per row: probability of the predicted label (0: none)


def read_screen(session: Session, model_weight: float = 0.0, use_colours: bool = True) -> Screen:
    """What the map shows: label colours and, paler, the latest model's predictions with their confidence."""
    names, labels = session.human_labels()
    label = labels[session.rows]
    xy = session.coords()
    belief = colour_belief(xy, label, len(names)) if use_colours else np.full((len(xy), len(names) + 1), np.nan)
    predicted, confidence = np.full(len(xy), -1), np.zeros(len(xy))
    found = session.row_predictions()
    if found is not None:
        classes, probs, has = found
        model = np.zeros((len(xy), len(names) + 1))
        for c, name in enumerate(classes):
            model[has, names.index(name)] = probs[has, c]
        predicted[has] = model[has].argmax(1)
        confidence[has] = model[has].max(1)
        if use_colours and model_weight > 0:
            model[~has] = belief[~has]
            belief = (1 - model_weight) * belief + model_weight * model
    return Screen(xy, label, names, belief, predicted, confidence)


def colour_belief(xy: np.ndarray, label: np.ndarray, n_names: int, k: int = 10) -> np.ndarray:
    """Per item, how the labeled neighbours on the map are coloured (distance-weighted), with a flat prior."""
    from sklearn.neighbors import NearestNeighbors
    flat = np.full((len(xy), n_names + 1), 1.0 / (n_names + 1))
    known = np.flatnonzero(label >= 0)
    if not len(known):
        return flat
    spacing = _spacing(xy)
    dist, index = NearestNeighbors(n_neighbors=min(k, len(known))).fit(xy[known]).kneighbors(xy)
    weight = np.exp(-dist / (3 * spacing))
    votes = np.zeros_like(flat)
    np.add.at(votes, (np.repeat(np.arange(len(xy)), index.shape[1]), label[known][index].ravel()), weight.ravel())
    return (votes + flat) / (weight.sum(1, keepdims=True) + 1.0)


def _spacing(xy: np.ndarray) -> float:
    """Typical distance between neighbouring points of a map (median nearest-neighbour distance)."""
    from sklearn.neighbors import NearestNeighbors
    sample = xy[np.random.default_rng(0).permutation(len(xy))[:2000]]
    dist, _ = NearestNeighbors(n_neighbors=2).fit(sample).kneighbors(sample)
    return float(np.median(dist[:, 1])) or 1e-6


@dataclass
class Region:
    polygon: np.ndarray
    members: np.ndarray           # row indices inside the polygon (fixed for a fixed map)
    density: float


def atlas(xy: np.ndarray, label: np.ndarray, sizes=(8, 25), seeds: int = 150, seed: int = 0) -> list[Region]:
    """Lassos a person might draw: outlines around groups of nearby unlabeled points (a point and its
    nearest unlabeled neighbours on the map), at several sizes, around points spread over the map."""
    from matplotlib.path import Path as Polygon
    from scipy.spatial import cKDTree
    free = np.flatnonzero(label < 0)
    if not len(free):
        return []
    spacing = _spacing(xy)
    tree = cKDTree(xy[free])
    centres = np.random.default_rng(seed).permutation(len(free))[:seeds]
    regions = []
    for size in sizes:
        _, near = tree.query(xy[free[centres]], k=min(size, len(free)))
        for group in near.reshape(len(centres), -1):
            polygon = outline(xy, free[group], label >= 0, spacing)
            members = np.flatnonzero(Polygon(polygon).contains_points(xy))
            if len(members):
                regions.append(Region(polygon, members, len(members) / max(_area(polygon), spacing ** 2)))
    return regions


def outline(xy: np.ndarray, group: np.ndarray, labeled: np.ndarray, spacing: float, bins: int = 24) -> np.ndarray:
    """A lasso around a group of points that tucks in to leave labeled points out: a star-shaped polygon
    whose radius in each direction reaches the group's farthest point there (its outermost 10% left out)
    but stops short of the nearest labeled point."""
    centre = xy[group].mean(0)
    offset = xy - centre
    dist = np.hypot(offset[:, 0], offset[:, 1])
    sector = ((np.arctan2(offset[:, 1], offset[:, 0]) + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    core = group[dist[group] <= np.quantile(dist[group], 0.9)] if len(group) >= 8 else group
    reach = np.zeros(bins)
    np.maximum.at(reach, sector[core], dist[core])
    reach = np.maximum.reduce([np.roll(reach, -1), reach, np.roll(reach, 1)]) + spacing / 2
    stop = np.full(bins, np.inf)
    np.minimum.at(stop, sector[labeled], dist[labeled])
    radius = np.maximum(np.minimum(reach, stop - spacing / 4), spacing / 4)
    angles = (np.arange(bins) + 0.5) / bins * 2 * np.pi - np.pi
    return centre + radius[:, None] * np.column_stack([np.cos(angles), np.sin(angles)])


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def expected_rate(region: Region, screen: Screen, new_purity: float) -> float:
    """Items this lasso should label per action (lasso + label + drops), judged from the map's colours."""
    label = screen.label[region.members]
    free = region.members[label < 0]
    if not len(free):
        return 0.0
    if np.isnan(screen.belief).any():                     # no colours to go by: the densest group first
        return new_purity * len(free) / (2 + (1 - new_purity) * len(free)) * region.density ** 0.25
    right = screen.belief[free].sum(0)
    right[-1] *= new_purity                               # "not labeled yet" may be several labels
    shown = np.bincount(label[label >= 0], minlength=len(screen.names) + 1)
    drops = len(free) - right + (shown.sum() - shown)
    return float((right / (2 + drops)).max())


# ---- the policies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    name: str
    explore: bool = True          # try PCA 1-2 and UMAP of every layer, keep the purest
    similar: bool = True          # grow a clean review with find similar when that pays
    train: bool = True            # train at first_train, then each retrain_every; check and accept (check_step)
    start: tuple[int, str] | None = None    # (layer index, view name) to go to first
    # label a review only if (label + drops) / items labeled <= this; leaving mixed lassos unlabeled
    # stalled cifar10 at 81% (4,679 actions), while labeling every majority reached 90% in 3,923
    max_cost: float = float("inf")
    explore_lassos: int = 2
    first_train: float = 0.08     # train once this share of the items is labeled...
    retrain_every: float = 0.08   # ...and again after each further share
    predicted: bool = True        # after training, lasso around the label anchors of the Predicted view
    survey: bool = True           # before the first model, lasso small groups spread over the whole map
    # the odd ones out of a review: each labeled by itself (one key each), or dropped (one click each;
    # they stay selected and are labeled by their own majority while that costs no more than one at a time)
    label_odd: bool = True
    review_size: int = 40         # images lassoed there at first (grows while reviews stay pure)


ANNOTATOR = Policy("annotator")
ONE_VIEW = Policy("one view", explore=False, similar=False, train=False, predicted=False, survey=False,
                  start=(-1, "UMAP"))


@dataclass
class Outcome:
    """Lassos in one view: how pure the reviews were, what they labeled and what they cost."""

    lassos: int = 0
    free: int = 0
    majority: int = 0
    labeled: int = 0
    actions: int = 0

    def add(self, free: int, majority: int, labeled: int, actions: int) -> None:
        self.lassos += 1
        self.free, self.majority, self.labeled, self.actions = (self.free + free, self.majority + majority,
                                                                self.labeled + labeled, self.actions + actions)

    @property
    def purity(self) -> float:
        return self.majority / max(1, self.free)

    def to_json(self) -> dict:
        return {"lassos": self.lassos, "purity": round(self.purity, 3), "labeled": self.labeled,
                "actions": self.actions}


class Annotator:
    """Looks at the map, lassos what looks pure, reviews, labels; sees truth only through the oracle."""

    def __init__(self, policy: Policy, session: Session, desk: Desk, oracle: Oracle, goal: float = LEVELS[-1],
                 progress=None):
        self.policy, self.session, self.desk, self.oracle, self.goal = policy, session, desk, oracle, goal
        self.progress = progress or (lambda text: None)
        self.outcomes: dict[tuple[str, str], Outcome] = defaultdict(Outcome)
        self.similar: dict[str, Outcome] = defaultdict(Outcome)
        self.trains: list[dict] = []
        self.checks: list[tuple[float, bool]] = []     # (confidence, right) of predictions seen in reviews
        self._expected_errors = 0.0
        self._checking = False                          # checking the latest model's predictions
        self._rung = 0                                  # index into CHECK_RUNGS
        self._accepted_at = np.inf                      # everything the model predicts above was accepted
        self.checks_by_rung: dict[float, Outcome] = defaultdict(Outcome)
        self._trained_at = -1                           # labeled items when the model was last trained
        self._feature_view: tuple[str, str] | None = None
        self._anchor_checks: dict[str, tuple[int, int]] = {}   # per label: (right, seen) in lassos at its anchor
        self._review_size = policy.review_size
        self._mixed: set[int] = set()
        self._atlas: tuple | None = None
        self._survey: tuple | None = None              # (view key, k-means centres not lassoed yet)
        self._tried: set[int] = set()                  # regions of the current atlas lassoed already
        self._abandoned = 0                             # lassos in a row left unlabeled (too mixed)
        self._cap = 4 * len(session.rows) + 100

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
                    self._feature_view = self.key
                    self.goto(self.session.layer_index, [v.name for v in self.session.views].index("Predicted"))
            if self.session.view.name == "Predicted":
                if not self.predicted_step():
                    self._leave_predicted()
                    continue
            elif not self.lasso_step():
                break
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

    def explore(self) -> None:
        """A few lassos in PCA 1-2 and UMAP of every layer (a snake through them); go to the purest."""
        n = len(self.session.layers)
        order = [(self.session.layer_index + k) % n for k in range(n)]
        for k, layer in enumerate(order):
            views = (0, 1) if k % 2 == 0 else (1, 0)
            for view in views:
                self.goto(layer, view)
                for _ in range(self.policy.explore_lassos):
                    if self._done() or not (self.survey_step() if self.policy.survey else
                                            self.lasso_step(colours=False)):
                        break
        tried = {key: out for key, out in self.outcomes.items() if out.lassos}
        best = max(tried, key=lambda key: tried[key].purity)
        self.progress("explored: " + ", ".join(f"{k[0]}/{k[1]} {o.purity:.2f}" for k, o in tried.items())
                      + f"; best {best}")
        self._go_key(best)

    def survey_step(self) -> bool:
        """Lasso the unlabeled images nearest the next centre of a k-means partition of the map, so
        that the labels a first model learns from cover the whole map. A model trained on the purest
        cluster cores only predicts the rest poorly: on cifar10, 438 such labels predict the rest at
        0.55, while 440 from 44 k-means cells predict it at 0.69, as well as 440 random ones."""
        screen = read_screen(self.session, use_colours=False)
        free = np.flatnonzero(screen.label < 0)
        if not len(free):
            return False
        if self._survey is None or self._survey[0] != self.key or not self._survey[1]:
            from sklearn.cluster import KMeans
            k = int(np.clip(self.policy.first_train * len(screen.label) / SURVEY_SIZE, 1, len(free)))
            centres = KMeans(k, n_init=1, random_state=len(free) + 7919 * self.desk.seed
                             ).fit(screen.xy[free]).cluster_centers_
            self._survey = (self.key, list(centres))
        centre = self._survey[1].pop()
        near = free[np.argsort(np.linalg.norm(screen.xy[free] - centre, axis=1))[:SURVEY_SIZE]]
        ids = self.desk.lasso(outline(screen.xy, near, screen.label >= 0, _spacing(screen.xy)))
        self.review(ids, screen, similar=False)
        return True

    def _go_key(self, key: tuple[str, str]) -> None:
        layer, view = key
        self.goto(self.session.layers.index(layer), [v.name for v in self.session.views].index(view))

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
        counts = self.session.store.counts()
        if sum(c >= 2 for c in counts.values()) < 2 or min(counts.values()) < 2:
            return
        self._trained_at = labeled
        if len(self.trains) >= 2 and all(t["agreement"] < MODEL_BELIEF_MIN for t in self.trains[-2:]):
            return                                        # twice no good: this model cannot see the task
        report = self.desk.train()
        self.checks, self._mixed, self._anchor_checks = [], set(), {}
        self._checking, self._rung, self._accepted_at = True, 0, np.inf
        self.trains.append({"labeled": report.n_labeled, "estimate": round(report.accuracy, 3), "agreement": 1.0,
                            "accepted": []})
        self.progress(f"{self.policy.name}: trained on {report.n_labeled}: {report.summary()}")

    def check_step(self) -> bool:
        """Check the model's predictions from the surest band down: a random sample of the unlabeled
        images above a confidence, each shown with its predicted label; drop the wrong ones, accept the
        rest. Once a band's checks are precise enough (ACCEPT_MIN_CHECKED, ACCEPT_MIN_PRECISION) and its
        expected errors fit the budget, accept the whole band unseen and go down a rung. False when
        checks stop paying (the band's precision under CHECK_MIN_PURITY) or no band is left."""
        classes, probs, has = self.session.row_predictions()
        _, labels = self.session.human_labels()
        free = has & (labels[self.session.rows] < 0)
        unchecked = free & ~np.isin(self.session.rows, list(self.session.checked_items()))
        confidence = probs.max(1)
        n = len(self.session.rows)
        while self._rung < len(CHECK_RUNGS):
            threshold = CHECK_RUNGS[self._rung]
            band = unchecked & (confidence >= threshold) & (confidence < self._accepted_at)
            if band.sum() < 12:
                self._rung += 1
                continue
            right, seen = self.session.checked_precision(threshold, self._accepted_at)
            if seen >= ACCEPT_MIN_CHECKED:
                low = wilson_interval(right / seen, seen)[0]
                errors = int((unchecked & (confidence >= threshold)).sum()) * (1 - (right + 1) / (seen + 2))
                if low >= ACCEPT_MIN_PRECISION and self._expected_errors + errors <= ERROR_BUDGET * n:
                    self._expected_errors += errors
                    accepted = self.desk.accept(threshold)
                    self._accepted_at = threshold
                    self._rung += 1
                    self.trains[-1]["accepted"].append({"threshold": threshold, "count": accepted,
                                                        "checked": f"{right}/{seen}"})
                    self.progress(f"{self.policy.name}: accepted {accepted} at >= {threshold} ({right} of {seen} "
                                  f"checked right, lower bound {low:.2f}; expected wrong {errors:.0f})")
                    return True
            if seen >= 20 and right / seen < CHECK_MIN_PURITY:
                return False
            break
        else:
            return False
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
                      f"{int(((confidence >= threshold) & unchecked).sum())} images unchecked")
        self.label_rest(out)
        return True

    def _leave_predicted(self) -> None:
        """Nothing pure is left around the anchors: back to lassos in the best feature view until the
        next training moves the map."""
        out = self.outcomes[self.key]
        self.progress(f"{self.policy.name}: leaving the Predicted view after {out.lassos} lassos there "
                      f"(purity {out.purity:.2f}, {out.labeled} labeled for {out.actions} actions)")
        self._go_key(self._feature_view or self.key)

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
        rate, c, group = best
        if rate < 1.0:
            self.progress(f"{self.policy.name}: Predicted view: no label's anchor pays (best {rate:.2f} per action)")
            return False
        polygon = outline(screen.xy, group, screen.label >= 0, _spacing(screen.xy))
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

    # -- one lasso ---------------------------------------------------------------------------------
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


# ---- running the three policies ------------------------------------------------------------------

def prepare(folder: Path, workspace: Path, backbone: str, size: int, **embed_args) -> Workspace:
    """The shared workspace: items and features of every layer (embedded once, then reused)."""
    base = Workspace(folder, workspace)
    result = embed(base, backbone=backbone, size=size, **embed_args)
    if result.skipped:
        print(f"{len(result.skipped)} unreadable image(s) left out", file=sys.stderr)
    base.cache_dir("projections")
    return base


def fresh_project(base: Workspace, name: str) -> Project:
    """An empty label store for one policy, beside the shared features and projection cache."""
    root = base.root / "runs" / name.replace(" ", "-")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "features").symlink_to(base.root / "features", target_is_directory=True)
    (root / "projections").symlink_to(base.root / "projections", target_is_directory=True)
    source, target = sqlite3.connect(base.db_path), sqlite3.connect(root / base.db_path.name)
    with target:
        source.backup(target)
        for table in ("assignments", "predictions", "events", "exclusions", "label_defs", "checks", "decisions"):
            if target.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                target.execute(f"DELETE FROM {table}")
    source.close()
    target.close()
    return Project(base.folder, root, actor=name)


def run_policy(name: str, base: Workspace, truth_by_path: dict[str, str], *, backbone: str, size: int,
               max_cost: float | None = None, drop_odd: bool = False, seed: int = 0,
               goal: float = LEVELS[-1], progress=None) -> dict:
    """One policy from an empty store to `goal` labeled; the judge notes each level's actions and accuracy."""
    progress = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    with fresh_project(base, name) as project:
        session = Session(project, backbone=backbone, size=size)
        paths = {item.id: item.path for item in project.items}
        unknown = [paths[int(i)] for i in session.rows if paths[int(i)] not in truth_by_path]
        if unknown:
            raise SystemExit(f"{len(unknown)} image(s) have no true label, e.g. {unknown[:3]}")
        truth = {int(i): truth_by_path[paths[int(i)]] for i in session.rows}
        judge = Judge(truth, session)
        desk = judge.desk = Desk(session, judge, seed)
        oracle = Oracle(truth, session)
        extra = {}
        if name == "one at a time":
            order = np.random.default_rng(seed).permutation(session.rows)
            for item in order[:int(np.ceil(goal * len(order)))]:
                desk.label_one(int(item), oracle)
        else:
            policy = ANNOTATOR if name == "annotator" else ONE_VIEW
            if max_cost is not None:
                policy = replace(policy, max_cost=max_cost)
            if drop_odd:
                policy = replace(policy, label_odd=False)
            annotator = Annotator(policy, session, desk, oracle, goal, progress)
            annotator.run()
            extra = {"views": {f"{k[0]} / {k[1]}": o.to_json() for k, o in annotator.outcomes.items() if o.lassos},
                     "find_similar": {k: o.to_json() for k, o in annotator.similar.items() if o.lassos},
                     "checks": {f">= {t}": o.to_json() for t, o in annotator.checks_by_rung.items()},
                     "trains": annotator.trains}
        if not oracle.looked <= desk.shown:
            raise PeekError("the oracle showed items that were never in the review grid")
        progress(f"{name}: {desk.actions} actions, {judge.labeled_fraction:.1%} labeled, "
                 f"{time.perf_counter() - started:.0f} s")
        return {"policy": name, "items": len(session.rows), "actions": desk.actions,
                "actions_by_kind": dict(desk.by_kind), "looked_at": len(oracle.looked),
                "milestones": [judge.milestones.get(level, {"level": level, "actions": None, "labeled": None,
                                                            "accuracy": None}) for level in LEVELS],
                "seconds": round(time.perf_counter() - started, 1), **extra}


def useful_layers(result: dict) -> list[dict]:
    """Per layer: items labeled there by lassos and find similar, and the purity of its lassos."""
    per_layer = defaultdict(lambda: {"labeled": 0, "free": 0, "majority": 0})
    for key, out in result.get("views", {}).items():
        layer = key.split(" / ")[0]
        per_layer[layer]["labeled"] += out["labeled"]
    for layer, out in result.get("find_similar", {}).items():
        per_layer[layer]["labeled"] += out["labeled"]
    return sorted(({"layer": k, **v} for k, v in per_layer.items()), key=lambda row: -row["labeled"])


def benchmark(folder: Path, truth_by_path: dict[str, str], workspace: Path, *, backbone: str = "mobilenet_v2",
              size: int = DEFAULT_SIZE, policies=("annotator", "one view", "one at a time"), progress=None,
              max_cost: float | None = None, drop_odd: bool = False, seed: int = 0, **embed_args) -> dict:
    base = prepare(folder, workspace, backbone, size, **embed_args)
    results = {name: run_policy(name, base, truth_by_path, backbone=backbone, size=size, progress=progress,
                                max_cost=max_cost, drop_odd=drop_odd, seed=seed)
               for name in policies}
    ratios = {}
    for name, result in results.items():
        for other in ("one view", "one at a time"):
            if other in results and other != name:
                ratios.setdefault(name, {})[f"vs {other}"] = [
                    _ratio(b["actions"], a["actions"]) for a, b in zip(result["milestones"], results[other]["milestones"])]
    classes = Counter(truth_by_path[p] for p in truth_by_path)
    return {"folder": str(folder), "backbone": backbone, "size": size, "seed": seed, "levels": list(LEVELS),
            "classes": dict(sorted(classes.items())), "results": results, "ratios": ratios,
            "useful_layers": useful_layers(results.get("annotator", {}))}


def _ratio(baseline, ours):
    return None if not baseline or not ours else round(baseline / ours, 2)


def table(report: dict) -> str:
    levels = report["levels"]
    head = ["policy"] + [f"actions to {lv:.0%}" for lv in levels] + [f"accuracy at {lv:.0%}" for lv in levels]
    head += [f"{lv:.0%}: x fewer than {other}" for other in ("one view", "one at a time") for lv in levels[-1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, result in report["results"].items():
        stones = result["milestones"]
        cells = [name] + [f"{m['actions']:,}" if m["actions"] is not None else "-" for m in stones]
        cells += [f"{m['accuracy']:.3f}" if m["accuracy"] is not None else "-" for m in stones]
        for other in ("one view", "one at a time"):
            ratio = report["ratios"].get(name, {}).get(f"vs {other}", [None])[-1]
            cells.append(f"{ratio:.2f}x" if ratio else "")
        lines.append("| " + " | ".join(cells) + " |")
    layers = ", ".join(f"{row['layer']} ({row['labeled']})" for row in report["useful_layers"])
    views = report["results"].get("annotator", {}).get("views", {})
    purity = ", ".join(f"{k} {v['purity']:.2f}" for k, v in sorted(views.items(), key=lambda kv: -kv[1]["purity"]))
    classes = ", ".join(f"{k} {v}" for k, v in report["classes"].items())
    annotator = report["results"].get("annotator", {})
    checks = ", ".join(f"{k}: {v['labeled']} labeled in {v['lassos']} checks, {v['purity']:.2f} predicted right, "
                       f"{v['actions']} actions" for k, v in annotator.get("checks", {}).items())
    accepted = [a for t in annotator.get("trains", []) for a in t["accepted"]]
    accepts = ", ".join(f"{a['count']} at >= {a['threshold']} ({a['checked']} checked right)" for a in accepted)
    return "\n".join([f"{report['folder']}: {sum(report['classes'].values())} images ({classes})", "", *lines, "",
                      f"Items labeled per layer by the annotator's lassos and find similar: {layers}",
                      f"Purity of the annotator's lassos per view: {purity}",
                      f"The annotator's checks of predictions, by threshold: {checks or 'none'}",
                      f"Accepted unseen: {accepts or 'none'}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--labels", type=Path, metavar="CSV", help="true labels as image_name,tags (default: folder names)")
    source.add_argument("--faces-direction", type=Path, metavar="KEYPOINTS",
                        help=f"true labels: head direction from a 68-point keypoints CSV (nose tip 30 vs jaw ends 0 "
                             f"and 16: left below {FACES_LOW}, right above {FACES_HIGH})")
    parser.add_argument("--workspace", type=Path, help="where features and the policies' label stores go "
                                                       "(default: a folder under the system's temp dir)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--policies", default="annotator,one view,one at a time",
                        help="which policies to run, comma-separated (default: all three)")
    parser.add_argument("--max-cost", type=float, default=None,
                        help="label a lasso's majority only while (label + drops) / labeled <= this "
                             "(default inf: never leave a lasso unlabeled; 2 was the earlier rule)")
    parser.add_argument("--drop-odd", action="store_true",
                        help="drop the odd ones out of a review (one click each) instead of labeling each by itself "
                             "with its label's key")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the lassos' centres, the checks' samples and the one-at-a-time order")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    paths = [item.path for item in Workspace(folder, args.workspace or _default_workspace(folder)).sync_items()]
    if args.labels:
        truth = truth_from_csv(args.labels)
    elif args.faces_direction:
        truth = faces_direction(args.faces_direction)
    else:
        truth = truth_from_folders(paths)
    truth = {p: truth[p] for p in paths if p in truth}
    report = benchmark(folder, truth, args.workspace or _default_workspace(folder), backbone=args.backbone,
                       size=args.size, policies=[name.strip() for name in args.policies.split(",")],
                       max_cost=args.max_cost, drop_odd=args.drop_odd, seed=args.seed)
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


def _default_workspace(folder: Path) -> Path:
    return Path(tempfile.gettempdir()) / "labeler-annotate" / folder.as_posix().strip("/").replace("/", "_")


if __name__ == "__main__":
    sys.exit(main())
