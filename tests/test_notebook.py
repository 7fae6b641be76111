"""The example notebook runs headless on a small folder of real digits and shows the app and the labels."""
from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import run_notebook
from labeler.testing import copy_demo_digits

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "label_in_jupyter.ipynb"
PER_CLASS = 6  # 60 images: enough to project, quick to embed
PANEL_MIMES = ("application/vnd.holoviews_exec.v0+json", "application/vnd.holoviews_load.v0+json")

pytestmark = pytest.mark.slow


@pytest.fixture
def digits(tmp_path) -> Path:
    """60 real handwritten digits from the built-in demo (6 per class), in a fresh folder."""
    return copy_demo_digits(tmp_path / "digits", per_class=PER_CLASS)


def _cell(nb, tag: str):
    found = [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_EXAMPLE_FOLDER", str(digits))
    nb = run_notebook(NOTEBOOK, tmp_path, monkeypatch, timeout=120)

    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [out for out in cell.outputs if out.output_type == "error"]
            assert not errors, f"{cell.source!r} raised {errors[0].ename}: {errors[0].evalue}"

    # the folder cell saw the environment variable
    folder_out = [out for out in _cell(nb, "folder").outputs if out.output_type == "execute_result"]
    assert folder_out and str(digits) in folder_out[0].data["text/plain"]

    # notebook_extension loaded Bokeh/Panel's JavaScript inline (under nbclient no Jupyter server serves it)
    setup_mimes = {mime for out in _cell(nb, "setup").outputs for mime in out.get("data", {})}
    assert "application/vnd.holoviews_load.v0+json" in setup_mimes, setup_mimes

    # the app cell displayed a Panel mime bundle, and it is the app itself, not the opening progress bar
    bundles = [out.data for out in _cell(nb, "app").outputs if out.output_type in ("execute_result", "display_data")]
    assert bundles, "the app cell displayed nothing"
    panel_bundles = [data for data in bundles if any(mime in data for mime in PANEL_MIMES)]
    assert panel_bundles, [sorted(data) for data in bundles]
    html = panel_bundles[-1].get("text/html", "")
    assert "docs_json" in html and "panel.models" in html  # an embedded Bokeh document of Panel models
    assert "Find similar" in html and "opening-progress" not in html  # the built app, not its progress bar

    # the labels cell shows the labeled rows
    from labeler.project import Project
    with Project(digits) as project:
        table = project.labels
    assert len(table) == 5
    assert sorted(table["label"].value_counts().items()) == [("first look", 3), ("second look", 2)]
    shown = [out for out in _cell(nb, "labels").outputs if out.output_type == "execute_result"]
    assert shown, "the labels cell returned nothing"
    text = shown[0].data["text/plain"]
    for name in table["image_name"]:
        assert name in text
    assert text.count("first look") == 3 and text.count("second look") == 2
    assert "text/html" in shown[0].data  # pandas' HTML table
