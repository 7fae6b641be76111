"""bench/finetuned_layer.py: the fine-tuned layer and the predictions it leads to, measured on the unlabeled images."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("finetuned_layer", ROOT / "bench" / "finetuned_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_covered_is_the_largest_surest_share_at_the_precision():
    bench = _bench()
    probs = np.array([[0.99, 0.01], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    right = np.array([True, True, False, True, True])
    assert bench.covered(probs, right, 0.95) == pytest.approx(2 / 5)
    assert bench.covered(probs, right, 0.75) == pytest.approx(5 / 5)    # 4 of 5 right over all of them
    assert bench.covered(probs, ~right, 0.95) == 0.0


@pytest.mark.slow
@pytest.mark.weights
def test_the_bench_compares_the_fine_tuned_layer_and_three_sources_of_predictions(tmp_path):
    from labeler.finetune import TrainSpec
    sys.path.insert(0, str(ROOT / "tests"))
    from test_annotate import colour_classes
    bench = _bench()
    folder = colour_classes(tmp_path / "images", per_class=12)
    report = bench.measure(folder, tmp_path / "ws", 18, 0, TrainSpec(size=32, batch_size=4, epochs=2))
    assert report["others"] == 36 - 18
    assert report["layers"][-1]["layer"] == "fine-tuned model-1"
    names = [row["predictions"] for row in report["predictions"]]
    assert names == ["the fine-tuned network (model-1)", "Train on the ImageNet layers",
                     "Train on the ImageNet layers + the fine-tuned layer"]
    models = [row["model"] for row in report["predictions"]]
    assert models[0] == "model-1" and models[1].startswith("first-") and models[2].endswith("+model-1")
    for row in report["predictions"]:
        assert 0 <= row["covered@0.95"] <= row["covered@0.90"] <= 1 and 0 <= row["accuracy"] <= 1
    assert report["predictions"][1]["accuracy"] >= 0.9       # tinted red, green or blue: ImageNet features see it
    assert "| Train on the ImageNet layers + the fine-tuned layer |" in bench.table(report)
