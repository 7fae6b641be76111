"""The training notebook runs headless on 60 real cifar10 images and shows every figure of the lesson."""
from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import run_notebook, shared_data
from test_notebook import _cell  # one cell by its tag

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "train_in_jupyter.ipynb"
FIGURES = ("show_batch", "lr_find", "losses", "confusion", "top_losses", "export")  # cells that show a picture


def test_committed_training_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
@pytest.mark.data
def test_training_notebook_runs_and_shows_its_figures(tmp_path, monkeypatch):
    folder = shared_data("cifar10")
    settings = {"FOLDER": str(folder), "CLASSES": "airplane,cat,ship", "PER_CLASS": "20", "SIZE": "32",
                "EPOCHS": "1", "EXPORT": str(tmp_path / "model.pt")}
    for name, value in settings.items():
        monkeypatch.setenv(f"LABELER_TRAIN_{name}", value)
    nb = run_notebook(NOTEBOOK, tmp_path, monkeypatch)

    for tag in FIGURES:
        shown = [out for out in _cell(nb, tag).outputs if "image/png" in out.get("data", {})]
        assert len(shown) == 1, f"cell {tag!r} showed {len(shown)} PNG images, not one"
    data_text = "".join(out.get("text", "") for out in _cell(nb, "data").outputs)
    assert "48 training and 12 validation images of ['airplane', 'cat', 'ship']" in data_text
    table = _cell(nb, "top_losses_table").outputs[0].data["text/plain"]
    for column in ("item", "given", "predicted", "loss", "probability"):
        assert column in table
    assert (tmp_path / "model.pt").stat().st_size > 0
