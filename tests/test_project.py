"""Project: the image folder, its items and its labels, opened together and restored on reopening."""
import time

import numpy as np
import pytest

from _helpers import write_image
from labeler.project import Project
from labeler.store import LabelStoreError


def test_reopening_a_project_restores_labels_definitions_exclusions_predictions_and_history(image_folder):
    with Project(image_folder, actor="me") as project:
        cat, dog = project.ids_for(["a/img_00.png", "b/img_07.jpg"])
        project.store.assign([cat], "cat")
        project.store.assign([dog], "dog")
        project.store.recolour_label("dog", "#00ff00")
        project.store.exclude([project.ids_for(["a/img_01.jpg"])[0]], reason="blurry")
        project.store.set_predictions("m", [cat, dog], ["cat", "dog"], np.array([[0.9, 0.1], [0.2, 0.8]]))
        labels, defs, version = project.labels, project.store.label_defs(), project.store.version
    with Project(image_folder, actor="me") as reopened:
        assert reopened.labels.equals(labels)
        assert reopened.store.label_defs() == defs and reopened.store.version == version
        assert reopened.store.excluded() == {1}
        assert reopened.store.predictions()[0] == "m"
        assert reopened.store.undo(actor="me") == "exclude 1 item"


def test_files_added_later_get_new_ids_and_old_ids_stay(image_folder):
    with Project(image_folder) as project:
        before = {item.path: item.id for item in project.items}
        project.store.assign(project.ids_for(["b/img_11.jpg"]), "cat")
    write_image(image_folder / "a" / "aaa_first_by_name.png", seed=50)
    with Project(image_folder) as project:
        after = {item.path: item.id for item in project.items}
        assert {path: after[path] for path in before} == before
        assert after["a/aaa_first_by_name.png"] == len(before)
        assert project.labels.set_index("image_name").loc["b/img_11.jpg", "label"] == "cat"


def test_removed_files_are_marked_missing_and_keep_their_labels(image_folder):
    with Project(image_folder) as project:
        project.store.assign(project.ids_for(["a/img_02.png"]), "cat")
    (image_folder / "a" / "img_02.png").unlink()
    with Project(image_folder) as project:
        row = project.labels.set_index("image_name").loc["a/img_02.png"]
        assert (row["label"], bool(row["missing"])) == ("cat", True)
        assert project.summary()["missing"] == 1


def test_labels_frame_single_label_has_one_row_per_labeled_item(image_folder):
    with Project(image_folder) as project:
        project.store.assign(project.ids_for(["a/img_00.png", "a/img_02.png"]), "cat", source="human")
        frame = project.labels
    assert list(frame.columns[:4]) == ["item_id", "image_name", "label", "source"]
    assert frame["image_name"].tolist() == ["a/img_00.png", "a/img_02.png"]
    assert frame["label"].tolist() == ["cat", "cat"]


def test_labels_frame_multi_label_lists_labels_and_tags(image_folder):
    with Project(image_folder, multi_label=True) as project:
        first = project.ids_for(["a/img_00.png"])
        project.store.assign(first, "cat")
        project.store.assign(first, "indoor", source="model")
        row = project.labels.iloc[0]
    assert (row["image_name"], row["labels"], row["tags"], row["source"]) == (
        "a/img_00.png", ["cat", "indoor"], "cat indoor", "human,model")


def test_ids_for_accepts_absolute_paths_inside_the_folder(image_folder):
    with Project(image_folder) as project:
        assert project.ids_for([image_folder / "a" / "img_00.png", "./a/img_01.jpg"]) == [0, 1]


def test_summary_counts_labeled_unlabeled_excluded_and_sources(image_folder):
    with Project(image_folder) as project:
        project.store.assign([0, 1], "cat")
        project.store.assign([2], "cat", source="model")
        project.store.exclude([1, 5])
        summary = project.summary()
    assert (summary["items"], summary["labeled"], summary["excluded"], summary["unlabeled"]) == (12, 2, 2, 8)
    assert summary["labels"]["cat"] == {"total": 3, "human": 2, "model": 1, "import": 0}


def test_unknown_paths_are_listed_with_the_fix(image_folder):
    with Project(image_folder) as project:
        with pytest.raises(LabelStoreError, match=r"2 path\(s\) are not images of .*: 'nope.png', 'a/x.jpg'\. "
                                                  r"Give paths relative to that folder"):
            project.ids_for(["a/img_00.png", "nope.png", "a/x.jpg"])


def test_reopening_with_the_other_mode_after_labeling_is_refused(image_folder):
    with Project(image_folder) as project:
        project.store.assign([0], "cat")
    with pytest.raises(LabelStoreError, match="already single-label and has assignments; multi_label=True"):
        Project(image_folder, multi_label=True)


@pytest.mark.weights
def test_prepare_builds_thumbnails_then_features_and_then_nothing_is_left_to_do(image_folder):
    stages = []
    with Project(image_folder, backbone="mobilenet_v2", size=32) as project:
        assert project.needs_preparing()
        project.prepare(lambda stage, done, total: stages.append(stage))
        assert not project.needs_preparing()
        n = len(project.items)
        assert project.thumbs.done_mask().sum() == n and project.features().done_mask(n).sum() == n
    assert stages.index("Making thumbnails") < stages.index("Computing features (mobilenet_v2)")


@pytest.mark.weights
def test_a_file_that_cannot_be_read_is_not_retried_on_every_opening_until_it_changes(image_folder):
    """A folder with an unreadable file once opened with "Opening..." and a new prepare on every visit."""
    (image_folder / "broken.png").write_bytes(b"not an image")
    with Project(image_folder, backbone="mobilenet_v2", size=32) as project:
        project.prepare()
        broken = project.ids_for(["broken.png"])[0]
        assert broken in project.thumbs.failures and broken in project.features().failures
        assert not project.needs_preparing()
    time.sleep(0.01)
    (image_folder / "broken.png").write_bytes(b"still not an image, but changed")
    with Project(image_folder, backbone="mobilenet_v2", size=32) as project:
        assert project.needs_preparing()


@pytest.mark.weights
def test_a_projection_key_names_the_exact_rows_so_the_app_and_the_cli_share_it(image_folder):
    with Project(image_folder, backbone="mobilenet_v2", size=32) as project:
        project.prepare()
        cache = project.features()
        key = cache.projection_key("features.13", "both", np.array([0, 1, 2]))
        assert key == cache.projection_key("features.13", "both", [0, 1, 2])
        assert key != cache.projection_key("features.13", "both", [0, 1, 3])      # as many rows, other images
        assert key.startswith(f"mobilenet_v2-32/features.13/both/v{cache.version}/rows-3-")
