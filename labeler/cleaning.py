"""The cleaning queues of a project: likely label errors, top losses, duplicates and odd files.

    from labeler.project import Project
    from labeler.cleaning import build_queues
    queues = build_queues(Project("photos"))          # {"label_issues": DataFrame, ...}
    queues["label_issues"].head(20)

Every queue is a DataFrame with the columns of `COLUMNS`, most worth reviewing first (by
`score`, descending); items the store excludes are never listed. The work is the engine's
(`engine.clean`); this module reads the project's labels, files and feature cache and turns
the results into rows a person can act on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from engine import clean
from engine.clean import DEFAULT_DUPLICATE_THRESHOLD
from engine.data import InputError
from engine.features import FeatureCache

from .errors import LabelerError

logger = logging.getLogger(__name__)

QUEUES = ("label_issues", "top_losses", "duplicates", "odd_files")   # display order
QUEUE_TITLES = {"label_issues": "Likely label errors", "top_losses": "Top losses", "duplicates": "Duplicates",
                "odd_files": "Odd files"}
COLUMNS = ("item_id", "image_name", "score", "given", "suggested", "confidence", "reason", "group", "keep")
#: layers whose average-pooled features, side by side, feed the k-fold label-issue model (bench/clean.py:
#: on cifar10 the last layer alone ranks flipped labels as well as the last two together, in half the time)
LABEL_ISSUE_LAYERS = {"mobilenet_v2": ("features.18",)}

Progress = Callable[[str, int, int], None]   # (stage, done, total)


class CleaningError(LabelerError):
    """A queue that cannot be built with the given arguments."""


def empty_queue() -> pd.DataFrame:
    """A queue with no rows and the contract's columns and dtypes."""
    return pd.DataFrame({"item_id": pd.Series(dtype=np.int64), "image_name": pd.Series(dtype=object),
                         "score": pd.Series(dtype=np.float64), "given": pd.Series(dtype=object),
                         "suggested": pd.Series(dtype=object), "confidence": pd.Series(dtype=np.float64),
                         "reason": pd.Series(dtype=object), "group": pd.Series(dtype=np.int64),
                         "keep": pd.Series(dtype=bool)})


def build_queues(project, *, backbone=None, size=None, layers=None, model=None,
                 duplicate_threshold=None, queues=QUEUES, targets=None,
                 progress: Progress | None = None) -> dict[str, pd.DataFrame]:
    """The cleaning queues of `project` (a labeler.project.Project), by name, in `queues`' order.

    Args:
        backbone, size: which feature cache to use (computed with the engine's embed if needed); default
            the project's.
        layers: layers whose features predict labels out of sample (default LABEL_ISSUE_LAYERS, else
            the last offered); duplicates use engine.clean.DUPLICATE_LAYERS.
        model: path of a model exported by `labeler train --out`; None leaves top_losses empty.
        duplicate_threshold: cosine similarity from which two images are compared pixel by pixel for
            near-duplicates (default DEFAULT_DUPLICATE_THRESHOLD; see engine.duplicates).
        queues: which queues to build (names from QUEUES).
        targets: for top losses of a segmentation or regression model, a callable image_name -> target
            (engine MaskLabel / PointsLabel); classifiers use the store's labels.
        progress: called as progress(stage, done, total) during long work.
    """
    unknown = [name for name in queues if name not in QUEUES]
    if unknown:
        raise CleaningError(f"Unknown queue(s) {unknown}; choose from {', '.join(QUEUES)}.")
    context = _Context(project, backbone or project.backbone, size or project.size, progress)
    builders = {
        "label_issues": lambda: label_issue_queue(context, layers),
        "top_losses": lambda: top_loss_queue(context, model, targets),
        "duplicates": lambda: duplicate_queue(context, duplicate_threshold),
        "odd_files": lambda: odd_file_queue(context),
    }
    return {name: _finish(builders[name]()) for name in queues}


class _Context:
    """What every queue reads from the project, each piece loaded once and only when needed."""

    def __init__(self, project, backbone: str, size: int, progress: Progress | None):
        self.project, self.backbone, self.size = project, backbone, size
        self.progress = progress or (lambda stage, done, total: None)
        self.items = project.refresh_items(rescan=True)
        excluded = project.store.excluded()
        # rows in play: present and not excluded
        self.active = np.array([not item.missing and item.id not in excluded for item in self.items], dtype=bool)
        self._cache = self._stats = self._given = self._labels = None

    @property
    def n(self) -> int:
        return len(self.items)

    def cache(self) -> FeatureCache:
        if self._cache is None:
            from engine.embedding import embed
            embed(self.project.workspace, backbone=self.backbone, size=self.size,
                  progress=lambda done, total: self.progress("embedding", done, total))
            self._cache = FeatureCache(self.project.workspace.features_dir(self.backbone, self.size),
                                       backbone=self.backbone, size=self.size)
        return self._cache

    def with_features(self) -> np.ndarray:
        """Active rows whose features were computed."""
        return self.active & self.cache().done_mask(self.n)

    def stats(self) -> pd.DataFrame:
        """The stats of engine.clean.survey_images for every item (rows of inactive items are left empty)."""
        return self.survey()[0]

    def survey(self) -> tuple[pd.DataFrame, list]:
        """(stats, grey thumbnails) of every item, from one read of each active item's file (inactive items:
        empty stats, no thumbnail)."""
        if self._stats is None:
            rows = np.flatnonzero(self.active)
            folder = self.project.folder
            found = clean.survey_images([folder / self.items[r].path for r in rows],
                                        progress=lambda done, total: self.progress("reading files", done, total))
            found.stats.index = rows
            thumbnails = [None] * self.n
            for row, image in zip(rows, found.thumbnails):
                thumbnails[row] = image
            self._stats = (found.stats.reindex(range(self.n)), thumbnails)
        return self._stats

    def labels(self) -> tuple[list[str], np.ndarray]:
        """The store's label_matrix (names, matrix) for every item, read once per build."""
        if self._labels is None:
            self._labels = self.project.store.label_matrix(self.n)
        return self._labels

    def given(self) -> list[str]:
        """Each item's current label(s) as text ('' when unlabeled; multi-label joined by a space)."""
        if self._given is None:
            names, matrix = self.labels()
            if matrix.ndim == 2:
                self._given = [" ".join(names[k] for k in np.flatnonzero(row)) for row in matrix]
            else:
                self._given = [names[k] if k >= 0 else "" for k in matrix]
        return self._given

    def rows_table(self, rows, score, reason, suggested=None, confidence=None, group=None, keep=None) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        given = self.given()
        count = len(rows)
        return pd.DataFrame({
            "item_id": [self.items[r].id for r in rows],
            "image_name": [self.items[r].path for r in rows],
            "score": np.asarray(score, dtype=np.float64),
            "given": [given[r] for r in rows],
            "suggested": list(suggested) if suggested is not None else [""] * count,
            "confidence": np.asarray(confidence, dtype=np.float64) if confidence is not None else np.full(count, np.nan),
            "reason": list(reason),
            "group": np.asarray(group, dtype=np.int64) if group is not None else np.full(count, -1, dtype=np.int64),
            "keep": np.asarray(keep, dtype=bool) if keep is not None else np.ones(count, dtype=bool),
        })


def _finish(table: pd.DataFrame) -> pd.DataFrame:
    if table is None or table.empty:
        return empty_queue()
    return table.loc[:, list(COLUMNS)].reset_index(drop=True)


# ---- label issues ---------------------------------------------------------------------------------

def label_issue_features(cache: FeatureCache, layers: Sequence[str] | None, backbone: str):
    """A function rows -> float32 average-pooled features of `layers` side by side."""
    layers = list(layers or LABEL_ISSUE_LAYERS.get(backbone) or cache.layers[-1:])
    arrays = [cache.load(layer, "avg") for layer in layers]

    def take(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(array[rows], dtype=np.float32) for array in arrays], axis=1)
    return take


def label_issue_queue(context: _Context, layers=None) -> pd.DataFrame:
    """Every labeled item ranked by cleanlab's issue score (1 - label quality) of k-fold probabilities."""
    names, matrix = context.labels()
    multi = matrix.ndim == 2
    candidates = context.with_features() & (matrix.any(1) if multi else matrix >= 0)
    rows = np.flatnonzero(candidates)
    if len(rows) < 4:
        return empty_queue()
    context.progress("label issues", 0, 1)
    features = label_issue_features(context.cache(), layers, context.backbone)(rows)
    try:
        finder = clean.LabelIssueFinder().fit(features, matrix[rows])
    except InputError as err:
        logger.info("no label-issue queue: %s", err)
        return empty_queue()
    context.progress("label issues", 1, 1)
    scored = rows[finder.rows_]
    probs = finder.pred_probs_
    if multi:
        suggested = [" ".join(names[k] for k in np.flatnonzero(on)) for on in finder.suggested_]
        confidence = [float(p[on].mean()) if on.any() else np.nan for p, on in zip(probs, finder.suggested_)]
        reason = [_multi_reason(names, p, given) for p, given in zip(probs, matrix[scored])]
    else:
        best = finder.suggested_
        suggested = [names[k] for k in best]
        confidence = probs.max(1)
        given_prob = probs[np.arange(len(best)), np.searchsorted(finder.classes_, matrix[scored])]
        reason = [_issue_reason(names[k], c, names[g], p, flag)
                  for k, c, g, p, flag in zip(best, confidence, matrix[scored], given_prob, finder.is_issue_)]
    table = context.rows_table(scored, finder.issue_score_, reason, suggested, confidence)
    return table.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")


def _multi_reason(names: list[str], probs: np.ndarray, given: np.ndarray) -> str:
    missing = [f"{names[k]!r} at {probs[k]:.2f}" for k in np.flatnonzero(~given & (probs >= 0.5))]
    doubtful = [f"{names[k]!r} at {probs[k]:.2f}" for k in np.flatnonzero(given & (probs < 0.5))]
    parts = ([f"likely also {', '.join(missing)}"] if missing else []) + \
            ([f"doubtful {', '.join(doubtful)}"] if doubtful else [])
    return "; ".join(parts) or "labels agree with the model"


# ---- top losses -----------------------------------------------------------------------------------

def top_loss_queue(context: _Context, model, targets=None) -> pd.DataFrame:
    """Items by the loss of an exported model on their current labels (or `targets`), largest first."""
    if model is None:
        return empty_queue()
    from engine.learner import load_exported
    predictor = load_exported(model)
    rows = np.flatnonzero(context.active)
    if targets is None:
        try:  # the store's labels, in the form the model's task takes (class names; tag lists)
            given = predictor.task.targets_from_labels(*context.labels())
        except InputError as err:
            raise CleaningError(f"{model}: {err}") from err
        rows = np.array([r for r in rows if given[r] is not None], dtype=np.int64)
        wanted = [given[r] for r in rows]
    else:
        wanted = [targets(context.items[r].path) for r in rows]
    paths = [context.items[r].path for r in rows]
    losses = clean.model_losses(predictor, context.project.folder, paths, wanted,
                                progress=lambda done, total: context.progress("top losses", done, total))
    scored = losses["loss"].notna().to_numpy()
    if not scored.any():
        return empty_queue()
    losses = losses[scored]
    reason = [f"loss {loss:.3f}" + (f"; predicted {pred!r} at {conf:.2f}" if pred else "")
              for loss, pred, conf in zip(losses["loss"], losses["predicted"], losses["confidence"])]
    table = context.rows_table(rows[losses["row"].to_numpy()], losses["loss"], reason,
                               losses["predicted"].tolist(), losses["confidence"])
    return table.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")


# ---- duplicates -----------------------------------------------------------------------------------

def duplicate_features(cache: FeatureCache, backbone: str) -> np.ndarray:
    """The CNN features near-duplicates are found with (engine.clean.DUPLICATE_LAYERS, else the first layer's grid)."""
    layer, pooling = clean.DUPLICATE_LAYERS.get(backbone) or (cache.layers[0], "grid")
    return cache.load(layer, pooling)


def duplicate_queue(context: _Context, threshold=None) -> pd.DataFrame:
    """Exact and near-duplicate groups, every member listed, the suggested keeper first in its group.

    Near-duplicates: candidates by signature and CNN features (cosine >= threshold), confirmed on
    the images' own pixels within what counts as a copy in this set (engine.duplicates)."""
    threshold = DEFAULT_DUPLICATE_THRESHOLD if threshold is None else float(threshold)
    stats, thumbnails = context.survey()
    rows = np.flatnonzero(context.active)
    done = context.with_features()[rows]
    source = duplicate_features(context.cache(), context.backbone)
    features = np.zeros((len(rows), source.shape[1]), dtype=np.float32)
    features[done] = np.asarray(source[rows[done]], dtype=np.float32)
    context.progress("duplicates", 0, 1)
    sizes = stats[["width", "height"]].iloc[rows].fillna(0).to_numpy()
    finder = clean.DuplicateFinder(threshold).fit(features, stats["sha1"].iloc[rows].tolist(),
                                                  thumbnails=[thumbnails[r] for r in rows], sizes=sizes)
    logger.info("duplicates: %d candidate pairs compared, copies differ by at most %.3f here",
                len(finder.candidates_), finder.limit_.limit_)
    context.progress("duplicates", 1, 1)
    groups = finder.groups_
    if (groups < 0).all():
        return empty_queue()
    pixels = (stats["width"].fillna(0) * stats["height"].fillna(0)).to_numpy()[rows]
    keep = clean.suggest_keep(groups, pixels, stats["bytes"].fillna(0).to_numpy()[rows])
    return _duplicate_table(context, rows, finder, keep, stats)


def _duplicate_table(context: _Context, rows, finder, keep, stats) -> pd.DataFrame:
    groups = finder.groups_
    pairs = finder.pairs_
    best: dict[int, tuple[float, int, bool, float]] = {}     # local row -> (similarity, partner, exact, difference)
    for a, b, sim, difference, exact in pairs[["a", "b", "similarity", "difference", "exact"]].itertuples(index=False):
        for one, other in ((a, b), (b, a)):
            if one not in best or sim > best[one][0]:
                best[one] = (sim, other, exact, difference)
    members = np.flatnonzero(groups >= 0)
    group_score = pd.Series([best[m][0] for m in members]).groupby(groups[members]).transform("max").to_numpy()
    given = context.given()
    keeper = {groups[m]: m for m in members if keep[m]}
    reason = []
    for m in members:
        sim, partner, exact, difference = best[m]
        size = f"{int(stats['width'].iat[rows[m]])}x{int(stats['height'].iat[rows[m]])}"
        text = (f"exact copy of {context.items[rows[partner]].path}" if exact
                else f"near-duplicate of {context.items[rows[partner]].path} ({sim:.2f}; pixels differ by "
                     f"{difference:.2f}, copies here by at most {finder.limit_.limit_:.2f})")
        text += f"; {size} px" + ("; keep" if keep[m] else f"; keep {context.items[rows[keeper[groups[m]]]].path}")
        labels = {given[rows[o]] for o in members[groups[members] == groups[m]]}
        if len(labels) > 1:
            text += f"; labels differ: {', '.join(sorted(repr(label) for label in labels))}"
        reason.append(text)
    table = context.rows_table(rows[members], group_score, reason, group=groups[members], keep=keep[members])
    # groups by their best similarity, the keeper first in each
    table["_keep_first"] = ~table["keep"]
    table = table.sort_values(["score", "group", "_keep_first", "item_id"], ascending=[False, True, True, True],
                              kind="stable")
    return table.drop(columns="_keep_first")


# ---- odd files ------------------------------------------------------------------------------------

def odd_file_queue(context: _Context, rules: clean.OddFileRules | None = None) -> pd.DataFrame:
    """Unreadable files (the engine's report and this read) and readable outliers."""
    stats = context.stats()
    rows = np.flatnonzero(context.active)
    table = stats.iloc[rows].reset_index(drop=True)
    failures = _embedding_failures(context)
    for local, row in enumerate(rows):
        if row in failures and pd.isna(table.at[local, "error"]):
            table.at[local, "error"] = failures[row]
    odd = clean.find_odd_files(table, rules)
    if odd.empty:
        return empty_queue()
    return context.rows_table(rows[odd["row"].to_numpy()], odd["score"], odd["reason"])


def _embedding_failures(context: _Context) -> dict[int, str]:
    """Item row -> reason, from the feature cache's report (without embedding anything)."""
    directory = context.project.workspace.features_dir(context.backbone, context.size)
    if context._cache is None and not directory.exists():
        return {}
    cache = context._cache or FeatureCache(directory, backbone=context.backbone, size=context.size)
    return cache.failures


__all__ = ["COLUMNS", "DEFAULT_DUPLICATE_THRESHOLD", "LABEL_ISSUE_LAYERS", "QUEUES", "QUEUE_TITLES", "CleaningError",
           "build_queues", "empty_queue"]


def _issue_reason(predicted: str, confidence: float, given: str, given_prob: float, flagged: bool) -> str:
    """'predicted 'cat' at 0.91, 'dog' at 0.05', or just the prediction when it agrees with the label."""
    text = f"predicted {predicted!r} at {confidence:.2f}"
    if given != predicted:
        text += f", {given!r} at {given_prob:.2f}"
    return text + ("; flagged by confident learning" if flagged else "")
