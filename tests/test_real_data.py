"""Integration on ../shared/data with the real ImageNet weights (skipped where the data is absent)."""
import numpy as np
import pytest

from engine import FeatureCache, Workspace, embed
from engine.neighbors import knn_accuracy

pytestmark = [pytest.mark.slow, pytest.mark.weights, pytest.mark.data]


def test_cifar10_last_layer_neighbours_agree_with_the_folder_names(embedded_cifar10):
    ws = Workspace(embedded_cifar10)
    result = embed(ws, backbone="mobilenet_v2")          # computed once a session (the fixture): read back here
    assert result.embedded == 0 and result.cached == 3000 and not result.skipped
    classes = sorted({item.path.split("/")[0] for item in ws.items()})
    labels = np.array([classes.index(item.path.split("/")[0]) for item in ws.items()])
    cache = FeatureCache(ws.features_dir("mobilenet_v2", result.size), backbone="mobilenet_v2", size=result.size)
    last = knn_accuracy(cache.load(result.layers[-1], "avg"), labels)
    first = knn_accuracy(cache.load(result.layers[0], "avg"), labels)
    print(f"cifar10 10-NN accuracy: first layer {first:.3f}, last layer {last:.3f}")
    assert last > 0.6 and last > first + 0.15
