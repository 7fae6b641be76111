"""Tests for engine.projection: 2-D projectors, registry and on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from engine import projection
from engine.projection import (
    PROJECTIONS,
    SUPERVISED,
    LDAProjector,
    PCAProjector,
    ProjectionError,
    SupervisedUMAPProjector,
    UMAPProjector,
    cached_projection,
    create_projector,
)


def _blobs(n=300, d=20, n_classes=3, seed=0):
    """Gaussian blobs: features (float32) and int labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    centers = rng.normal(0, 4, size=(n_classes, d))
    X = centers[labels] + rng.normal(0, 1, size=(n, d))
    return X.astype(np.float32), labels


def _nuisance_data(n_classes, n=400, d=20, seed=1):
    """Class signal in low-variance dims, large class-independent nuisance in dims 0, 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    X = rng.normal(0, 0.3, size=(n, d))
    X[:, :2] *= 60  # nuisance: std 18, dominates PCA
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    X[:, 2] += 1.5 * np.cos(angles)[labels]
    X[:, 3] += 1.5 * np.sin(angles)[labels]
    return X.astype(np.float32), labels


def _knn_accuracy(emb, labels):
    return cross_val_score(KNeighborsClassifier(5), emb, labels, cv=5).mean()


@pytest.mark.parametrize("name", ["pca", "lda"])
def test_linear_projections_deterministic(name):
    X, labels = _blobs()
    y = labels if name in SUPERVISED else None
    a = create_projector(name).fit_transform(X, y)
    b = create_projector(name).fit_transform(X, y)
    assert a.shape == (len(X), 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_umap_deterministic_with_pca_prestep():
    X, _ = _blobs(n=300, d=40)
    a = UMAPProjector(pca_dims=10).fit(X)
    b = UMAPProjector(pca_dims=10).fit_transform(X)
    assert a.pca_ is not None and a.pca_.n_components_ == 10
    np.testing.assert_array_equal(a.umap_.embedding_, b)
    assert b.shape == (300, 2) and b.dtype == np.float32
    new = a.transform(X[:20])
    assert new.shape == (20, 2) and np.isfinite(new).all()


def test_supervised_umap_with_unlabeled_rows():
    X, labels = _blobs(n=200, d=30, seed=3)
    y = labels.copy()
    y[::2] = -1
    emb = SupervisedUMAPProjector(pca_dims=10).fit_transform(X, y)
    assert emb.shape == (200, 2) and emb.dtype == np.float32
    assert np.isfinite(emb).all()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_lda_separates_classes_pca_does_not(n_classes):
    X, labels = _nuisance_data(n_classes)
    y = labels.copy()
    y[1::2] = -1  # fit on half the rows, evaluate on all of them
    lda = LDAProjector().fit_transform(X, y)
    pca = PCAProjector().fit_transform(X)
    assert lda.shape == pca.shape == (len(X), 2)
    chance = 1.0 / n_classes
    assert _knn_accuracy(lda, labels) > 0.9
    assert _knn_accuracy(pca, labels) < chance + 0.15


def test_lda_pca_prestep_on_wide_data():
    X, labels = _blobs(n=120, d=300, n_classes=4, seed=5)
    proj = LDAProjector(pca_dims=30).fit(X, labels)
    assert proj.pca_.n_components_ == 30
    assert proj.transform(X).shape == (120, 2)


def test_pca_components_views_differ():
    X, _ = _blobs(n=200, d=12)
    first = PCAProjector(components=(0, 1)).fit_transform(X)
    second = PCAProjector(components=(2, 3)).fit_transform(X)
    assert not np.allclose(first, second)
    full = PCAProjector(components=(2, 3), n_components=6).fit(X)
    assert full.pca_.n_components_ == 6
    np.testing.assert_allclose(full.transform(X), second, rtol=1e-4, atol=1e-4)


def test_float16_memmap_input(tmp_path):
    X, _ = _blobs(n=150, d=16)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16,
                                   shape=X.shape)
    mm[:] = X
    out = PCAProjector().fit_transform(mm)
    ref = PCAProjector().fit_transform(X.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_clone_and_params_round_trip(name):
    params = {"random_state": 7, "pca_dims": 20} if name != "pca" else {
        "components": (2, 3), "n_components": 5, "random_state": 7}
    proj = create_projector(name, **params)
    copy = clone(proj)
    assert copy is not proj and type(copy) is type(proj)
    assert copy.get_params() == proj.get_params()
    assert {k: copy.get_params()[k] for k in params} == params


def test_init_does_not_validate():
    proj = PCAProjector(components="nonsense")
    assert proj.components == "nonsense"
    with pytest.raises(ProjectionError, match="components must be two different"):
        proj.fit(np.ones((10, 4)))


def test_unknown_projection_name():
    with pytest.raises(ProjectionError) as info:
        create_projector("tsne")
    message = str(info.value)
    assert "Unknown projection 'tsne'" in message
    for name in PROJECTIONS:
        assert name in message


def test_unknown_parameter():
    with pytest.raises(ProjectionError, match=r"Unknown parameter\(s\) \['bogus'\]"):
        create_projector("umap", bogus=1)


def test_lda_needs_two_classes():
    X, _ = _blobs(n=50)
    y = np.full(50, -1)
    y[:5] = 0
    y[5] = 1  # second class has a single item
    with pytest.raises(ProjectionError) as info:
        LDAProjector().fit(X, y)
    message = str(info.value)
    assert "at least two labels with two items each" in message
    assert "2 labeled class(es) and 6 labeled item(s)" in message


def test_supervised_without_labels():
    with pytest.raises(ProjectionError, match="needs labels y"):
        LDAProjector().fit(np.ones((10, 4)))


def test_nan_input_rejected():
    X, _ = _blobs(n=40)
    X[3, 1] = np.nan
    X[9, :] = np.inf
    with pytest.raises(ProjectionError, match="2 of 40 feature rows contain NaN or inf"):
        PCAProjector().fit(X)
    good = PCAProjector().fit(np.nan_to_num(X, posinf=0.0))
    with pytest.raises(ProjectionError, match="2 of 40"):
        good.transform(X)


def test_too_many_components():
    with pytest.raises(ProjectionError, match="allows at most 3"):
        PCAProjector(components=(2, 3)).fit(np.random.default_rng(0).normal(size=(3, 8)))


def _count_fits(monkeypatch, cls):
    """Wrap cls._fit so that calls are counted."""
    calls = []
    original = cls._fit

    def counting(self, Xf, y):
        calls.append(type(self).__name__)
        return original(self, Xf, y)

    monkeypatch.setattr(cls, "_fit", counting)
    return calls


def test_cached_projection_reuses_file(tmp_path, monkeypatch):
    calls = _count_fits(monkeypatch, PCAProjector)
    X, _ = _blobs(n=100)
    first = cached_projection(X, "pca", {}, cache_dir=tmp_path, key="feat-v1:layer3")
    second = cached_projection(X, "pca", {"components": (0, 1)}, cache_dir=tmp_path,
                               key="feat-v1:layer3")
    assert len(calls) == 1  # defaults spelled out hash the same
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (100, 2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("pca-") and files[0].endswith(".npy")
    cached_projection(X, "pca", {}, cache_dir=tmp_path, key="feat-v2:layer3")
    cached_projection(X, "pca", {"components": (2, 3)}, cache_dir=tmp_path,
                      key="feat-v1:layer3")
    assert len(calls) == 3
    assert len(list(tmp_path.glob("*.npy"))) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_cached_projection_asked_by_several_threads_at_once_is_computed_once(tmp_path, monkeypatch):
    """A served app computes a UMAP in a background thread per page: pages pressing the same key together share
    one computation (the others wait for it and read its file)."""
    import threading
    import time
    calls = []
    original = PCAProjector._fit

    def slow(self, Xf, y):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)                       # long enough for every thread to ask while it runs
        return original(self, Xf, y)
    monkeypatch.setattr(PCAProjector, "_fit", slow)
    X, _ = _blobs(n=100)
    results = {}

    def ask(name):
        results[name] = cached_projection(X, "pca", {}, cache_dir=tmp_path, key="feat-v1:layer3")
    threads = [threading.Thread(target=ask, args=(f"page-{i}",), name=f"page-{i}") for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(calls) == 1 and len(results) == 6
    for emb in results.values():
        np.testing.assert_array_equal(emb, results["page-0"])
    other = cached_projection(X, "pca", {"components": (2, 3)}, cache_dir=tmp_path, key="feat-v1:layer3")
    assert len(calls) == 2 and other.shape == (100, 2)    # another projection is not held back by it


def test_cached_projection_labels_version(tmp_path, monkeypatch):
    calls = _count_fits(monkeypatch, LDAProjector)
    X, labels = _blobs(n=120)
    y = labels.copy()
    y[::3] = -1
    cache = tmp_path / "cache"
    a = cached_projection(X, "lda", None, cache_dir=cache, key="k", y=y)
    b = cached_projection(X, "lda", None, cache_dir=cache, key="k", y=y.copy())
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)
    y[0] = labels[0]  # label one more item: a new labels version
    cached_projection(X, "lda", None, cache_dir=cache, key="k", y=y)
    assert len(calls) == 2
    assert len(list(cache.glob("lda-*.npy"))) == 2


def test_cached_projection_ignores_corrupt_file(tmp_path):
    X, _ = _blobs(n=30)
    first = cached_projection(X, "pca", {}, cache_dir=tmp_path, key="k")
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"garbage")
    again = cached_projection(X, "pca", {}, cache_dir=tmp_path, key="k")
    np.testing.assert_array_equal(first, again)


def test_registry_names():
    assert set(PROJECTIONS) == {"pca", "umap", "lda", "supervised_umap"}
    assert SUPERVISED == {"lda", "supervised_umap"}
    assert projection.PROJECTIONS["umap"] is UMAPProjector


# ---- class_layout: the Predicted view ---------------------------------------------------------

def test_class_layout_puts_confident_items_at_their_anchor_and_labeled_ones_outside():
    from engine.projection import class_layout
    rng = np.random.default_rng(0)
    probs = np.array([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98],
                      [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.98, 0.01, 0.01]])
    local = rng.normal(size=(6, 2))
    xy = class_layout(probs, local, labeled=np.array([-1, -1, -1, -1, -1, 2]), spread=0.0)
    anchors = np.array([[0, 1], [np.cos(np.pi / 2 - 2 * np.pi / 3), np.sin(np.pi / 2 - 2 * np.pi / 3)],
                        [np.cos(np.pi / 2 - 4 * np.pi / 3), np.sin(np.pi / 2 - 4 * np.pi / 3)]])
    for row in range(3):                                    # confident: next to its own anchor
        assert np.argmin(np.linalg.norm(anchors - xy[row], axis=1)) == row
        assert np.linalg.norm(xy[row] - anchors[row]) < 0.05
    assert np.allclose(xy[3], (anchors[0] + anchors[1]) / 2, atol=1e-6)   # torn between two: halfway
    assert np.linalg.norm(xy[4]) < 1e-6                                   # no idea: the centre
    assert np.allclose(xy[5], 1.3 * anchors[2], atol=1e-6)              # labeled: outside, at its label
    spread = class_layout(probs, local, spread=0.06)
    assert 0 < np.abs(spread - class_layout(probs, local, spread=0.0)).max() < 0.3
    assert spread.dtype == np.float32
    two = class_layout(np.array([[0.9, 0.1], [0.2, 0.8]] * 5), rng.normal(size=(10, 2)))
    assert np.ptp(two[:, 0]) > 0.3                        # two labels: widened across, not one line
    assert np.abs(two).max() <= 1.5                       # inside the frame the app draws


@pytest.mark.parametrize("probs, local, message", [
    (np.ones((3, 1)), np.zeros((3, 2)), "k >= 2"),
    (np.full((3, 2), 0.5), np.zeros((2, 2)), "one local"),
    (np.array([[np.nan, 1.0], [0.5, 0.5]]), np.zeros((2, 2)), "NaN"),
])
def test_class_layout_rejects_bad_input_with_a_message(probs, local, message):
    from engine.projection import ProjectionError, class_layout
    with pytest.raises(ProjectionError, match=message):
        class_layout(probs, local)
