"""The map as the annotator sees it: positions and colours (`read_screen`, `colour_belief`), the lassos a
person might draw there (`atlas`, `outline`) and what each should label per action (`expected_rate`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.session import Session


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
    spacing = point_spacing(xy)
    dist, index = NearestNeighbors(n_neighbors=min(k, len(known))).fit(xy[known]).kneighbors(xy)
    weight = np.exp(-dist / (3 * spacing))
    votes = np.zeros_like(flat)
    np.add.at(votes, (np.repeat(np.arange(len(xy)), index.shape[1]), label[known][index].ravel()), weight.ravel())
    return (votes + flat) / (weight.sum(1, keepdims=True) + 1.0)


def point_spacing(xy: np.ndarray) -> float:
    """Typical distance between neighbouring points of a map (median nearest-neighbour distance)."""
    from sklearn.neighbors import NearestNeighbors
    sample = xy[np.random.default_rng(0).permutation(len(xy))[:2000]]
    dist, _ = NearestNeighbors(n_neighbors=2).fit(sample).kneighbors(sample)
    return float(np.median(dist[:, 1])) or 1e-6


@dataclass
class Region:
    """A lasso on offer: its outline, the rows inside and how densely they sit."""

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
    spacing = point_spacing(xy)
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
