"""`labeler import`, `labeler export` and `labeler labels`: label files from the command line, no embedding."""
import json

import pandas as pd
import pytest

from labeler.cli import main
from labeler.project import Project


@pytest.fixture(autouse=True)
def _no_embedding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("label commands must not embed")
    monkeypatch.setattr("labeler.cli.embed", refuse)


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image_name,tags\na/img_00.png,cat\na/img_01.jpg,dog\nb/img_06.png,cat\nnot/there.png,dog\n")
    return path


def test_import_csv_json_reports_counts_and_unknown_names(image_folder, labels_csv, capsys):
    code, out, _ = run(capsys, "import", image_folder, labels_csv, "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["rows"], report["assigned"], report["labels"], report["unknown"]) == (4, 3, ["cat", "dog"],
                                                                                          ["not/there.png"])


def test_import_csv_prints_a_summary_naming_unknown_files(image_folder, labels_csv, capsys):
    code, out, _ = run(capsys, "import", image_folder, labels_csv)
    assert code == 0
    assert "3 items labeled from 4 rows (2 labels); 1 unknown file names" in out
    assert "not an image of the folder: not/there.png" in out


def test_import_folders_and_multi_label_options(image_folder, tmp_path, capsys):
    tree = tmp_path / "tree"
    for label in ("cat", "indoor"):
        (tree / label / "a").mkdir(parents=True)
        (tree / label / "a" / "img_00.png").symlink_to(image_folder / "a" / "img_00.png")
    code, out, _ = run(capsys, "import", image_folder, "--folders", tree, "--multi-label", "--json")
    assert code == 0 and json.loads(out)["assigned"] == 1
    with Project(image_folder) as project:
        assert project.labels["tags"].tolist() == ["cat indoor"]


def test_import_with_custom_columns_separator_and_delimiter(image_folder, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("file;labels\na/img_00.png;cat|indoor\n")
    code, _, err = run(capsys, "import", image_folder, source, "--image-column", "file", "--label-column", "1",
                       "--sep", ";", "--delimiter", "|", "--multi-label")
    assert code == 0, err
    with Project(image_folder) as project:
        assert project.labels["labels"].tolist() == [["cat", "indoor"]]


def test_export_every_format(image_folder, labels_csv, tmp_path, capsys):
    run(capsys, "import", image_folder, labels_csv)
    code, out, _ = run(capsys, "export", image_folder, "--format", "csv", "--out", tmp_path / "out.csv", "--json")
    assert code == 0 and json.loads(out)["rows"] == 3
    assert pd.read_csv(tmp_path / "out.csv")["tags"].tolist() == ["cat", "dog", "cat"]
    code, out, _ = run(capsys, "export", image_folder, "--format", "folders", "--out", tmp_path / "tree", "--copy")
    copied = tmp_path / "tree" / "dog" / "img_01.jpg"
    assert code == 0 and copied.is_file() and not copied.is_symlink()
    code, out, _ = run(capsys, "export", image_folder, "--format", "hf", "--out", tmp_path / "hf", "--link")
    assert code == 0 and "wrote 3 items" in out and (tmp_path / "hf" / "cat" / "img_00.png").is_symlink()
    assert (tmp_path / "hf" / "labels.csv").read_text().startswith("file_name,label,image_name\n")


def test_export_copy_and_link_exclude_each_other(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(image_folder), "--format", "folders", "--out", str(tmp_path / "x"), "--copy", "--link"])
    assert "argument --link: not allowed with argument --copy" in capsys.readouterr().err


def test_export_into_the_image_folder_is_a_message_naming_the_fix(image_folder, labels_csv, capsys):
    run(capsys, "import", image_folder, labels_csv)
    code, _, err = run(capsys, "export", image_folder, "--format", "hf", "--out", image_folder / "hf")
    assert code == 2 and "is inside the image folder" in err and ".exports" in err and "Traceback" not in err


def test_export_predictions_without_a_model_is_a_message(image_folder, tmp_path, capsys):
    code, _, err = run(capsys, "export", image_folder, "--format", "predictions", "--out", tmp_path / "p.csv")
    assert code == 2 and "No predictions are stored yet; train a model first" in err and "Traceback" not in err


def test_labels_counts_per_label_by_source_with_excluded_and_unlabeled(image_folder, labels_csv, capsys):
    run(capsys, "import", image_folder, labels_csv)
    with Project(image_folder) as project:
        project.store.assign([11], "cat", source="human")
        project.store.exclude([10])
    code, out, _ = run(capsys, "labels", image_folder, "--json")
    summary = json.loads(out)
    assert code == 0
    assert summary["labels"]["cat"] == {"total": 3, "human": 1, "model": 0, "import": 2}
    assert (summary["items"], summary["labeled"], summary["excluded"], summary["unlabeled"]) == (12, 4, 1, 7)
    code, out, _ = run(capsys, "labels", image_folder)
    assert "12 images: 4 labeled, 7 unlabeled, 1 excluded, 0 missing" in out
    assert out.splitlines()[2].split() == ["cat", "3", "1", "0", "2"]


def test_bad_label_file_is_a_message_naming_the_file_not_a_traceback(image_folder, tmp_path, capsys):
    source = tmp_path / "bad.csv"
    source.write_text("file,label\na/img_00.png,cat\n")
    code, _, err = run(capsys, "import", image_folder, source)
    assert code == 2 and "labeler import: error: Label file" in err and "bad.csv' has no column 'image_name'" in err
    assert "Traceback" not in err


def test_import_needs_exactly_one_source(image_folder, labels_csv, tmp_path, capsys):
    code, _, err = run(capsys, "import", image_folder)
    assert code == 2 and "Give either a CSV file" in err
    code, _, err = run(capsys, "import", image_folder, labels_csv, "--folders", tmp_path)
    assert code == 2 and "not both or neither" in err


def test_label_commands_have_help(capsys):
    for command in ("import", "export", "labels"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--workspace" in capsys.readouterr().out


def test_label_commands_take_the_demo_when_no_folder_is_given(image_folder, labels_csv, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setattr("labeler.cli.demo_folder", lambda: image_folder)
    code, out, _ = run(capsys, "import", labels_csv, "--json")       # one positional that is a file: the CSV
    assert code == 0 and json.loads(out)["assigned"] == 3
    code, out, _ = run(capsys, "labels", "--json")
    assert code == 0 and json.loads(out)["folder"] == str(image_folder) and json.loads(out)["labeled"] == 3
    code, out, _ = run(capsys, "export", "--format", "csv", "--out", tmp_path / "out.csv", "--json")
    assert code == 0 and json.loads(out)["rows"] == 3


def test_import_records_the_actor_given(image_folder, labels_csv, capsys):
    from labeler.cli import _parser
    assert "@" in _parser().parse_args(["import", "x.csv"]).actor         # default: user@host
    code, _, err = run(capsys, "import", image_folder, labels_csv, "--actor", "ana@lab")
    assert code == 0, err
    with Project(image_folder) as project:
        assert set(project.labels["actor"]) == {"ana@lab"}


def test_serve_passes_the_actor_to_the_app(monkeypatch):
    import importlib
    import inspect
    seen = {}
    module = importlib.import_module("labeler.ui.serve")   # `labeler.ui.serve` the attribute is the function
    assert "actor" in inspect.signature(module.serve).parameters
    monkeypatch.setattr(module, "serve", lambda folder, **options: seen.update(folder=folder, **options))
    assert main(["serve", "photos", "--actor", "ana@lab", "--port", "5111"]) == 0
    assert seen["folder"] == "photos" and seen["actor"] == "ana@lab" and seen["port"] == 5111
