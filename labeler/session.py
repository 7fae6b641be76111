"""One person's working state on a project, without any widget: testable without a browser.

The app (labeler/ui/app.py) wires widgets to these methods. State here is per session (per
browser tab); everything that must survive (labels, predictions) goes to the shared label
store at once, so two tabs on one project never overwrite each other.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.backbones import get_backbone_cfg
from engine.pooling import DEFAULT_POOLING

from .checks import CHECK_SIZE, PredictionChecks  # noqa: F401  (part of the session's API)
from .errors import SessionError
from .palette import label_colours, label_frames, paler
from .selection import Check, Review  # noqa: F401  (part of the session's API)

logger = logging.getLogger(__name__)

UNLABELED_COLOUR = "#9a9a9a"
UNLABELED_ALPHA = 0.45     # unlabeled points stay light over the thumbnails


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


class Session(PredictionChecks):
    """Layer and view navigation, selection and review, labeling, find-similar, separate, train,
    colours, undo; and (PredictionChecks) checks and accepting of the model's predictions.

    The features are the project's (`project.backbone`, `project.size`).
    """

    def __init__(self, project, *, pooling: str = DEFAULT_POOLING):
        self.project, self.store = project, project.store
        self.cfg = get_backbone_cfg(project.backbone)
        self.pooling = pooling
        self.base_layers = list(self.cfg.layers)        # the backbone's ImageNet layers
        self.layers = list(self.base_layers)             # and, last, the current fine-tuned model's
        self.model_layer = None
        self.layer_index = max(0, len(self.layers) - 2)   # a middle layer: pose and parts, not only class
        self.views: list[View] = list(BASE_VIEWS)
        self.view_index = 0
        self.review = Review()
        self.model = None
        self._coords: dict[tuple, np.ndarray] = {}
        self._frames: tuple[int, np.ndarray] | None = None     # (store version, frames) last computed
        self._lock = threading.Lock()
        self.store.open_tab()                 # undo takes back this tab's actions, not another's
        self._seen = self.store.mark()        # other tabs' actions after this are news
        self._said = ""                       # what news_from_other_tabs said last
        self.refresh_rows()
        self.refresh_model_layer()
        if self.latest_model() is not None and PREDICTED_VIEW not in self.views:
            self.views.append(PREDICTED_VIEW)

    def refresh_model_layer(self) -> bool:
        """Offer the current fine-tuned model's layer last in the ←/→ order once it is complete
        (`labeler.model_layer`), in place of an earlier model's; True when the order changed."""
        from .model_layer import ModelLayer
        found = ModelLayer.current(self.project.workspace.root)
        if (found and found.model_id) == (self.model_layer and self.model_layer.model_id):
            return False
        shown = self.layer
        self.model_layer = found
        self.layers = self.base_layers + ([found.name] if found else [])
        self.layer_index = self.layers.index(shown) if shown in self.layers else len(self.layers) - 1
        if self.latest_model() is not None and PREDICTED_VIEW not in self.views:
            self.views.append(PREDICTED_VIEW)
        return True

    def describe_predictions(self) -> str:
        """Whose predictions the map, the checks and Accept use (the latest stored model's), for people."""
        from .model_layer import describe_model
        return describe_model(self.project.workspace.root, self.latest_model())

    def _source(self, layer: str):
        """(feature cache, its name for the layer) of one layer of the map."""
        from .model_layer import LAYER
        if self.model_layer is not None and layer == self.model_layer.name:
            return self.model_layer.cache, LAYER
        return self.cache, layer

    # -- what is on the map -----------------------------------------------------------------
    def refresh_rows(self) -> None:
        """Items drawn: with features, present on disk, not excluded (features may still be arriving)."""
        self.cache = self.project.features()
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
        if self.layer_index >= len(self.base_layers):
            return self.model_layer.title
        return self.cfg.layer_titles[self.layer_index] if self.cfg.layer_titles else ""

    @property
    def view(self) -> View:
        return self.views[self.view_index]

    def step_layer(self, step: int) -> str:
        self.refresh_model_layer()
        self.layer_index = (self.layer_index + step) % len(self.layers)
        return self.layer

    def step_view(self, step: int) -> str:
        self.view_index = (self.view_index + step) % len(self.views)
        return self.view.name

    def features(self, layer: str | None = None, source: tuple | None = None) -> np.ndarray:
        """A layer's features for every item (those without: zeros); `source`, the (cache, name) to read instead."""
        cache, name = source or self._source(layer or self.layer)
        features = cache.load(name, self.pooling)
        if len(features) < self.n_items:    # images found after the fine-tune: not mapped by it (zeros)
            features = np.concatenate([features, np.zeros((self.n_items - len(features), features.shape[1]),
                                                          dtype=features.dtype)])
        return features

    def coords(self, layer: str | None = None, view: View | None = None) -> np.ndarray:
        """(len(rows), 2) positions of the drawn items in a layer's view (cached on disk)."""
        layer, view = layer or self.layer, view or self.view
        if view.method == "predicted":
            return self._predicted_coords(layer)
        return self.coords_work(layer, view)()

    def coords_work(self, layer: str | None = None, view: View | None = None) -> Callable[[], np.ndarray]:
        """`coords` of a layer's (non-predicted) view as a function that may run in another thread: what they
        depend on (the drawn rows, a supervised view's labels) is read now; the function computes them, or finds
        them computed, without holding the session's lock while it computes (a UMAP takes seconds)."""
        from engine.projection import cached_projection
        layer, view = layer or self.layer, view or self.view
        rows = self.rows
        y = self._label_vector(view.labels) if view.supervised else None
        key = self._coords_key(layer, view, y, rows)
        cache, name = self._source(layer)

        def compute() -> np.ndarray:
            with self._lock:
                found = self._coords.get(key)
            if found is None:
                features = self.features(source=(cache, name))[rows]
                found = cached_projection(features, view.method, dict(view.params), y=y,
                                          cache_dir=self.project.projections_dir,
                                          key=cache.projection_key(name, self.pooling, rows))
                with self._lock:
                    self._coords[key] = found
            return found
        return compute

    def _coords_key(self, layer: str, view: View, y: np.ndarray | None, rows: np.ndarray | None = None) -> tuple:
        rows = self.rows if rows is None else rows
        return (layer, view, rows.tobytes(), self._source(layer)[0].version, None if y is None else y.tobytes())

    def _predicted_coords(self, layer: str) -> np.ndarray:
        """The Predicted view: labels on a circle, each unlabeled image between them by the latest
        model's probabilities, spread locally by the layer's PCA 1-2; labeled ones outside the circle."""
        from engine.errors import ProjectionError
        from engine.class_layout import class_layout
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
        return self._coords_key(layer, view, self._label_vector(view.labels) if view.supervised else None) in self._coords

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
            raise SessionError(f"Image {item_id} is not in the review; select it first.")
        self.store.assign([item_id], name.strip(), source="human")
        self._record_check(item_id, name.strip())
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
        if len(set(labels)) < 2:
            raise SessionError("Choose two or more labels to separate.")
        view = View(f"Separate {', '.join(labels)}", method, (), tuple(labels))
        self.views = [v for v in self.views if not v.supervised] + [view]
        self.view_index = len(self.views) - 1
        return view

    # -- training ------------------------------------------------------------------------
    def train(self):
        """Fit the first model on cached features of every layer for the human labels; store predictions
        for every drawn item.

        Every ImageNet layer, in the session's pooling (the grid keeps layout, which way a head turns, which a
        global average cannot see), and the current fine-tuned model's layer when there is one: on cifar10 a
        logistic regression on both predicted the unlabeled images better than either the fine-tuned network
        itself or the ImageNet layers alone (`bench/annotate.py`'s README section). Its id then names that model
        (`first-V+model-N`), so the page can say what the predictions come from."""
        return self.finish_training(self.training_work()())

    def training_work(self) -> Callable[[], tuple]:
        """`train`'s fitting and predicting as a function that may run in another thread (seconds; 41 s at 100k
        images): the labels, rows and layers it uses are read now; `finish_training(its result)` stores the
        predictions, in the session's own thread."""
        from engine.firstmodel import ColumnBlocks, fit_first_model
        names, labels = self.human_labels()
        blocks = [self.cache.load(layer, self.pooling) for layer in self.base_layers]
        model_layer, rows = self.model_layer, self.rows
        source = self._source(model_layer.name) if model_layer is not None else None
        model_id = f"first-{self.store.version}" + (f"+{model_layer.model_id}" if model_layer is not None else "")

        def work() -> tuple:
            layers = blocks + ([self.features(source=source)] if source else [])
            features = ColumnBlocks(layers)
            model = fit_first_model(features, labels, names)
            step = 4096                               # rows at a time: all layers of 100k images stay on disk
            probs = np.concatenate([model.predict_proba(features[rows[start:start + step]])
                                    for start in range(0, len(rows), step)]) if len(rows) else \
                np.zeros((0, len(names)), dtype=np.float32)
            return model_id, rows, names, model, probs
        return work

    def finish_training(self, trained: tuple):
        """Store what `training_work`'s function returned: the predictions of every drawn item; its report."""
        model_id, rows, names, model, probs = trained
        self.store.set_predictions(model_id, rows.tolist(), names, probs)
        self.model = model
        if PREDICTED_VIEW not in self.views:
            self.views.append(PREDICTED_VIEW)
        return model.report

    # -- what the page shows of the store: counts, colours, undo ---------------------------
    @property
    def n_items(self) -> int:
        return len(self.project.items)

    @property
    def version(self) -> int:
        """Changes whenever the labels change (in this tab or another)."""
        return self.store.version

    def item_path(self, item_id: int) -> str:
        return self.project.items[int(item_id)].path

    def label_counts(self) -> dict[str, int]:
        """Images per label, in the labels' order (their number keys follow it)."""
        return self.store.counts()

    def label_colours(self) -> dict[str, str]:
        return label_colours(self.store.label_defs())

    def label_for_key(self, number: int) -> str | None:
        """The label a number key (1...9) names, or None."""
        names = list(self.label_counts())
        return names[number - 1] if 1 <= number <= len(names) else None

    @property
    def can_undo(self) -> bool:
        return self.store.can_undo_own()

    @property
    def can_redo(self) -> bool:
        return self.store.can_redo_own()

    def undo(self):
        """Take back this tab's latest action (another tab's only if made before this tab opened: the
        description says so); returns what was undone, or None."""
        return self.store.undo_own()

    def redo(self):
        """Redo what this tab undid last; returns what was redone, or None."""
        return self.store.redo_own()

    def news_from_other_tabs(self, after: str = "") -> str:
        """What other tabs (or processes) did since this tab last asked, said after `after` (the message of
        this tab's own action, less the sentence this said last time); "" when they did nothing. Ask before
        redrawing, so the page shows at least what it says."""
        news = self.store.news(self._seen)
        said_before, self._seen, self._said = self._said, news.until, news.describe()
        if not news:
            return ""
        after = after.removesuffix(said_before).strip()
        return f"{after}{'' if after.endswith(('.', '!', '?')) else '.'} {self._said}" if after else self._said

    def colours(self, vary_opacity: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per item: colour (a label's own, paler for a prediction, grey unlabeled) and alpha.

        With `vary_opacity`, what the model predicts confidently fades (and labeled images almost
        vanish), so the eye goes to what is left to label.
        """
        n = self.n_items
        names, labels = self.human_labels()
        colours = self.label_colours()
        colour = np.full(n, UNLABELED_COLOUR, dtype=object)
        alpha = np.full(n, UNLABELED_ALPHA, dtype=np.float32)
        predictions = self.predictions()
        if predictions is not None:
            classes, ids, probs = predictions
            ids = np.asarray(ids, dtype=np.int64)
            keep = ids < n                       # predictions of images this session does not know yet
            ids, probs = ids[keep], probs[keep]
            pale = np.array([paler(colours.get(c, UNLABELED_COLOUR)) for c in classes], dtype=object)
            colour[ids] = pale[probs.argmax(1)]
            if vary_opacity:
                chance = 1.0 / max(2, len(classes))
                alpha[ids] = np.clip(1 - (probs.max(1) - chance) / (1 - chance), 0.06, 1.0)
        has = labels >= 0
        alpha[has] = 0.08 if vary_opacity else 0.95
        table = np.array([colours.get(name, UNLABELED_COLOUR) for name in names] or ["#000"], dtype=object)
        colour[has] = table[labels[has]]
        return colour, alpha

    def frames(self) -> np.ndarray:
        """(n, 3) RGB frame per item in its label's colour (-1: no frame), recomputed when labels change."""
        version = self.version
        if self._frames is None or self._frames[0] != version:
            names, labels = self.human_labels()
            self._frames = (version, label_frames(names, labels, self.label_colours()))
        return self._frames[1]
