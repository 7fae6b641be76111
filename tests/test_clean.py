"""Cleaning: label issues, top losses, duplicates and odd files, on generated data (engine.clean, labeler.cleaning)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from engine import embed
from engine.clean import (DuplicateFinder, LabelIssueFinder, duplicate_rows, find_odd_files, image_stats,
                          model_losses, suggest_keep)
from engine.data import InputError
from engine.learner import Predictor
from engine.tasks import get_task
from engine.models import create_model
from labeler.cleaning import COLUMNS, QUEUES, CleaningError, build_queues, empty_queue
from labeler.cli import main
from labeler.io import import_folders
from labeler.project import Project

EMBED = dict(backbone="mobilenet_v2", size=160)


# ---- engine: label issues ---------------------------------------------------------------------------

def _blobs(n_per_class=60, n_classes=3, dims=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(n_classes, dims))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + rng.normal(0, 1, size=(len(y), dims)), y


def test_label_issue_finder_ranks_deliberately_flipped_labels_first():
    X, y = _blobs()
    flipped = np.array([3, 70, 150, 171])
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 3
    finder = LabelIssueFinder().fit(X, noisy)
    top = finder.rows_[np.argsort(-finder.issue_score_)[:len(flipped)]]
    assert set(top) == set(flipped)
    assert finder.is_issue_[np.isin(finder.rows_, flipped)].all()
    assert (finder.suggested_[np.isin(finder.rows_, flipped)] == y[np.sort(flipped)]).all()


def test_label_issue_finder_leaves_out_unlabeled_rows_and_single_item_classes():
    X, y = _blobs()
    y = y.copy()
    y[:5] = -1
    y[10] = 7                               # a class with one item cannot be cross-validated
    finder = LabelIssueFinder().fit(X, y)
    assert not np.isin(finder.rows_, [0, 1, 2, 3, 4, 10]).any()
    assert len(finder.rows_) == len(y) - 6 and finder.pred_probs_.shape == (len(y) - 6, 3)
    assert finder.classes_.tolist() == [0, 1, 2]


def test_label_issue_finder_finds_a_missing_tag_in_multi_label_data():
    X, y = _blobs(n_per_class=50)
    hot = np.zeros((len(y), 3), dtype=bool)
    hot[np.arange(len(y)), y] = True
    wrong = [5, 60, 120]
    hot[wrong] = False
    hot[wrong, (y[wrong] + 1) % 3] = True   # the true tag swapped for another
    finder = LabelIssueFinder().fit(X, hot)
    top = finder.rows_[np.argsort(-finder.issue_score_)[:3]]
    assert set(top) == set(wrong)


@pytest.mark.parametrize("multi", [False, True])
def test_label_issues_are_found_without_forking_the_server(monkeypatch, multi):
    """cleanlab forks a process pool per call by default; from the app's server (threads, BLAS) that fork deadlocked
    the server. Even where cleanlab would count 4 cores, no process pool is made."""
    import importlib.util
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("cleanlab made a multiprocessing.Pool")
    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 4)
    if importlib.util.find_spec("psutil"):          # cleanlab counts physical cores with psutil where it can
        monkeypatch.setattr("psutil.cpu_count", lambda logical=True: 4)
    X, y = _blobs()
    noisy = y.copy()
    noisy[[3, 70]] = (y[[3, 70]] + 1) % 3
    labels = np.eye(3, dtype=bool)[noisy] if multi else noisy
    finder = LabelIssueFinder().fit(X, labels)
    assert finder.is_issue_.any() and len(finder.rows_) == len(y)


def test_label_issue_finder_says_how_many_labels_it_needs():
    X, _ = _blobs()
    with pytest.raises(InputError, match="two labels with two images each"):
        LabelIssueFinder().fit(X, np.r_[0, 0, 1, np.full(len(X) - 3, -1)])
    with pytest.raises(InputError, match="one label per row"):
        LabelIssueFinder().fit(X, np.zeros(3, dtype=int))


# ---- engine: duplicates -------------------------------------------------------------------------------

def test_exact_duplicates_are_grouped_by_content_hash_even_with_different_features():
    features = np.eye(4)
    finder = DuplicateFinder().fit(features, ["a", "b", "a", None])
    assert finder.pairs_[["a", "b", "exact"]].values.tolist() == [[0, 2, True]]
    assert finder.groups_.tolist() == [0, -1, 0, -1]


def test_near_duplicates_form_connected_groups_and_the_threshold_moves_them():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 32))
    copies = base[[0, 0, 3]] + rng.normal(0, 0.15, size=(3, 32))       # rows 5, 6 copy 0; row 7 copies 3
    features = np.vstack([base, copies])
    finder = DuplicateFinder(threshold=0.95).fit(features)
    groups = finder.groups_
    assert groups[0] == groups[5] == groups[6] >= 0 and groups[3] == groups[7] >= 0 and groups[0] != groups[3]
    assert (groups[[1, 2, 4]] == -1).all()
    assert (finder.pairs_["similarity"].diff().dropna() <= 0).all()
    loose = DuplicateFinder(threshold=0.2).fit(features)
    strict = DuplicateFinder(threshold=0.9999).fit(features)
    assert len(strict.pairs_) == 0 < len(finder.pairs_) < len(loose.pairs_)


def test_suggest_keep_picks_the_most_pixels_then_the_largest_file_then_the_first():
    groups = np.array([0, 0, 0, -1, 1, 1])
    pixels = np.array([100, 400, 400, 1, 50, 50])
    sizes = np.array([9, 10, 20, 1, 5, 5])
    assert suggest_keep(groups, pixels, sizes).tolist() == [False, False, True, True, True, False]


def test_duplicate_rows_average_the_cosines_of_each_matrix_by_weight():
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(4, 8)), rng.normal(size=(4, 5))
    rows = duplicate_rows([first, second], [0.75, 0.25])

    def cosines(matrix):
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return unit @ unit.T
    assert np.allclose(rows @ rows.T, 0.75 * cosines(first) + 0.25 * cosines(second), atol=1e-6)
    with pytest.raises(InputError, match=r"weights \[0.5, 0.2\] must give one non-negative weight per matrix"):
        duplicate_rows([first, second], [0.5, 0.2])


def test_duplicate_threshold_out_of_range_is_an_error_naming_the_range():
    with pytest.raises(InputError, match=r"threshold=1.5 must be a cosine similarity in \(0, 1\]"):
        DuplicateFinder(threshold=1.5).fit(np.eye(3))


# ---- engine: odd files ---------------------------------------------------------------------------------

def _noise(path, size=(40, 40), grey=False, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    if grey:
        pixels[:] = pixels[..., :1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_odd_files_lists_unreadable_tiny_blank_wide_and_greyscale_images_with_reasons(tmp_path):
    paths = [_noise(tmp_path / f"ok_{i}.png", seed=i) for i in range(12)]
    paths.append(_noise(tmp_path / "tiny.png", size=(6, 6)))
    paths.append(_noise(tmp_path / "wide.png", size=(200, 20)))
    paths.append(_noise(tmp_path / "grey.png", grey=True))
    Image.new("RGB", (40, 40), (200, 200, 201)).save(tmp_path / "blank.png")
    paths.append(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.append(tmp_path / "broken.jpg")
    stats = image_stats(paths)
    assert len(stats["sha1"].iloc[-1]) == 40 and stats["error"].iloc[-1] and stats["width"].iloc[12] == 6
    odd = find_odd_files(stats)
    reasons = {paths[row].name: reason for row, reason in zip(odd["row"], odd["reason"])}
    assert set(reasons) == {"tiny.png", "wide.png", "grey.png", "blank.png", "broken.jpg"}
    assert reasons["tiny.png"].startswith("tiny: 6x6 px")
    assert reasons["wide.png"].startswith("extreme aspect ratio 10.0:1")
    assert reasons["grey.png"].startswith("greyscale in a colour set")
    assert reasons["blank.png"].startswith("almost blank")
    assert reasons["broken.jpg"].startswith("unreadable: ")
    assert odd["row"].iloc[0] == len(paths) - 1 and (odd["score"].diff().dropna() <= 0).all()


def test_greyscale_is_not_odd_in_a_greyscale_set(tmp_path):
    paths = [_noise(tmp_path / f"g_{i}.png", grey=True, seed=i) for i in range(6)]
    assert find_odd_files(image_stats(paths)).empty


# ---- engine: top losses of a model ------------------------------------------------------------------

def _predictor(task, n_out, labels, **task_args):
    model = create_model(task, "resnet18", n_out, pretrained=False)
    return Predictor(model, get_task(task)(**task_args), labels, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_model_losses_of_a_classifier_are_the_cross_entropy_of_the_given_label(tmp_path):
    items = [_noise(tmp_path / f"{i}.png", seed=i).name for i in range(5)]
    predictor = _predictor("classify", 3, ["a", "b", "c"])
    table = model_losses(predictor, tmp_path, items, ["a", "b", "c", "a", "b"], batch_size=2)
    assert table["row"].tolist() == list(range(5)) and table["loss"].notna().all()
    # where the given label is the predicted one, the loss is -log(its probability)
    same = table["predicted"].to_numpy() == np.array(["a", "b", "c", "a", "b"])
    assert np.allclose(table["loss"][same], -np.log(table["confidence"][same]), atol=1e-4)


def test_model_losses_skip_unreadable_images_and_unknown_labels_with_a_reason(tmp_path):
    _noise(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    table = model_losses(_predictor("classify", 2, ["a", "b"]), tmp_path, ["ok.png", "bad.png", "ok.png"],
                         ["a", "a", "zebra"])
    assert table["loss"].notna().tolist() == [True, False, False]
    assert "not an image" in table["error"][1] and "label 'zebra' is not one the model knows" in table["error"][2]


def test_model_losses_for_multi_label_segmentation_and_regression(tmp_path):
    items = [_noise(tmp_path / f"{i}.png", seed=i).name for i in range(3)]
    multi = model_losses(_predictor("multilabel", 3, ["x", "y", "z"]), tmp_path, items, [["x"], ["x", "z"], []])
    assert multi["loss"].notna().all()
    masks = []
    for i, fill in enumerate([0, 1, 9]):
        mask = np.full((40, 40), fill, dtype=np.uint8)
        mask[:5] = 9                                     # void
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        masks.append(tmp_path / f"m{i}.png")
    seg = model_losses(_predictor("segment", 2, ["road", "sky"], void_code=9, n_classes=2), tmp_path, items, masks)
    assert seg["loss"][:2].notna().all() and np.isnan(seg["loss"][2]) and seg["error"][2] == "only void pixels"
    points = [np.array([[10.0, 20.0]]), np.array([[0.0, 0.0]]), np.array([[39.0, 39.0]])]
    reg = model_losses(_predictor("regress", 2, None, size=32), tmp_path, items, points)
    assert reg["loss"].notna().all() and reg["predicted"].eq("").all()


# ---- labeler.cleaning on a small project --------------------------------------------------------------

def _scene(path, seed, channel, size=64):
    """A smooth background tinted towards one channel (the class), with noise and a few random shapes:
    every seed a distinct picture, the classes told apart by colour."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 120, size=(3, 3, 3)).astype(np.float32)
    low[..., channel] += 130
    background = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
    background += rng.normal(0, rng.uniform(5, 30), size=background.shape)
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        r = int(rng.integers(size // 8, size // 3))
        x, y = (int(v) for v in rng.integers(r, size - r, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def project_folder(tmp_path_factory):
    """24 red and 24 blue images labeled by folder (two of them wrongly), an exact copy, a resized copy,
    and odd files; embedded once (mobilenet_v2 at 160 px, the default)."""
    root = tmp_path_factory.mktemp("clean") / "images"
    for i in range(48):
        _scene(root / ("red" if i % 2 else "blue") / f"{i:03d}.png", seed=i, channel=0 if i % 2 else 2)
    shutil.copy(root / "red/001.png", root / "red/001_copy.png")
    Image.open(root / "blue/002.png").resize((96, 96), Image.BICUBIC).save(root / "blue/002_big.jpg", quality=80)
    Image.new("RGB", (64, 64), (120, 120, 120)).save(root / "blank.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with Project(root) as project:
        import_folders(project, root)
        project.store.assign(project.ids_for(["red/005.png"]), "blue")
        project.store.assign(project.ids_for(["blue/010.png"]), "red")
        embed(project.workspace, **EMBED, workers=0)
    return root


@pytest.fixture
def project(project_folder, tmp_path):
    """A private copy of the embedded project, so a test may change its store."""
    folder = tmp_path / "images"
    shutil.copytree(project_folder, folder, copy_function=shutil.copy2)
    with Project(folder) as opened:
        yield opened



@pytest.mark.weights
def test_build_queues_keeps_the_contract_columns_and_sorts_by_score(project):
    queues = build_queues(project, **EMBED)
    assert tuple(queues) == QUEUES
    for name, table in queues.items():
        assert tuple(table.columns) == COLUMNS, name
        assert (table["score"].diff().dropna() <= 0).all(), name
        assert table["item_id"].dtype == np.int64 and table["keep"].dtype == bool and table["group"].dtype == np.int64
    assert queues["top_losses"].empty
    issues = queues["label_issues"]
    assert set(issues["image_name"][:2]) == {"red/005.png", "blue/010.png"}
    assert issues.set_index("image_name").loc["red/005.png", ["given", "suggested"]].tolist() == ["blue", "red"]
    assert issues["confidence"].between(0, 1).all() and issues["group"].eq(-1).all() and issues["keep"].all()
    odd = queues["odd_files"].set_index("image_name")["reason"]
    assert odd["broken.jpg"].startswith("unreadable: ") and odd["blank.png"].startswith("almost blank")


@pytest.mark.weights
def test_duplicates_queue_groups_an_exact_and_a_resized_copy_and_suggests_the_larger(project):
    table = build_queues(project, **EMBED, queues=("duplicates",))["duplicates"]
    groups = {name: group for name, group in zip(table["image_name"], table["group"])}
    assert groups["red/001.png"] == groups["red/001_copy.png"] >= 0
    assert groups["blue/002.png"] == groups["blue/002_big.jpg"] >= 0
    assert groups["blue/002.png"] != groups["red/001.png"]
    kept = table.set_index("image_name")["keep"]
    assert kept["blue/002_big.jpg"] and not kept["blue/002.png"]
    assert kept[["red/001.png", "red/001_copy.png"]].sum() == 1
    exact = table.set_index("image_name")["reason"]
    assert exact["red/001_copy.png"].startswith("exact copy of red/001.png")
    assert len(table) == 4, table[["image_name", "score", "reason"]]


@pytest.mark.weights
def test_duplicate_threshold_moves_the_candidates_but_only_copies_pass_the_pixel_check(project):
    strict = build_queues(project, **EMBED, queues=("duplicates",), duplicate_threshold=1.0)["duplicates"]
    loose = build_queues(project, **EMBED, queues=("duplicates",), duplicate_threshold=0.3)["duplicates"]
    assert set(strict["image_name"]) == {"red/001.png", "red/001_copy.png"}     # only the exact copy is left
    # a loose threshold compares more pairs pixel by pixel, but look-alikes never pass (it listed > 10 before)
    assert set(loose["image_name"]) == {"red/001.png", "red/001_copy.png", "blue/002.png", "blue/002_big.jpg"}


@pytest.mark.weights
def test_excluded_items_are_left_out_of_every_queue(project):
    gone = project.ids_for(["red/005.png", "red/001_copy.png", "broken.jpg"])
    project.store.exclude(gone, "checked")
    for name, table in build_queues(project, **EMBED).items():
        assert not set(table["item_id"]) & set(gone), name


def test_unknown_queue_names_are_an_error_listing_the_choices(tmp_path):
    _noise(tmp_path / "one.png")
    with Project(tmp_path) as project, pytest.raises(CleaningError, match="Unknown queue.*'labels'.*label_issues, top"):
        build_queues(project, queues=("labels",))


@pytest.mark.weights
def test_cli_clean_json_lists_every_queue_and_writes_cleaned_csv(project, capsys, tmp_path):
    project.store.exclude(project.ids_for(["blue/010.png"]), "wrong")
    cleaned = tmp_path / "cleaned.csv"
    assert main(["clean", str(project.folder), "--json", "--top", "3", "--threshold", "0.98",
                 "--cleaned", str(cleaned)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cleaned"] == {"path": str(cleaned), "rows": 49}
    assert len(pd.read_csv(cleaned)) == 49 and "blue/010.png" not in set(pd.read_csv(cleaned)["image_name"])
    assert list(out["queues"]) == list(QUEUES)
    issues = out["queues"]["label_issues"]
    assert issues["total"] >= 40 and len(issues["rows"]) == 3
    assert set(issues["rows"][0]) >= set(COLUMNS)
    assert issues["rows"][0]["image_name"] == "red/005.png" and issues["rows"][0]["suggested"] == "red"


@pytest.mark.weights
def test_cli_clean_prints_tables_and_rejects_a_bad_threshold(project, capsys):
    assert main(["clean", str(project.folder), "--queue", "odd_files", "duplicates"]) == 0
    out = capsys.readouterr().out
    assert "Odd files: 2 item(s)" in out and "Duplicates: 4 item(s)" in out and "unreadable: " in out
    assert main(["clean", str(project.folder), "--threshold", "2"]) == 2
    assert "threshold=2.0 must be a cosine similarity" in capsys.readouterr().err


def test_empty_queue_frames_are_typed():
    table = empty_queue()
    assert tuple(table.columns) == COLUMNS and isinstance(table, pd.DataFrame) and table.empty
