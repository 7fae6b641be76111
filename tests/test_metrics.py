"""Metrics against values computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import metrics
from engine.metrics import MetricError


def test_accuracy_and_error_rate_use_the_highest_score():
    scores = torch.tensor([[2.0, 1.0], [0.1, 0.9], [3.0, -1.0], [0.0, 5.0]])
    targets = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(scores, targets) == pytest.approx(0.75)
    assert metrics.error_rate(scores, targets) == pytest.approx(0.25)


def test_accuracy_multi_counts_every_tag_decision():
    probs = np.array([[0.9, 0.2], [0.4, 0.6]])
    targets = np.array([[1, 1], [0, 1]])
    assert metrics.accuracy_multi(probs, targets, threshold=0.5) == pytest.approx(3 / 4)
    assert metrics.accuracy_multi(probs, targets, threshold=0.1) == pytest.approx(3 / 4)


def test_f2_matches_hand_computed_sample_average():
    probs = np.array([[0.9, 0.8, 0.1], [0.7, 0.2, 0.3]])
    targets = np.array([[1, 0, 1], [1, 0, 0]])
    # row 1: tp=1, fp=1, fn=1 -> p=.5, r=.5 -> F2 = 5*.25/(4*.5+.5) = 0.5; row 2: exact -> 1
    assert metrics.fbeta_multi(probs, targets, threshold=0.5, beta=2) == pytest.approx(0.75)


def test_best_threshold_finds_the_threshold_that_separates_the_tags():
    probs = np.array([[0.35, 0.2], [0.3, 0.38], [0.1, 0.32]])
    targets = np.array([[1, 0], [0, 1], [0, 1]])
    threshold, score = metrics.best_threshold(probs, targets)
    assert score == pytest.approx(1.0)
    assert 0.3 <= threshold < 0.32


def test_mean_average_precision_skips_classes_without_positives():
    probs = np.array([[0.9, 0.5, 0.3], [0.8, 0.1, 0.2], [0.1, 0.7, 0.9]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    # class 0: ranks 0.9 (pos), 0.8, 0.1 -> AP 1; class 1: 0.7 (pos) first -> AP 1; class 2: no positives
    assert metrics.mean_average_precision(probs, targets) == pytest.approx(1.0)
    targets = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # class 0: positive ranked second -> precision 1/2 -> AP 0.5; class 1: AP 1
    assert metrics.mean_average_precision(probs, targets) == pytest.approx(0.75)


def test_pixel_accuracy_excludes_void_pixels():
    target = torch.tensor([[0, 1], [255, 1]])
    pred = torch.tensor([[0, 0], [1, 1]])
    assert metrics.pixel_accuracy(pred, target, void_code=255) == pytest.approx(2 / 3)
    assert metrics.pixel_accuracy(pred, target) == pytest.approx(2 / 4)


def test_mean_iou_averages_present_classes_and_excludes_void():
    target = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 2]])
    # void row dropped (even where predicted 0); class 0: I=1, U=2; class 1: I=2, U=3; class 3 absent
    assert metrics.mean_iou(pred, target, n_classes=4, void_code=2) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_point_error_is_measured_in_pixels_of_the_image():
    target = np.array([[0.0, 0.0, -1.0, -1.0]])
    pred = np.array([[0.1, 0.0, -1.0, -0.8]])
    # on a 100-px image: first point 5 px off, second 10 px off
    assert metrics.mean_point_error(pred, target, size=100) == pytest.approx(7.5)
    assert metrics.relative_point_error(pred, target, size=100) == pytest.approx(0.075)


def test_mismatched_lengths_raise_a_metric_error_naming_both_counts():
    with pytest.raises(MetricError, match="3 predictions but 2 targets"):
        metrics.accuracy(np.zeros((3, 2)), np.zeros(2))


def test_all_void_masks_raise_a_metric_error():
    with pytest.raises(MetricError, match="Every target pixel is void"):
        metrics.pixel_accuracy(np.zeros((2, 2)), np.full((2, 2), 255), void_code=255)


def test_the_three_maps_and_the_tag_frequency_ranking():
    from engine.metrics import (average_precisions, frequency_ranking, micro_average_precision,
                                per_image_average_precision)
    targets = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]])
    perfect = average_precisions(targets * 0.9 + 0.05, targets)
    assert perfect == {"mAP": 1.0, "mAP_micro": 1.0, "mAP_per_image": 1.0}
    # each image ranks its own tags right, but tag 0's scores are low across images: per image perfect, micro not
    probs = np.array([[0.3, 0.1, 0.1], [0.3, 0.2, 0.1], [0.3, 0.1, 0.2], [0.25, 0.1, 0.1]])
    assert per_image_average_precision(probs, targets) == 1.0
    assert micro_average_precision(probs, targets) < 1.0
    # the image-blind ranking: every image the training shares, so the common tag comes first everywhere
    ranking = frequency_ranking(np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]]), 4)
    assert ranking.shape == (4, 3) and np.allclose(ranking[0], [0.75, 0.25, 0.25])
    blind = average_precisions(ranking, targets)
    assert blind["mAP"] == pytest.approx(np.mean([3 / 4, 1 / 4, 1 / 4]))    # a constant score: the prevalence
    # images 2 and 3 each have a tag tied with a wrong one at 0.25: half the recall at precision 1, half at 2/3
    assert blind["mAP_per_image"] == pytest.approx(np.mean([1.0, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2]))
    with pytest.raises(MetricError, match="No image has a positive target"):
        per_image_average_precision(probs[3:], targets[3:])


def test_per_image_average_precision_is_scikit_learns_row_by_row_ties_included():
    from sklearn.metrics import average_precision_score

    from engine.metrics import per_image_average_precision
    rng = np.random.default_rng(0)
    targets = rng.random((300, 7)) < 0.3
    targets[0] = False                                          # an image without tags is left out
    probs = np.round(rng.random((300, 7)), 1)                   # rounded: many ties
    expected = np.mean([average_precision_score(t, p) for t, p in zip(targets, probs) if t.any()])
    assert per_image_average_precision(probs, targets) == pytest.approx(expected, abs=1e-12)
