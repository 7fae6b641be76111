"""One person's working state on a project, without any widget: testable without a browser.

The app (labeler/app.py) wires widgets to these methods. State here is per session (per
browser tab); everything that must survive (labels, predictions) goes to the shared label
store at once, so two tabs on one project never overwrite each other.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from engine.backbones import get_backbone_cfg
from engine.features import FeatureCache
from engine.pooling import DEFAULT_POOLING
from labeler.errors import LabelerError

logger = logging.getLogger(__name__)

UNLABELED_COLOUR = "#9a9a9a"


@dataclass(frozen=True)
class View:
    """A way to project a layer: shown by name, made by an engine projector."""

    name: str
    method: str
    params: tuple = ()
    labels: tuple[str, ...] = ()           # for views fitted to separate these labels

    @property
    def supervised(self) -> bool:
        return bool(self.labels)

    @property
    def follows_labels(self) -> bool:
        """Positions move when labels (or the model's predictions) change: redraw after labeling."""
        return self.supervised or self.method == "predicted"


BASE_VIEWS = (
    View("PCA 1-2", "pca", (("components", (0, 1)),)),
    View("UMAP", "umap"),
    View("PCA 3-4", "pca", (("components", (2, 3)),)),
)
# Offered once a model has predicted: each label owns a point on a circle, unlabeled images sit
# between the labels by the predicted probabilities, labeled ones just outside (engine class_layout).
PREDICTED_VIEW = View("Predicted", "predicted")
# images in one check of predictions (8 rows of the review grid): on cifar10 the simulated annotator
# (bench/annotate.py) needed 712 actions for 90% with checks of 96, 816 with checks of 48
CHECK_SIZE = 96


@dataclass
class Review:
    """The selection under review: ids in order, the ones dropped, similarity where found."""

    ids: list[int] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    similarity: dict[int, float] = field(default_factory=dict)
    predicted: dict[int, str] = field(default_factory=dict)     # a check: the label shown under each image
    check: "Check | None" = None

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


@dataclass
class Check:
    """A random sample of the model's unlabeled predictions at or above a confidence, shown for review."""

    model_id: str
    threshold: float
    pool: int                     # unlabeled images predicted at >= threshold when the sample was drawn
    confidence: dict[int, float]  # item -> the probability of its shown prediction


class Session:
    """Layer and view navigation, selection and review, labeling, find-similar, separate, train."""

    def __init__(self, project, *, backbone: str = "mobilenet_v2", size: int = 160,
                 pooling: str = DEFAULT_POOLING):
        self.project, self.store = project, project.store
        self.cfg = get_backbone_cfg(backbone)
        self.pooling = pooling
        self._cache_args = (project.workspace.features_dir(backbone, size), backbone, size)
        self.layers = list(self.cfg.layers)
        self.layer_index = max(0, len(self.layers) - 2)   # a middle layer: pose and parts, not only class
        self.views: list[View] = list(BASE_VIEWS)
        self.view_index = 0
        self.review = Review()
        self.model = None
        self._coords: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self.refresh_rows()
        if self.latest_model() is not None:
            self.views.append(PREDICTED_VIEW)

    # -- what is on the map -----------------------------------------------------------------
    def refresh_rows(self) -> None:
        """Items drawn: with features, present on disk, not excluded (features may still be arriving)."""
        folder, backbone, size = self._cache_args
        self.cache = FeatureCache(folder, backbone=backbone, size=size)
        self.project.refresh_items()
        n = len(self.project.items)
        ok = self.cache.done_mask(n) & ~np.array([it.missing for it in self.project.items], dtype=bool)
        excluded = np.fromiter(self.store.excluded(), dtype=np.int64)
        ok[excluded[excluded < n]] = False
        self.rows = np.flatnonzero(ok)

    @property
    def layer(self) -> str:
        return self.layers[self.layer_index]

    @property
    def layer_title(self) -> str:
        return self.cfg.layer_titles[self.layer_index] if self.cfg.layer_titles else ""

    @property
    def view(self) -> View:
        return self.views[self.view_index]

    def step_layer(self, step: int) -> str:
        self.layer_index = (self.layer_index + step) % len(self.layers)
        return self.layer

    def step_view(self, step: int) -> str:
        self.view_index = (self.view_index + step) % len(self.views)
        return self.view.name

    def features(self, layer: str | None = None) -> np.ndarray:
        return self.cache.load(layer or self.layer, self.pooling)

    def coords(self, layer: str | None = None, view: View | None = None) -> np.ndarray:
        """(len(rows), 2) positions of the drawn items in a layer's view (cached on disk)."""
        from engine.projection import cached_projection
        layer, view = layer or self.layer, view or self.view
        if view.method == "predicted":
            return self._predicted_coords(layer)
        y = self._label_vector(view.labels) if view.supervised else None
        key = (layer, view, len(self.rows), self.cache.version, None if y is None else y.tobytes())
        with self._lock:
            if key not in self._coords:
                features = self.features(layer)[self.rows]
                self._coords[key] = cached_projection(
                    features, view.method, dict(view.params), y=y,
                    cache_dir=self.project.workspace.cache_dir("projections"),
                    key=f"{self.cfg.name}-{self.cache.size}/{layer}/{self.pooling}/v{self.cache.version}/n{len(self.rows)}")
            return self._coords[key]

    def _predicted_coords(self, layer: str) -> np.ndarray:
        """The Predicted view: labels on a circle, each unlabeled image between them by the latest
        model's probabilities, spread locally by the layer's PCA 1-2; labeled ones outside the circle."""
        from engine.projection import ProjectionError, class_layout
        found = self.row_predictions()
        if found is None:
            raise ProjectionError("The Predicted view needs a trained model: press Train first.")
        classes, probs_by_row, has = found
        probs_by_row[~has] = 1.0 / len(classes)               # not predicted yet (newer images): the centre
        names, labels = self.human_labels()
        index = {name: k for k, name in enumerate(classes)}
        # label index -> class index of the model (-1: a label it never saw); the final -1 maps "unlabeled"
        to_class = np.array([index.get(name, -1) for name in names] + [-1], dtype=np.int64)
        labeled = to_class[labels[self.rows]]
        return class_layout(probs_by_row, self.coords(layer, BASE_VIEWS[0]), labeled)

    def is_ready(self, layer: str | None = None, view: View | None = None) -> bool:
        layer, view = layer or self.layer, view or self.view
        if view.method == "predicted":
            return self.is_ready(layer, BASE_VIEWS[0])
        y = self._label_vector(view.labels) if view.supervised else None
        return (layer, view, len(self.rows), self.cache.version, None if y is None else y.tobytes()) in self._coords

    # -- labels --------------------------------------------------------------------------
    def label_names(self) -> list[str]:
        return [label.name for label in self.store.label_defs()]

    def human_labels(self) -> tuple[list[str], np.ndarray]:
        """Label names and a vector over all items (-1 unlabeled); multi-label shows the first label."""
        names, matrix = self.store.label_matrix(len(self.project.items))
        if matrix.ndim == 2:
            first = np.where(matrix.any(1), matrix.argmax(1), -1)
            return names, first
        return names, matrix

    def _label_vector(self, labels: tuple[str, ...]) -> np.ndarray:
        """Over drawn rows: index into `labels`, or -1 for items without one of them."""
        names, vector = self.human_labels()
        wanted = {names.index(name): i for i, name in enumerate(labels) if name in names}
        return np.array([wanted.get(v, -1) for v in vector[self.rows]], dtype=np.int64)

    # -- selection and review ------------------------------------------------------------
    def select(self, ids) -> Review:
        self.review = Review(ids=[int(i) for i in ids])
        return self.review

    def label_review(self, name: str) -> int:
        """Label every kept item of the review with `name` (one undoable action); returns how many.

        The items dropped from the review stay in it, as the next selection: the odd ones out of
        one label are often a group of their own, labeled with the next click.
        """
        kept = self.review.kept
        if not kept:
            return 0
        self.store.assign(kept, name.strip(), source="human")
        self.review = Review(ids=[i for i in self.review.ids if i in self.review.dropped])
        return len(kept)

    def label_item(self, item_id: int, name: str) -> int:
        """Label one image of the review by itself (its label's key pressed over it in the grid): it leaves
        the review, so the next label click names the rest. In a check, it counts as a wrong prediction
        unless it is the predicted label."""
        item_id, review = int(item_id), self.review
        if item_id not in review.ids:
            raise LabelerError(f"Image {item_id} is not in the review; select it first.")
        self.store.assign([item_id], name.strip(), source="human")
        check = review.check
        if check is not None and item_id in check.confidence:
            self.store.record_checks(check.model_id, [(item_id, check.threshold, check.confidence.pop(item_id),
                                                       review.predicted.get(item_id) == name.strip())])
        review.ids.remove(item_id)
        review.dropped.discard(item_id)
        review.predicted.pop(item_id, None)
        review.similarity.pop(item_id, None)
        return 1

    def find_similar(self, k: int = 50) -> Review:
        """Add the k items most similar to the kept selection (over all drawn items) to the review."""
        from engine.neighbors import find_similar
        seeds = self.review.kept
        if not seeds:
            return self.review
        exclude = np.ones(len(self.project.items), dtype=bool)
        exclude[self.rows] = False
        names, labels = self.human_labels()
        exclude |= labels >= 0                     # already labeled items are not news
        found, scores = find_similar(self.features(), seeds, k=k, exclude=exclude)
        for item, score in zip(found.tolist(), scores.tolist()):
            if item not in self.review.similarity and item not in self.review.ids:
                self.review.ids.append(item)
                self.review.similarity[item] = float(score)
        return self.review

    def separate(self, labels: list[str], method: str = "lda") -> View:
        """Switch to a view of the current layer fitted to pull `labels` apart."""
        view = View(f"Separate {', '.join(labels)}", method, (), tuple(labels))
        self.views = [v for v in self.views if not v.supervised] + [view]
        self.view_index = len(self.views) - 1
        return view

    # -- training ------------------------------------------------------------------------
    def train(self):
        """Fit the first model on cached features of every layer for the human labels; store predictions
        for every drawn item."""
        from engine.firstmodel import ColumnBlocks, fit_first_model
        names, labels = self.human_labels()
        # every layer, in the session's pooling: the grid keeps layout (which way a head turns),
        # which a global average cannot see
        features = ColumnBlocks(self.cache.load(layer, self.pooling) for layer in self.layers)
        model = fit_first_model(features, labels, names)
        step = 4096                                   # rows at a time: all layers of 100k images stay on disk
        probs = np.concatenate([model.predict_proba(features[self.rows[start:start + step]])
                                for start in range(0, len(self.rows), step)]) if len(self.rows) else \
            np.zeros((0, len(names)), dtype=np.float32)
        model_id = f"first-{self.store.version}"
        self.store.set_predictions(model_id, self.rows.tolist(), names, probs)
        self.model = model
        if PREDICTED_VIEW not in self.views:
            self.views.append(PREDICTED_VIEW)
        return model.report

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

    def check_predictions(self, threshold: float, n: int = CHECK_SIZE, seed: int | None = None) -> Review:
        """Select a random sample of up to `n` unlabeled images that the latest model predicts at
        `threshold` or above, grouped by the predicted label, which the review shows under each image.

        The person drops the wrong ones and accepts the rest (accept_review): being random over every
        image above the threshold, what they keep is a fair estimate of the precision that "Accept"
        at that threshold would have, unlike a look at the model's surest images."""
        found = self.row_predictions()
        if found is None:
            raise LabelerError("Checking predictions needs a trained model: press Train first.")
        model_id = self.latest_model()
        classes, probs, has = found
        _, labels = self.human_labels()
        confidence, predicted = probs.max(1), probs.argmax(1)
        seen = np.isin(self.rows, list(self.checked_items(model_id=model_id)))     # each image is checked once per model
        pool = np.flatnonzero(has & (labels[self.rows] < 0) & (confidence >= threshold) & ~seen)
        if not len(pool):
            raise LabelerError(f"No unchecked, unlabeled image is predicted at {threshold:g} or above; lower "
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
            raise LabelerError("Accept shown needs a check of predictions in the review: press Check first.")
        kept = [i for i in review.kept if i in review.predicted]
        if kept:
            self.store.assign_many({i: review.predicted[i] for i in kept}, source="human")
        if review.check is not None:
            check = review.check
            self.store.record_checks(check.model_id, [(i, check.threshold, check.confidence[i], i not in review.dropped)
                                                      for i in review.ids if i in check.confidence])
        self.review = Review(ids=[i for i in review.ids if i in review.dropped])
        return len(kept)

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
            return 0
        before = sum(self.store.counts().values())
        self.store.accept_predictions(model_id, threshold, skip=self.checked_items(right=False, model_id=model_id))
        return sum(self.store.counts().values()) - before
