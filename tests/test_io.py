"""Label import and export: CSV round trips, formula neutralization, class folders, HF metadata, bad files."""
import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from labeler.errors import LabelFileError
from labeler.io import (EXPORT_MARKER, MAPPING_FILE, export_folders, export_hf, export_hf_metadata, export_labels_csv,
                        export_predictions_csv, import_folders, import_labels_csv)
from labeler.project import Project

FORMULA = '=HYPERLINK("x")'


@pytest.fixture
def project(image_folder):
    with Project(image_folder, actor="me") as opened:
        yield opened


@pytest.fixture
def multi_project(image_folder):
    with Project(image_folder, multi_label=True, actor="me") as opened:
        yield opened


def write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def labels_by_name(project):
    frame = project.labels
    column = "tags" if project.store.multi_label else "label"
    return dict(zip(frame["image_name"], frame[column]))


def files_in(tree):
    """The files of an export tree's label folders, as paths relative to it."""
    return sorted(p.relative_to(tree).as_posix() for p in tree.glob("*/*"))


# ---- CSV round trips ------------------------------------------------------------------------

def test_import_then_export_gives_the_same_labels_back(project, tmp_path):
    given = {"a/img_00.png": "cat", "a/img_01.jpg": "dog", "b/img_06.png": FORMULA, "b/img_07.jpg": "-1"}
    source = write_csv(tmp_path / "in.csv", [("image_name", "tags"), *given.items()])
    report = import_labels_csv(project, source)
    assert (report.rows, report.assigned, report.unknown) == (4, 4, [])
    out = tmp_path / "out.csv"
    export_labels_csv(project, out)
    with Project(project.folder, workspace=tmp_path / "fresh") as fresh:
        import_labels_csv(fresh, out)
        assert labels_by_name(fresh) == given


def test_export_loads_in_pandas_in_the_layout_fastai_reads(multi_project, tmp_path):
    multi_project.store.assign(multi_project.ids_for(["a/img_00.png", "a/img_02.png"]), "cat")
    multi_project.store.assign(multi_project.ids_for(["a/img_02.png"]), "indoor")
    out = tmp_path / "labels.csv"
    report = export_labels_csv(multi_project, out)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image_name", "tags"] and report.rows == 2
    assert dict(zip(frame["image_name"], frame["tags"])) == {"a/img_00.png": "cat", "a/img_02.png": "cat indoor"}
    assert all((multi_project.folder / name).is_file() for name in frame.iloc[:, 0])


def test_export_neutralizes_formula_cells_and_import_restores_them(project, tmp_path):
    project.store.assign(project.ids_for(["a/img_00.png"]), FORMULA)
    project.store.assign(project.ids_for(["a/img_02.png"]), "'=already quoted")
    out = tmp_path / "labels.csv"
    export_labels_csv(project, out)
    cells = dict(list(csv.reader(out.open()))[1:])
    assert cells == {"a/img_00.png": "'" + FORMULA, "a/img_02.png": "''=already quoted"}
    project.store.unassign(project.ids_for(["a/img_00.png", "a/img_02.png"]))
    import_labels_csv(project, out)
    assert labels_by_name(project) == {"a/img_00.png": FORMULA, "a/img_02.png": "'=already quoted"}
    assert [label.name for label in project.store.label_defs()] == [FORMULA, "'=already quoted"]


def test_import_is_one_undoable_event(project, tmp_path):
    project.store.assign([0], "kept")
    source = write_csv(tmp_path / "in.csv", [("image_name", "tags"), ("a/img_00.png", "cat"), ("a/img_01.jpg", "dog")])
    import_labels_csv(project, source)
    assert project.store.undo() == "import labels from in.csv (2 items)"
    assert labels_by_name(project) == {"a/img_00.png": "kept"}


def test_import_reports_unknown_file_names_without_guessing(project, tmp_path):
    source = write_csv(tmp_path / "in.csv", [("image_name", "tags"), ("a/img_00.png", "cat"), ("img_01.jpg", "dog"),
                                              ("elsewhere/a/img_02.png", "dog"), ("a/img_03.jpg", "")])
    report = import_labels_csv(project, source)
    assert report.unknown == ["img_01.jpg", "elsewhere/a/img_02.png"]
    assert (report.assigned, report.empty) == (1, 1)
    assert labels_by_name(project) == {"a/img_00.png": "cat"}


def test_import_with_other_columns_separator_and_delimiter(multi_project, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("id;file;labels\n1;a/img_00.png;cat|indoor\n2;b/img_06.png;dog\n")
    import_labels_csv(multi_project, source, image_column="file", label_column=2, label_delimiter="|", sep=";")
    assert labels_by_name(multi_project) == {"a/img_00.png": "cat indoor", "b/img_06.png": "dog"}


def test_single_label_rows_that_disagree_are_reported_as_conflicts(project, tmp_path):
    source = write_csv(tmp_path / "in.csv", [("image_name", "tags"), ("a/img_00.png", "cat"), ("a/img_00.png", "dog")])
    report = import_labels_csv(project, source)
    assert report.conflicts == ["a/img_00.png"] and report.assigned == 0


# ---- bad CSV files: one test per kind -------------------------------------------------------

def test_missing_label_column_names_the_file_the_columns_and_the_option(project, tmp_path):
    source = write_csv(tmp_path / "in.csv", [("image_name", "label"), ("a/img_00.png", "cat")])
    with pytest.raises(LabelFileError, match=r"in.csv' has no column 'tags'; its columns are \['image_name', "
                                             r"'label'\]\. Pass label_column=\.\.\. \(--label-column\)"):
        import_labels_csv(project, source)


def test_wrong_separator_is_suggested_when_the_header_shows_it(project, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("image_name;tags\na/img_00.png;cat\n")
    with pytest.raises(LabelFileError, match=r"separated by ';': pass sep=';' \(--sep\)"):
        import_labels_csv(project, source)


def test_empty_label_file_is_named(project, tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text("")
    with pytest.raises(LabelFileError, match=r"empty.csv' is empty\. It needs a header row"):
        import_labels_csv(project, source)


def test_label_file_in_another_encoding_is_named_with_the_fix(project, tmp_path):
    source = write_csv(tmp_path / "latin.csv", [("image_name", "tags"), ("a/img_00.png", "café")], encoding="latin-1")
    with pytest.raises(LabelFileError, match=r"latin.csv' is not UTF-8 text .*Save it as UTF-8 CSV"):
        import_labels_csv(project, source)


def test_missing_label_file_is_named(project, tmp_path):
    with pytest.raises(LabelFileError, match=r"nowhere.csv' does not exist"):
        import_labels_csv(project, tmp_path / "nowhere.csv")


def test_invalid_label_name_names_the_row_and_saves_nothing(project, tmp_path):
    project.store.assign([5], "kept")
    before = project.store.version
    rows = [("image_name", "tags")] + [(f"a/img_0{i}.{'jpg' if i % 2 else 'png'}", "cat") for i in range(5)]
    source = write_csv(tmp_path / "in.csv", rows + [("b/img_06.png", "x" * 101)])
    with pytest.raises(LabelFileError, match=r"in.csv', row 7: Label name 'xxx.* at most 100 are allowed"):
        import_labels_csv(project, source)
    assert project.store.version == before and labels_by_name(project) == {"a/img_05.jpg": "kept"}


def test_a_failing_import_rolls_back_completely(project, tmp_path, monkeypatch):
    project.store.assign([5], "kept")
    source = write_csv(tmp_path / "in.csv", [("image_name", "tags"), ("a/img_00.png", "cat"), ("a/img_01.jpg", "dog")])

    def fail_while_writing(conn, rows_by_item):
        conn.execute("INSERT INTO assignments VALUES (0, 1, 'import', 0, 'x')")
        raise OSError("disk full")
    with monkeypatch.context() as patch:
        patch.setattr("labeler.store.write_assign", fail_while_writing)
        with pytest.raises(OSError, match="disk full"):
            import_labels_csv(project, source)
    assert labels_by_name(project) == {"a/img_05.jpg": "kept"}
    assert [label.name for label in project.store.label_defs()] == ["kept"]


def test_a_delimiter_inside_a_label_blocks_a_multi_label_export_with_advice(multi_project, tmp_path):
    multi_project.store.assign([0], "golden retriever")
    with pytest.raises(LabelFileError, match=r"\['golden retriever'\] contain the label delimiter ' '.*"
                                             r"label_delimiter=';'"):
        export_labels_csv(multi_project, tmp_path / "out.csv")
    export_labels_csv(multi_project, tmp_path / "out.csv", label_delimiter=";")
    assert pd.read_csv(tmp_path / "out.csv")["tags"].tolist() == ["golden retriever"]


# ---- exports ---------------------------------------------------------------------------------

def test_export_leaves_out_excluded_and_missing_items_and_counts_them(project, tmp_path):
    project.store.assign([0, 1, 2], "cat")
    project.store.exclude([1])
    (project.folder / "a" / "img_02.png").unlink()
    project.refresh_items(rescan=True)
    report = export_labels_csv(project, tmp_path / "out.csv")
    assert (report.rows, report.skipped_excluded, report.skipped_missing) == (1, 1, 1)


def test_export_replaces_the_file_atomically_and_leaves_no_temporary_file(project, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    project.store.assign([0], "cat")
    export_labels_csv(project, out)
    assert out.read_text().startswith("image_name,tags") and os.listdir(tmp_path).count("out.csv") == 1
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_export_folders_links_each_image_by_file_name_under_its_label_and_imports_back(project, tmp_path):
    project.store.assign([0, 6], "cat")
    project.store.assign([1], "a/b")
    report = export_folders(project, tmp_path / "classes")
    link = tmp_path / "classes" / "cat" / "img_00.png"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == project.folder / "a" / "img_00.png"
    assert report.folders == {"cat": "cat", "a/b": "a_b"} and report.rows == 3
    assert files_in(tmp_path / "classes") == ["a_b/img_01.jpg", "cat/img_00.png", "cat/img_06.png"]
    with Project(project.folder, workspace=tmp_path / "fresh") as fresh:
        import_folders(fresh, tmp_path / "classes")
        # the folder a_b stands for the label its labels.csv gives it: the round trip is exact
        assert labels_by_name(fresh) == {"a/img_00.png": "cat", "a/img_01.jpg": "a/b", "b/img_06.png": "cat"}


def test_export_folders_names_clashing_files_stably_and_maps_them_to_their_originals(tmp_path):
    from _helpers import write_image
    folder = tmp_path / "shots"
    for i, sub in enumerate(["day1", "day2", "day3"]):
        write_image(folder / sub / "0015.jpg", seed=i)
    with Project(folder) as project:
        project.store.assign(project.ids_for(["day1/0015.jpg", "day2/0015.jpg", "day3/0015.jpg"]), "cat")
        project.store.assign(project.ids_for(["day2/0015.jpg"]), "dog")        # relabeled
        project.store.assign(project.ids_for(["day3/0015.jpg"]), "Dog")        # another label, one letter's case apart
        report = export_folders(project, tmp_path / "out", copy=True)
        mapping = pd.read_csv(tmp_path / "out" / MAPPING_FILE)
        assert report.folders == {"cat": "cat", "dog": "dog", "Dog": "Dog-2"}
        assert mapping.values.tolist() == [["cat/0015.jpg", "cat", "day1/0015.jpg"],
                                           ["dog/0015.jpg", "dog", "day2/0015.jpg"],
                                           ["Dog-2/0015.jpg", "Dog", "day3/0015.jpg"]]
        project.store.assign(project.ids_for(["day3/0015.jpg"]), "cat")
        export_folders(project, tmp_path / "out", copy=True)
        assert sorted(p.name for p in (tmp_path / "out" / "cat").iterdir()) == ["0015-2.jpg", "0015.jpg"]
        with Project(folder, workspace=tmp_path / "fresh") as fresh:   # copies: matched through labels.csv
            report = import_folders(fresh, tmp_path / "out")
            assert report.unknown == [] and labels_by_name(fresh) == {"day1/0015.jpg": "cat", "day2/0015.jpg": "dog",
                                                                      "day3/0015.jpg": "cat"}


def test_export_folders_puts_a_multi_label_item_in_each_of_its_labels(multi_project, tmp_path):
    multi_project.store.assign([0], "cat")
    multi_project.store.assign([0, 1], "indoor")
    export_folders(multi_project, tmp_path / "tags")
    assert files_in(tmp_path / "tags") == ["cat/img_00.png", "indoor/img_00.png", "indoor/img_01.jpg"]
    mapping = pd.read_csv(tmp_path / "tags" / MAPPING_FILE)
    assert mapping["label"].tolist() == ["cat", "indoor", "indoor"]


def test_export_folders_copies_replace_an_earlier_export_but_never_a_foreign_folder(project, tmp_path):
    project.store.assign([0], "cat")
    out = tmp_path / "classes"
    export_folders(project, out)
    project.store.assign([0], "dog")
    export_folders(project, out, copy=True)
    copied = out / "dog" / "img_00.png"
    assert copied.is_file() and not copied.is_symlink() and not (out / "cat").exists()
    assert (out / EXPORT_MARKER).exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []   # nothing left beside it
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(LabelFileError, match="already exists and is not an earlier labeler export"):
        export_folders(project, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_export_tree_inside_the_image_folder_is_refused_unless_hidden(project, tmp_path):
    project.store.assign([0], "cat")
    with pytest.raises(LabelFileError, match=r"is inside the image folder .* a hidden one inside it"):
        export_folders(project, project.folder / "export")
    export_hf(project, project.folder / ".exports")
    assert project.refresh_items(rescan=True) and len(project.items) == 12


def test_a_failed_export_leaves_the_earlier_one_and_nothing_beside_it(project, tmp_path, monkeypatch):
    project.store.assign([0, 1], "cat")
    out = tmp_path / "classes"
    export_folders(project, out)

    def fail(source, target, copy):
        raise LabelFileError("disk full")
    monkeypatch.setattr("labeler.io.place_file", fail)
    with pytest.raises(LabelFileError, match="disk full"):
        export_folders(project, out)
    assert (out / "cat" / "img_00.png").is_symlink() and sorted(os.listdir(tmp_path)) == ["classes", "images"]


def test_hf_export_of_a_multi_label_project_lists_each_images_labels_in_metadata_jsonl(multi_project, tmp_path):
    multi_project.store.assign([0], "cat")
    multi_project.store.assign([0, 7], "indoor")
    report = export_hf(multi_project, tmp_path / "hf")
    lines = [json.loads(line) for line in (tmp_path / "hf" / "metadata.jsonl").read_text().splitlines()]
    assert lines == [{"file_name": "img_00.png", "labels": ["cat", "indoor"]},
                     {"file_name": "img_07.jpg", "labels": ["indoor"]}]
    assert (tmp_path / "hf" / "img_00.png").is_file() and not (tmp_path / "hf" / "img_00.png").is_symlink()
    assert report.rows == 2 and report.folders == {} and report.format == "hf"


def test_hf_export_of_one_label_says_how_datasets_keeps_its_label_column(project, tmp_path, caplog):
    project.store.assign([0, 1], "cat")
    export_hf(project, tmp_path / "hf", link=True)
    assert (tmp_path / "hf" / "cat" / "img_00.png").is_symlink()
    assert "drop_labels=False" in caplog.text


def test_import_folders_reads_a_class_tree_inside_the_project_folder(tmp_path):
    from _helpers import write_image
    folder = tmp_path / "pets"
    for i, kind in enumerate(["cat", "cat", "dog"]):
        write_image(folder / kind / f"{i}.png", seed=i)
    with Project(folder) as project:
        report = import_folders(project, folder)
        assert (report.rows, report.assigned, report.labels) == (3, 3, ["cat", "dog"])
        assert labels_by_name(project) == {"cat/0.png": "cat", "cat/1.png": "cat", "dog/2.png": "dog"}


def test_hf_metadata_lists_file_names_relative_to_the_metadata_file(project, tmp_path):
    project.store.assign([0], "cat")
    project.store.assign([6], FORMULA)
    report = export_hf_metadata(project, project.folder)
    rows = list(csv.reader((project.folder / "metadata.csv").open()))
    assert rows == [["file_name", "label"], ["a/img_00.png", "cat"], ["b/img_06.png", "'" + FORMULA]]
    assert report.rows == 2
    with pytest.raises(LabelFileError, match="is not in \\(or above\\) the image folder"):
        export_hf_metadata(project, tmp_path / "elsewhere" / "metadata.csv")


def test_predictions_export_has_top_class_confidence_current_label_and_probabilities(project, tmp_path):
    project.store.assign([0], "dog")
    project.store.set_predictions("m", [0, 1], ["cat", "dog"], np.array([[0.25, 0.75], [0.9, 0.1]]))
    export_predictions_csv(project, tmp_path / "pred.csv")
    frame = pd.read_csv(tmp_path / "pred.csv", keep_default_na=False)
    assert list(frame.columns) == ["image_name", "prediction", "confidence", "label", "prob_cat", "prob_dog"]
    assert frame[["image_name", "prediction", "label"]].values.tolist() == [["a/img_00.png", "dog", "dog"],
                                                                           ["a/img_01.jpg", "cat", ""]]
    assert frame["confidence"].tolist() == [0.75, 0.9]
