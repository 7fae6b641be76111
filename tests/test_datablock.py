"""The data block: splitters, labelers, task inference, batches, augmentation geometry, previews."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import write_image
from PIL import Image
from torchvision import tv_tensors

from engine.augment import AugmentError, build_transforms
from engine.data import InputError, discover_images
from engine.datablock import (
    FolderSplit,
    FuncSplit,
    GroupSplit,
    LabelFromCSV,
    LabelFromRegex,
    ListSplit,
    MaskLabel,
    PointsLabel,
    RandomSplit,
    build_data,
    infer_task,
    label_from_folder,
)

ITEMS = [f"{person}/{i:02d}.jpg" for person in ("ann", "bob", "cy", "dee", "eve") for i in range(8)]


def _assert_partition(train_idx, valid_idx, n):
    assert not set(train_idx) & set(valid_idx)
    assert sorted([*train_idx, *valid_idx]) == list(range(n))


# ---------------------------------------------------------------- splitters

@pytest.mark.parametrize("splitter", [RandomSplit(0.25, seed=3), FuncSplit(lambda item: item.endswith("1.jpg")),
                                      GroupSplit(lambda item: item.split("/")[0], valid_pct=0.4, seed=1)],
                         ids=["random", "func", "group"])
def test_splitters_are_deterministic_disjoint_and_complete(splitter):
    train_idx, valid_idx = splitter(ITEMS)
    again = splitter(list(ITEMS))
    assert np.array_equal(train_idx, again[0]) and np.array_equal(valid_idx, again[1])
    _assert_partition(train_idx, valid_idx, len(ITEMS))
    assert 0 < len(valid_idx) < len(ITEMS)


def test_random_split_takes_valid_pct_and_depends_on_seed():
    _, valid_a = RandomSplit(0.25, seed=0)(ITEMS)
    _, valid_b = RandomSplit(0.25, seed=1)(ITEMS)
    assert len(valid_a) == 10 and not np.array_equal(valid_a, valid_b)


def test_group_split_keeps_each_group_on_one_side():
    person = lambda item: item.split("/")[0]
    train_idx, valid_idx = GroupSplit(person, valid_pct=0.4, seed=0)(ITEMS)
    train_people = {person(ITEMS[i]) for i in train_idx}
    valid_people = {person(ITEMS[i]) for i in valid_idx}
    assert not train_people & valid_people and len(valid_people) == 2


def test_folder_split_uses_the_top_folder_and_leaves_out_others():
    items = ["train/a/1.jpg", "valid/a/2.jpg", "train/b/3.jpg", "test/a/4.jpg", "5.jpg"]
    train_idx, valid_idx = FolderSplit()(items)
    assert list(train_idx) == [0, 2] and list(valid_idx) == [1]


def test_list_split_reads_valid_txt_by_file_name_or_relative_path(tmp_path):
    (tmp_path / "valid.txt").write_text("ann/01.jpg\n03.jpg\n\nmissing.jpg\n")
    train_idx, valid_idx = ListSplit(tmp_path / "valid.txt")(ITEMS)
    _assert_partition(train_idx, valid_idx, len(ITEMS))
    assert sorted(ITEMS[i] for i in valid_idx) == ["ann/01.jpg"] + [f"{p}/03.jpg" for p in ("ann", "bob", "cy", "dee",
                                                                                          "eve")]


def test_list_split_with_missing_file_names_the_path():
    with pytest.raises(InputError, match="nope.txt.*is not a file"):
        ListSplit("nope.txt")


def test_random_split_rejects_a_fraction_outside_0_1():
    with pytest.raises(InputError, match=r"valid_pct=1.5 is outside \[0, 1\)"):
        RandomSplit(1.5)


# ---------------------------------------------------------------- labelers and task inference

def test_label_from_folder_gives_the_parent_folder_name():
    assert label_from_folder("train/cats/001.jpg") == "cats"
    with pytest.raises(InputError, match="not inside a folder"):
        label_from_folder("001.jpg")


def test_label_from_csv_matches_by_name_or_stem_and_splits_tags(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image_name,tags\ntrain_0,haze primary\nb.jpg,clear\n")
    assert LabelFromCSV(csv, delimiter=" ")("x/train_0.jpg") == ["haze", "primary"]
    assert LabelFromCSV(csv)("b.jpg") == "clear"
    with pytest.raises(InputError, match="'nope.jpg' has no row"):
        LabelFromCSV(csv)("nope.jpg")
    with pytest.raises(InputError, match="no column 'label'"):
        LabelFromCSV(csv, label_column="label")


def test_label_from_regex_returns_the_first_group():
    labeler = LabelFromRegex(r"([a-z_]+)_\d+\.jpg$")
    assert labeler("pets/great_pyrenees_12.jpg") == "great_pyrenees"
    with pytest.raises(InputError, match="does not match item 'x.png'"):
        labeler("x.png")


def test_points_label_rejects_a_wrong_shape():
    with pytest.raises(InputError, match=r"shape \(3,\), not \(k, 2\)"):
        PointsLabel(lambda item: [1, 2, 3])("a.jpg")


def test_task_is_inferred_from_the_labels():
    assert infer_task(label_from_folder, ["cat"]) == "classify"
    assert infer_task(None, [["a", "b"]]) == "multilabel"
    assert infer_task(None, [np.zeros(3)]) == "regress"
    assert infer_task(MaskLabel(lambda p: p, ["bg", "fg"]), [Path("m.png")]) == "segment"
    assert infer_task(PointsLabel(lambda item: np.zeros((1, 2))), [np.zeros((1, 2))]) == "regress"


# ---------------------------------------------------------------- batches

def _project(tmp_path, n=12) -> tuple[Path, list[str]]:
    folder = tmp_path / "images"
    for i in range(n):
        write_image(folder / ("a" if i % 2 else "b") / f"img_{i:02d}.png", seed=i, size=(40, 30))
        mask = np.zeros((30, 40), np.uint8)
        mask[:, 20:] = 1
        mask[0, 0] = 255
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(folder / "masks" / f"img_{i:02d}.png")
    return folder, [item for item in discover_images(folder) if not item.startswith("masks/")]


LABELERS = {
    "classify": (label_from_folder, torch.int64, lambda b: (b,)),
    "multilabel": (lambda item: ["x", label_from_folder(item)], torch.float32, lambda b: (b, 3)),
    "segment": (MaskLabel(lambda p: Path("masks") / p.name, ["left", "right"], void_code=255), torch.int64,
                lambda b: (b, 32, 32)),
    "regress": (PointsLabel(lambda item: np.array([[5.0, 5.0], [30.0, 20.0], [39.0, 29.0]])), torch.float32,
                lambda b: (b, 6)),
}


@pytest.mark.parametrize("task", list(LABELERS))
def test_batches_have_the_shapes_and_dtypes_of_each_task(tmp_path, task):
    folder, items = _project(tmp_path)
    labeler, y_dtype, y_shape = LABELERS[task]
    data = build_data(folder, items, RandomSplit(0.25), labeler, size=32, batch_size=4)
    assert data.task == task
    for loader in (data.train, data.valid):
        x, y = next(iter(loader))
        assert x.shape == (len(y), 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == y_dtype and tuple(y.shape) == y_shape(len(y))
    assert len(data.items_train) == 9 and len(data.items_valid) == 3
    if task == "segment":
        assert data.n_out == 2 and data.void_code == 255 and set(y.unique().tolist()) <= {0, 1, 255}
    if task == "regress":
        assert data.n_out == 6 and y.abs().max() <= 1.5
    pickle.dumps(data.train.dataset)  # worker processes get a copy


def test_valid_points_scale_to_minus_one_one_of_the_resized_image(tmp_path):
    folder, items = _project(tmp_path)
    data = build_data(folder, items, RandomSplit(0.25), LABELERS["regress"][0], size=32, batch_size=4)
    _, y = next(iter(data.valid))
    expected = torch.tensor([5 / 40, 5 / 30, 30 / 40, 20 / 30, 39 / 40, 29 / 30]) * 2 - 1
    assert torch.allclose(y[0], expected, atol=1e-4)


def test_set_size_changes_the_size_of_later_batches(tmp_path):
    folder, items = _project(tmp_path)
    data = build_data(folder, items, RandomSplit(0.25), label_from_folder, size=32, batch_size=4)
    data.set_size(48)
    assert next(iter(data.train))[0].shape[-2:] == (48, 48)
    assert next(iter(data.valid))[0].shape[-2:] == (48, 48) and data.size == 48


def test_preview_and_show_batch_give_a_uint8_grid(tmp_path):
    folder, items = _project(tmp_path)
    data = build_data(folder, items, RandomSplit(0.25), LABELERS["segment"][0], size=32, batch_size=4)
    grid = data.preview_augmentations(item_index=1, n=8)
    assert grid.shape == (3 * 32 + 2 * 2, 3 * 32 + 2 * 2, 3) and grid.dtype == np.uint8
    assert data.show_batch(n=4).shape == (2 * 32 + 2, 2 * 32 + 2, 3)


def test_unreadable_image_is_skipped_with_a_logged_reason(tmp_path, caplog):
    folder, items = _project(tmp_path, n=6)
    (folder / "a" / "broken.png").write_bytes(b"not an image")
    data = build_data(folder, items + ["a/broken.png"], FuncSplit(lambda item: False), label_from_folder, size=32,
                      batch_size=7, augment=False)
    with caplog.at_level(logging.WARNING, logger="engine.datablock"):
        x, _ = next(iter(data.train))
    assert x.shape[0] == 7
    assert "broken.png" in caplog.text and "skipping unreadable image" in caplog.text


def test_bad_task_and_bad_augment_say_what_is_allowed(tmp_path):
    folder, items = _project(tmp_path, n=4)
    with pytest.raises(InputError, match="task='detect' is not one of"):
        build_data(folder, items, RandomSplit(0.25), label_from_folder, task="detect")
    with pytest.raises(InputError, match="augment=.*max_spin"):
        build_data(folder, items, RandomSplit(0.25), label_from_folder, augment={"max_spin": 3})
    with pytest.raises(AugmentError, match="max_zoom=0.5 is outside"):
        build_transforms(32, max_zoom=0.5)


# ---------------------------------------------------------------- augmentation geometry

STRONG = {"flip": True, "dihedral": True, "max_rotate": 30, "max_zoom": 1.3, "max_warp": 0.3, "max_lighting": 0.2,
          "mean": (0, 0, 0), "std": (1, 1, 1)}


def test_mask_gets_the_same_geometric_transform_as_its_image():
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    image[0, :, :32], image[2, :, 32:] = 255, 255  # left red, right blue
    mask = torch.zeros(48, 64, dtype=torch.uint8)
    mask[:, :32] = 1
    transform = build_transforms(32, mask_fill=255, **STRONG)
    for _ in range(20):
        out = transform({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)})
        red = out["image"][0] > out["image"][2] + 0.2
        inside = out["mask"] != 255
        agree = (red == (out["mask"] == 1))[inside].float().mean()
        assert agree > 0.95


def test_points_follow_the_image():
    points = torch.tensor([[12.0, 20.0], [50.0, 9.0]])
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    for x, y in points.int().tolist():
        image[:, y - 1:y + 2, x - 1:x + 2] = 255
    transform = build_transforms(32, **STRONG)
    checked = 0
    for _ in range(20):
        out = transform({"image": tv_tensors.Image(image), "points": tv_tensors.KeyPoints(points, canvas_size=(48, 64))})
        bright = out["image"].mean(0)
        for x, y in out["points"].round().int().tolist():
            if 1 <= x < 31 and 1 <= y < 31:
                assert bright[y - 1:y + 2, x - 1:x + 2].max() > 0.3 + bright.mean()
                checked += 1
    assert checked > 10
