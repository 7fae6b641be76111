"""Tests for engine.neighbors: cosine similarity search over feature rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.neighbors import NeighborsError, SimilarityIndex, find_similar


@pytest.fixture
def features():
    """300 random rows plus row 300 = row 7 + small noise."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)).astype(np.float32)
    near = X[7] + rng.normal(0, 0.01, size=64).astype(np.float32)
    return np.vstack([X, near[None]])


def test_near_copy_ranked_first(features):
    idx, scores = find_similar(features, [7], k=10)
    assert idx[0] == 300
    assert scores[0] > 0.99
    assert 7 not in idx
    assert len(idx) == 10 and idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0)


def test_scores_are_cosines(features):
    idx, scores = find_similar(features, [3], k=len(features))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = unit[idx] @ unit[3]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert len(idx) == len(features) - 1


def test_exclusions(features):
    idx, _ = find_similar(features, [7], k=5, exclude=[300, 12])
    assert 300 not in idx and 12 not in idx
    mask = np.zeros(len(features), dtype=bool)
    mask[300] = True
    assert 300 not in find_similar(features, [7], k=5, exclude=mask)[0]
    idx, scores = find_similar(features, np.int64(7), k=2, exclude_seeds=False)
    assert idx.tolist() == [7, 300]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)


def test_k_larger_than_rows_and_zero(features):
    idx, _ = find_similar(features, [0, 1], k=10_000)
    assert len(idx) == len(features) - 2
    idx, scores = find_similar(features, [0], k=0)
    assert idx.size == 0 and scores.size == 0


def test_ties_broken_by_lower_index():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 8)).astype(np.float32)
    X[[20, 10, 3]] = X[0]  # exact copies: equal scores
    idx, scores = find_similar(X, [0], k=3)
    assert idx.tolist() == [3, 10, 20]
    assert scores[0] == scores[1] == scores[2]
    assert find_similar(X, [0], k=1)[0].tolist() == [3]


def test_max_and_mean_differ():
    rng = np.random.default_rng(2)
    a, b = np.eye(16, dtype=np.float32)[:2]
    noise = lambda: rng.normal(0, 0.05, size=(40, 16)).astype(np.float32)  # noqa: E731
    X = np.vstack([a + noise(), b + noise(), (a + b) / np.sqrt(2) + noise()])
    seeds = [0, 40]  # one row of each cluster
    middle = set(range(80, 120))
    mean_idx, _ = find_similar(X, seeds, k=20, aggregate="mean")
    max_idx, _ = find_similar(X, seeds, k=20, aggregate="max")
    assert set(mean_idx.tolist()) <= middle
    assert not set(max_idx.tolist()) & middle


def test_zero_rows_give_no_nan():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 8)).astype(np.float32)
    X[[5, 6]] = 0.0
    idx, scores = find_similar(X, [0], k=50)
    assert np.isfinite(scores).all()
    assert scores[idx.tolist().index(5)] == 0.0
    idx, scores = find_similar(X, [5], k=50)  # zero seed: everything scores 0
    assert np.isfinite(scores).all() and np.all(scores == 0)
    assert idx.tolist() == [i for i in range(50) if i != 5]
    idx, scores = SimilarityIndex(X).query([5, 6], k=50, aggregate="max")
    assert np.all(scores == 0)


def test_nan_rows_left_out():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    X[4, 1] = np.nan
    X[9, 0] = np.inf
    idx, scores = find_similar(X, [0], k=50)
    assert 4 not in idx and 9 not in idx and np.isfinite(scores).all()
    with pytest.raises(NeighborsError, match=r"Seed row\(s\) \[4\] contain NaN"):
        find_similar(X, [4, 0])
    assert SimilarityIndex(X).query([0], k=50)[0].tolist() == idx.tolist()


def test_float16_memmap(tmp_path, features):
    path = tmp_path / "features.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=features.shape)
    mm[:] = features
    mm.flush()
    ro = np.load(path, mmap_mode="r")
    idx, scores = find_similar(ro, [7], k=20, chunk_rows=64)
    ref_idx, ref_scores = find_similar(np.asarray(ro, dtype=np.float32), [7], k=20)
    assert idx[0] == 300
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


def test_chunking_does_not_change_results(features):
    whole = find_similar(features, [1, 2, 3], k=40, aggregate="max")
    tiny = find_similar(features, [1, 2, 3], k=40, aggregate="max", chunk_rows=7)
    np.testing.assert_array_equal(whole[0], tiny[0])
    np.testing.assert_allclose(whole[1], tiny[1], atol=1e-6)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_index_query_equals_find_similar(features, aggregate):
    seeds, exclude = [7, 20, 33], [300, 5]
    expected = find_similar(features, seeds, k=25, exclude=exclude, aggregate=aggregate)
    index = SimilarityIndex(features, chunk_rows=50)
    assert index.rows.dtype == np.float32
    got = index.query(seeds, k=25, exclude=exclude, aggregate=aggregate)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)


def test_half_precision_index(features):
    index = SimilarityIndex(features, max_float32_values=0)
    assert index.rows.dtype == np.float16
    idx, scores = index.query([7], k=10)
    ref_idx, ref_scores = find_similar(features, [7], k=10)
    assert idx[0] == 300
    np.testing.assert_allclose(scores, ref_scores, atol=2e-3)


def test_error_messages(features):
    n = len(features)
    with pytest.raises(NeighborsError, match="No seed rows given"):
        find_similar(features, [])
    with pytest.raises(NeighborsError) as info:
        find_similar(features, [3, n, -1])
    assert f"[-1, {n}] out of range" in str(info.value)
    assert f"0..{n - 1}" in str(info.value)
    with pytest.raises(NeighborsError, match="Unknown aggregate 'median'. Choose one of: mean, max"):
        find_similar(features, [3], aggregate="median")
    with pytest.raises(NeighborsError, match="exclude index"):
        find_similar(features, [3], exclude=[n + 5])
    with pytest.raises(NeighborsError, match="integer row indices"):
        find_similar(features, [1.5])
    with pytest.raises(NeighborsError, match="k must be"):
        find_similar(features, [1], k=-1)
