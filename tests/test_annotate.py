"""bench/annotate/: the simulated annotator sees only what it reviews, pays for every action, and reports."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers import shared_data
from labeler.session import Session

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bench" / "annotate"
# the package by its path, as `bench/annotate.py` imports it, without putting the rest of bench/ on sys.path
_spec = importlib.util.spec_from_file_location("annotate", PACKAGE / "__init__.py",
                                               submodule_search_locations=[str(PACKAGE)])
annotate = importlib.util.module_from_spec(_spec)
sys.modules["annotate"] = annotate
_spec.loader.exec_module(annotate)

EMBED = dict(backbone="resnet18", size=32, batch_size=16, workers=0, pretrained=False)
EMBED_ARGS = {k: v for k, v in EMBED.items() if k not in ("backbone", "size")}
COLOURS = ("red", "green", "blue")


def colour_classes(root: Path, per_class: int = 24) -> Path:
    """Noisy images tinted red, green or blue, in one folder per colour."""
    rng = np.random.default_rng(0)
    for i in range(per_class * len(COLOURS)):
        channel = i % len(COLOURS)
        pixels = rng.integers(0, 70, size=(40, 40, 3), dtype=np.uint8)
        pixels[..., channel] += 170
        (root / COLOURS[channel]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / COLOURS[channel] / f"{i:03d}.png")
    return root


def colour_workspace(tmp_path: Path, per_class: int):
    """The shared workspace of generated colour images, with their features."""
    folder = colour_classes(tmp_path / "images", per_class=per_class)
    return annotate.prepare(folder, tmp_path / "ws", EMBED["backbone"], EMBED["size"], **EMBED_ARGS)


def fresh_project(base, name: str):
    """One policy's empty label store over the workspace, its map drawn from EMBED's features."""
    return annotate.fresh_project(base, name, backbone=EMBED["backbone"], size=EMBED["size"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = colour_classes(tmp_path_factory.mktemp("colours"))
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    truth = annotate.truth_from_folders(paths)
    return annotate.benchmark(folder, truth, tmp_path_factory.mktemp("ws"), progress=lambda text: None,
                              policies=("annotator", "one view", "one at a time"),
                              backbone=EMBED["backbone"], size=EMBED["size"], **EMBED_ARGS)


def test_every_policy_reaches_every_level_with_the_fields_reported(report):
    json.dumps(report)                                   # the --json output is plain JSON
    assert set(report["results"]) == {"annotator", "one view", "one at a time"}
    assert report["classes"] == {name: 24 for name in COLOURS}
    for result in report["results"].values():
        assert [m["level"] for m in result["milestones"]] == list(annotate.LEVELS)
        actions = [m["actions"] for m in result["milestones"]]
        assert None not in actions and actions == sorted(actions)
        for stone in result["milestones"]:
            assert stone["labeled"] >= stone["level"] * result["items"]
            assert 0.0 <= stone["accuracy"] <= 1.0
    assert set(report["ratios"]["annotator"]) == {"vs one view", "vs one at a time"}
    table = annotate.table(report)
    assert "| annotator |" in table and "| one at a time |" in table


def test_one_at_a_time_costs_exactly_one_action_per_image_and_is_never_wrong(report):
    result = report["results"]["one at a time"]
    n = result["items"]
    assert result["actions_by_kind"] == {"one image": result["actions"]}
    for stone in result["milestones"]:
        assert stone["actions"] == stone["labeled"] == int(np.ceil(stone["level"] * n))
        assert stone["accuracy"] == 1.0


def test_costs_add_up_to_the_actions_spent(report):
    for result in report["results"].values():
        assert sum(result["actions_by_kind"].values()) == result["actions"]
        assert result["milestones"][-1]["actions"] <= result["actions"]
    one_view = report["results"]["one view"]["actions_by_kind"]
    assert set(one_view) <= {"lasso", "drop", "label", "label one", "layer", "view"}   # no similar, train, check
    assert one_view.get("layer", 0) + one_view.get("view", 0) <= 2         # to UMAP of the last layer, once


def test_the_annotator_looks_only_at_items_it_reviewed(report):
    for result in report["results"].values():
        assert result["looked_at"] <= result["items"]
    # the labels it typed are what it saw: every human label is right
    assert report["results"]["annotator"]["milestones"][-1]["accuracy"] == 1.0


def test_the_oracle_refuses_items_outside_the_review_grid(tmp_path):
    base = colour_workspace(tmp_path, per_class=4)
    with fresh_project(base, "probe") as project:
        session = Session(project)
        oracle = annotate.Oracle({int(i): "x" for i in session.rows}, session)
        with pytest.raises(annotate.PeekError, match="not in the review grid"):
            oracle.look([int(session.rows[0])])
        session.select(session.rows[:3])
        assert oracle.look(session.rows[:3]) == {int(i): "x" for i in session.rows[:3]}
        with pytest.raises(annotate.PeekError):
            oracle.look([int(session.rows[3])])
        assert oracle.looked == {int(i) for i in session.rows[:3]} and oracle.looks == 3


def test_a_lasso_selects_exactly_the_points_inside_its_polygon(tmp_path):
    base = colour_workspace(tmp_path, per_class=4)
    with fresh_project(base, "lasso") as project:
        session = Session(project)
        desk = annotate.Desk(session, on_change=lambda: None)
        xy = session.coords()
        low, high = np.quantile(xy, 0.2, axis=0), np.quantile(xy, 0.8, axis=0)
        box = np.array([low, [high[0], low[1]], high, [low[0], high[1]]])
        inside = (xy >= low).all(1) & (xy <= high).all(1)
        assert sorted(desk.lasso(box)) == sorted(int(i) for i in session.rows[inside])
        assert desk.actions == 1 and desk.by_kind == {"lasso": 1}


@pytest.mark.slow
@pytest.mark.weights
def test_the_fine_tuning_annotator_fine_tunes_in_one_action_and_lassos_in_the_fine_tuned_layer(tmp_path):
    from labeler.finetune import TrainSpec
    base = colour_workspace(tmp_path, per_class=24)
    truth = annotate.truth_from_folders([item.path for item in base.items()])
    said = []
    result = annotate.run_policy("annotator + fine-tune", base, truth, backbone=EMBED["backbone"], size=EMBED["size"],
                                 progress=said.append, fine_tune_spec=TrainSpec(size=32, batch_size=8, epochs=1))
    assert result["actions_by_kind"]["fine-tune"] == len(result["fine_tune_seconds"]) >= 1
    assert result["milestones"][1]["actions"] is not None     # 80% labeled (this toy set is mostly labeled at 8%)
    assert result["fine_tunes"][0]["seconds"] == result["fine_tune_seconds"][0]
    # each fine-tune is followed by Train, which fits on the fine-tuned layer too
    assert result["actions_by_kind"]["train"] >= len(result["fine_tunes"])
    assert result["trains"][0]["model"].endswith("+model-1")
    assert any("fine-tuned on" in text for text in said)
    # the fine-tuned layer and predictions are this run's own, beside the shared features
    runs = base.root / "runs" / "annotator-+-fine-tune"
    assert (runs / "features" / "model-1-32").is_dir() and not (base.root / "features" / "model-1-32").exists()


def test_a_fresh_project_starts_empty_beside_shared_features(tmp_path):
    base = colour_workspace(tmp_path, per_class=4)
    with fresh_project(base, "first") as project:
        project.store.assign([0, 1], "red")
    with fresh_project(base, "first") as project:
        assert project.store.counts() == {} and len(project.items) == 12


def test_faces_direction_compares_the_nose_tip_with_the_jaw_ends(tmp_path):
    header = ["image_name", "width", "height"] + [f"{axis}{k}" for k in range(68) for axis in "xy"]
    rows = []
    for name, nose in (("a.jpg", 12.0), ("b.jpg", 50.0), ("c.jpg", 88.0), ("c.jpg", 86.0)):
        values = [0.0] * 136
        values[0], values[32], values[60] = 0.0, 100.0, nose     # x0, x16, x30
        rows.append([name, "100", "100"] + [str(v) for v in values])
    path = tmp_path / "keypoints.csv"
    path.write_text("\n".join(",".join(r) for r in [header] + rows) + "\n")
    assert annotate.faces_direction(path) == {"a.jpg": "left", "b.jpg": "frontal", "c.jpg": "right"}


def test_truth_from_csv_takes_the_first_tag(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image_name,tags\na.png,cat\nb/c.png,dog small\n")
    assert annotate.truth_from_csv(path) == {"a.png": "cat", "b/c.png": "dog"}


@pytest.mark.slow
@pytest.mark.data
def test_shared_faces_keypoints_give_three_populated_directions():
    truth = annotate.faces_direction(shared_data("faces") / "keypoints.csv")
    counts = {name: list(truth.values()).count(name) for name in ("left", "frontal", "right")}
    assert len(truth) == 1376 and min(counts.values()) > 300


class RecordingTruth(dict):
    """True labels that remember every item whose label was read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[int] = set()

    def __getitem__(self, item):
        self.read.add(item)
        return super().__getitem__(item)


def test_the_annotator_reads_true_labels_only_of_items_shown_in_its_reviews(tmp_path):
    base = colour_workspace(tmp_path, per_class=16)
    with fresh_project(base, "annotator") as project:
        session = Session(project)
        truth = RecordingTruth({int(i): project.items[int(i)].path.split("/")[0] for i in session.rows})
        desk = annotate.Desk(session, on_change=lambda: None)
        annotate.Annotator(annotate.ANNOTATOR, session, desk, annotate.Oracle(truth, session), goal=0.5).run()
        names, labels = session.human_labels()
        assert (labels[session.rows] >= 0).mean() >= 0.5
        assert truth.read and truth.read <= desk.shown


def test_the_annotator_checks_the_first_models_predictions_and_accepts_what_it_kept(report):
    result = report["results"]["annotator"]
    kinds = result["actions_by_kind"]
    assert kinds.get("train", 0) >= 1
    assert kinds.get("check", 0) >= 1 and kinds.get("accept shown", 0) == kinds["check"]
    checked = sum(out["labeled"] for out in result["checks"].values())
    assert checked > 0


def test_images_outside_class_folders_have_no_folder_label_and_the_error_says_to_give_a_csv():
    with pytest.raises(annotate.TruthError, match=r"1 image\(s\) are not inside a class folder.*--labels CSV"):
        annotate.truth_from_folders(["cat/a.png", "b.png"])


def test_an_unknown_policy_is_refused_before_any_work_with_the_names_allowed(tmp_path):
    with pytest.raises(annotate.PolicyError, match=r"unknown policy 'annotater'; choose from 'annotator', "
                                                   r"'annotator \+ fine-tune', 'one view', 'one at a time'"):
        annotate.benchmark(tmp_path / "nowhere", {}, tmp_path / "ws", policies=["annotater"])
