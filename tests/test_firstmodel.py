"""The app's first model: every layer read a block of rows at a time, class-balanced, PCA past 256 rows."""
import numpy as np
import pytest

from engine.firstmodel import PCA_COMPONENTS, ColumnBlocks, FirstModelError, fit_first_model


def test_column_blocks_read_several_arrays_as_one_matrix_by_rows():
    a = np.arange(20, dtype=np.float16).reshape(5, 4)
    b = np.arange(10, dtype=np.float16).reshape(5, 2) * -1
    blocks = ColumnBlocks([a, b])
    assert blocks.shape == (5, 6) and len(blocks) == 5
    assert np.array_equal(blocks[[4, 1]], np.concatenate([a[[4, 1]], b[[4, 1]]], axis=1).astype(np.float32))
    assert blocks[1:3].dtype == np.float32 and blocks[1:3].shape == (2, 6)
    with pytest.raises(FirstModelError, match="same number of rows"):
        ColumnBlocks([a, b[:3]])


def test_many_labels_go_through_pca_and_still_separate_the_classes():
    rng = np.random.default_rng(0)
    n, dims = 600, 1000
    y = np.arange(n) % 3
    centres = rng.normal(size=(3, dims))
    features = (centres[y] * 0.3 + rng.normal(size=(n, dims))).astype(np.float16)
    known = np.where(np.arange(n) < 450, y, -1)                 # 450 labeled rows: past the PCA threshold
    model = fit_first_model(ColumnBlocks([features[:, :600], features[:, 600:]]), known, ["a", "b", "c"])
    steps = [name for name, _ in model.pipeline.pipeline.steps]
    assert "pca" in steps and model.pipeline.pipeline.named_steps["pca"].n_components == PCA_COMPONENTS
    probs = model.predict_proba(ColumnBlocks([features[450:, :600], features[450:, 600:]]))
    assert (probs.argmax(1) == y[450:]).mean() > 0.9
    assert model.report.accuracy > 0.9


def test_class_balance_keeps_a_rare_label_from_being_drowned():
    rng = np.random.default_rng(1)
    y = np.array([0] * 190 + [1] * 10)
    features = rng.normal(size=(200, 20)) + y[:, None] * 1.0     # rare class 1 sits one unit away
    model = fit_first_model(features, y, ["common", "rare"])
    test = rng.normal(size=(400, 20)) + np.repeat([0, 1], 200)[:, None] * 1.0
    recall_rare = (model.predict_proba(test)[200:].argmax(1) == 1).mean()
    assert recall_rare > 0.6
