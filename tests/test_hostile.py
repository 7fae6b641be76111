"""Every kind of hostile input (labeler/hostile.py) through the engine, the label store, CSV import and the exports.

One corpus is written per session (tests/conftest.py) and embedded once per module; each kind then
gets its own test per layer, so a regression names the kind. The command line gets the same corpus
in test_hostile_cli.py.
"""
import csv
import os

import numpy as np
import pandas as pd
import pytest

from engine import FeatureCache, Workspace, embed
from engine.data import ImageReadError, decode_image, discover_images, load_image, printable_path, scan_images
from labeler._files import neutralize, restore_path, safe_cell
from labeler.errors import LabelFileError, LabelStoreError
from labeler.hostile import (CSV_KINDS, DUPLICATES, FILE_KINDS, GOOD, LABEL_KINDS, UNKNOWN_NAMES,
                             write_changing_folder)
from labeler.io import (MAPPING_FILE, export_folders, export_hf_metadata, export_labels_csv, import_folders,
                        import_labels_csv)
from labeler.project import Project
from labeler.store import LabelStore

EMBED = dict(backbone="resnet18", size=32, batch_size=8, workers=0, pretrained=False)
SIZES = {"exif_rotated": (40, 48), "strip_1x20000": (1, 20_000)}   # every other decodable kind is 48 x 40
KEPT = DUPLICATES[0]                                                # labeled before every import
UNLISTED = ("non_utf8_name", "symlink_loop", "named_pipe")           # entries the scan cannot make items of


@pytest.fixture(scope="module")
def embedded(hostile_corpus):
    folder, _ = hostile_corpus
    workspace = Workspace(folder)
    result = embed(workspace, **EMBED)
    cache = FeatureCache(workspace.features_dir("resnet18", 32), backbone="resnet18", size=32)
    done = cache.done_mask(len(workspace.items()))
    return result, {item.path for item in workspace.items() if done[item.id]}


def made_paths(corpus, kind) -> list[str]:
    made = corpus[1][kind.id]
    if made.skip:
        pytest.skip(f"{kind.id}: {made.skip}")
    return made.paths


# ---- engine ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", FILE_KINDS, ids=lambda kind: kind.id)
def test_load_image_decodes_each_kind_or_raises_an_error_naming_the_file_and_reason(hostile_corpus, kind):
    folder = hostile_corpus[0]
    for name in made_paths(hostile_corpus, kind):
        path = folder / name
        if kind.load is not None:
            with pytest.raises(ImageReadError) as caught:
                load_image(path, size=32)
            assert caught.value.path == str(path) and kind.load in caught.value.reason
            continue
        image = load_image(path, size=32)
        assert image.mode == "RGB" and image.size == SIZES.get(kind.id, (48, 40))
        decoded = decode_image(path.read_bytes(), path)
        assert decoded.size == image.size and np.array_equal(np.asarray(decoded), np.asarray(load_image(path)))


def test_transparency_and_sixteen_bits_become_the_colours_a_person_sees(hostile_corpus):
    folder = hostile_corpus[0]
    palette = np.asarray(load_image(folder / "palette.png"))
    assert tuple(palette[0, 0]) == (255, 255, 255) and tuple(palette[15, 15]) == (0, 0, 255)
    grey = np.asarray(load_image(folder / "sixteen_bit.png"))[..., 0]
    assert grey[0, 0] == 0 and grey.max() > 200      # the 16-bit ramp spans the 8-bit range, not only its top


@pytest.mark.parametrize("kind", FILE_KINDS, ids=lambda kind: kind.id)
def test_embed_embeds_each_good_kind_and_reports_each_bad_one_by_name(hostile_corpus, embedded, kind):
    result, done = embedded
    skipped = {entry["path"]: entry["reason"] for entry in result.skipped}
    for name in made_paths(hostile_corpus, kind):
        if kind.embed is None:
            assert name in done and name not in skipped
        else:
            assert name not in done and kind.embed in skipped[printable_path(name)]


def test_embed_of_the_corpus_counts_every_entry_once_and_reports_the_same_on_the_next_run(hostile_corpus,
                                                                                          embedded):
    result, done = embedded
    assert result.embedded == len(done)
    assert len({entry["path"] for entry in result.skipped}) == len(result.skipped)
    again = embed(Workspace(hostile_corpus[0]), **EMBED)
    assert (again.embedded, again.cached) == (0, len(done))
    assert sorted(map(str, again.skipped)) == sorted(map(str, result.skipped))


def test_the_scan_lists_usable_images_and_says_why_it_leaves_out_each_unusable_entry(hostile_corpus):
    folder, made = hostile_corpus
    scan = scan_images(folder)
    left_out = {printable_path(name): kind.embed for kind in FILE_KINDS if kind.id in UNLISTED
                for name in made[kind.id].paths}
    assert {path: reason for path, reason in scan.unusable if path in left_out}.keys() == left_out.keys()
    assert all(left_out[path] in reason for path, reason in scan.unusable)
    assert not {path for path, _ in scan.unusable} & set(scan.paths) and discover_images(folder) == scan.paths


def test_a_folder_changing_during_embed_embeds_the_rest_and_catches_up_on_the_next_run(tmp_path):
    folder = tmp_path / "changing"
    changer = write_changing_folder(folder)
    first = embed(Workspace(folder), **{**EMBED, "batch_size": 2}, progress=changer)
    assert changer.fired
    assert first.embedded == 7 and first.skipped == [{"path": "7.png", "reason": "file not found"}]
    workspace = Workspace(folder)
    second = embed(workspace, **EMBED)
    assert (second.embedded, second.skipped) == (3, [])               # 0.png, 6.png and the new file
    assert [item.path for item in workspace.items() if item.missing] == ["7.png"]
    fresh = Workspace(folder, workspace=tmp_path / "fresh")
    embed(fresh, **EMBED)
    rows = {item.path: item.id for item in workspace.items()}
    fresh_rows = {item.path: item.id for item in fresh.items()}
    cache = FeatureCache(workspace.features_dir("resnet18", 32), backbone="resnet18", size=32)
    fresh_cache = FeatureCache(fresh.features_dir("resnet18", 32), backbone="resnet18", size=32)
    layer = cache.layers[-1]
    for name in ("0.png", "6.png", "added/new.png"):                  # features of the files as they are now
        assert np.array_equal(cache.load(layer)[rows[name]], fresh_cache.load(layer)[fresh_rows[name]])


# ---- the label store ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", LABEL_KINDS, ids=lambda kind: kind.id)
def test_label_names_are_stored_and_read_back_exactly_or_refused_with_the_reason(tmp_path, kind):
    db = tmp_path / "labels.sqlite"
    with LabelStore(db) as store:
        store.assign([0], "kept")
        before = store.version
        if kind.refused:
            with pytest.raises(LabelStoreError, match=kind.refused):
                store.assign([1], kind.name)
            assert store.version == before
        else:
            store.assign([1], kind.name)
    with LabelStore(db) as store:                                     # read back by a new connection
        stored = dict(zip(store.assignments()["item_id"], store.assignments()["label"]))
        expected = {0: "kept"} if kind.refused else {0: "kept", 1: kind.name}
        assert stored == expected and [label.name for label in store.label_defs()] == list(expected.values())


@pytest.fixture
def project(hostile_corpus, tmp_path):
    """The corpus folder with a fresh workspace, one item labeled before anything is imported."""
    with Project(hostile_corpus[0], workspace=tmp_path / "workspace") as opened:
        opened.store.assign(opened.ids_for([KEPT]), "kept")
        yield opened


def labels_by_name(project) -> dict[str, str]:
    frame = project.labels
    return dict(zip(frame["image_name"], frame["label"]))


@pytest.mark.parametrize("kind", CSV_KINDS, ids=lambda kind: kind.id)
def test_csv_import_of_each_kind_imports_or_names_the_file_and_loses_nothing(project, hostile_label_files, kind):
    source = hostile_label_files[kind.id]
    before = project.store.version
    if kind.refused:
        with pytest.raises(LabelFileError) as caught:
            import_labels_csv(project, source)
        assert str(source) in str(caught.value) and kind.refused in str(caught.value)
        assert project.store.version == before and labels_by_name(project) == {KEPT: "kept"}
        return
    report = import_labels_csv(project, source)
    assert labels_by_name(project) == {KEPT: "kept", **kind.labels}
    assert report.unknown == (list(UNKNOWN_NAMES) if kind.id == "csv_unknown_names" else [])
    assert report.empty == (1 if kind.id == "csv_empty_label" else 0)


def test_a_latin1_file_is_refused_naming_the_line_of_its_first_bad_byte(project, hostile_label_files):
    with pytest.raises(LabelFileError, match=r"csv_latin1.csv' is not UTF-8 text \(byte b'\\xe9' on line 2\)"):
        import_labels_csv(project, hostile_label_files["csv_latin1"])


def test_spellings_of_one_file_pool_their_labels_and_disagreeing_ones_are_a_conflict(project, tmp_path):
    source = tmp_path / "spellings.csv"
    source.write_text("image_name,tags\n./-rf.png,a\n-rf.png,b\ngood/good_0.png ,c\n./good/good_0.png,c\n")
    report = import_labels_csv(project, source)
    assert report.conflicts == ["-rf.png"] and labels_by_name(project) == {KEPT: "kept", GOOD[0]: "c"}


def test_a_name_with_blanks_around_it_matches_that_file_exactly_before_a_trimmed_one(project, tmp_path):
    source = tmp_path / "blanks.csv"
    source.write_text("image_name,tags\n name with  spaces .png,exact\n good/good_0.png ,trimmed\n")
    import_labels_csv(project, source)
    assert labels_by_name(project) == {KEPT: "kept", " name with  spaces .png": "exact", GOOD[0]: "trimmed"}


# ---- exports --------------------------------------------------------------------------------

FORMULA_LABELS = {GOOD[0]: "=1+1", GOOD[1]: "+cmd", GOOD[2]: "-2", GOOD[3]: "@SUM(A1)", "-rf.png": "dash",
                  "=1+1.png": "formula", " name with  spaces .png": "<img src=x onerror=alert(1)>"}


@pytest.fixture
def formula_project(project):
    for name, label in FORMULA_LABELS.items():
        project.store.assign(project.ids_for([name]), label)
    return project


def assert_no_formula(cells):
    assert [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")] == []


@pytest.mark.parametrize("name", ["-rf.png", "=1+1.png", "@2x.png", "+1.png", "'=x.png", "a/b.png", " a.png"])
def test_a_path_cell_never_runs_as_a_formula_names_the_same_file_and_reads_back_exactly(name):
    cell = safe_cell("image_name", name)
    assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert os.path.normpath(cell) == os.path.normpath(name) and restore_path(cell) == name
    assert restore_path(neutralize(name)) == name           # exports made before paths were written with ./


def test_csv_export_neutralizes_formula_labels_and_keeps_file_names_openable(formula_project, tmp_path):
    out = tmp_path / "labels.csv"
    export_labels_csv(formula_project, out)
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert_no_formula(cell for row in rows for cell in row)
    written = dict(rows[1:])
    assert (written[GOOD[0]], written[GOOD[2]], written["./-rf.png"], written["./=1+1.png"]) == (
        "'=1+1", "'-2", "dash", "formula")
    assert written[" name with  spaces .png"] == "<img src=x onerror=alert(1)>"
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)                    # as fastai and pandas read it
    assert all((formula_project.folder / name).is_file() for name in frame["image_name"])
    with Project(formula_project.folder, workspace=tmp_path / "again") as fresh:   # and back in, exactly
        import_labels_csv(fresh, out)
        assert labels_by_name(fresh) == labels_by_name(formula_project)


def test_hf_metadata_writes_formula_free_cells_whose_file_names_open(formula_project):
    metadata = formula_project.folder / "metadata-under-test.csv"
    try:
        export_hf_metadata(formula_project, metadata)
        frame = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    finally:
        metadata.unlink(missing_ok=True)
    assert_no_formula(frame.to_numpy().ravel())
    assert "./-rf.png" in set(frame["file_name"])
    assert all((formula_project.folder / os.path.normpath(name)).is_file() for name in frame["file_name"])


def test_folder_export_maps_formula_named_folders_and_files_with_paths_that_open(formula_project, tmp_path):
    tree = tmp_path / "tree"
    export_folders(formula_project, tree, copy=True)
    mapping = pd.read_csv(tree / MAPPING_FILE, dtype=str, keep_default_na=False)
    assert_no_formula(mapping.to_numpy().ravel())
    assert "./=1+1/good_0.png" in set(mapping["file_name"])
    assert all((tree / name).is_file() for name in mapping["file_name"])
    assert all((formula_project.folder / name).is_file() for name in mapping["image_name"])
    assert {"=1+1", "+cmd", "-2", "@SUM(A1)"} <= {path.name for path in tree.iterdir() if path.is_dir()}
    with Project(formula_project.folder, workspace=tmp_path / "again") as fresh:   # the tree imports back exactly
        import_folders(fresh, tree)
        assert labels_by_name(fresh) == labels_by_name(formula_project)
