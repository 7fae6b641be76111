"""The Label tab's labels CSV import (labeler/ui/importing.py), without a browser: every hostile CSV kind, the
person's file named in each message (never the server's temporary copy), and nothing changed by a refused one."""
import pytest

from labeler.hostile import CSV_KINDS, DUPLICATES
from labeler.project import Project
from labeler.ui._panel import guarded
from labeler.ui.importing import ImportLabels, upload_name

KEPT = DUPLICATES[0]


@pytest.fixture
def importer(hostile_corpus, tmp_path):
    with Project(hostile_corpus[0], workspace=tmp_path / "workspace") as project:
        project.store.assign(project.ids_for([KEPT]), "kept")
        said, redraws = [], []

        def show(text, kind="info"):
            said.append((kind, text))
        yield ImportLabels(project, guarded(show), show, lambda: redraws.append(1)), project, said, redraws


def _labels(project) -> dict[str, str]:
    frame = project.labels
    return dict(zip(frame["image_name"], frame["label"]))


@pytest.mark.parametrize("kind", CSV_KINDS, ids=lambda kind: kind.id)
def test_each_hostile_csv_imports_or_says_why_naming_the_persons_file(importer, hostile_label_files, kind):
    box, project, said, redraws = importer
    data = hostile_label_files[kind.id].read_bytes()
    box._run(box.import_bytes, data, f"{kind.id}.csv")
    (level, text), = said
    assert f"{kind.id}.csv" in text and "labeler-import-" not in text and "Traceback" not in text
    if kind.refused:
        assert level == "warning" and kind.refused in text and text.endswith("Nothing changed."), text
        assert _labels(project) == {KEPT: "kept"} and not redraws
    else:
        assert text.startswith(f"Imported {kind.id}.csv: ") and redraws
        assert _labels(project) == {KEPT: "kept", **kind.labels}


def test_an_import_is_one_undoable_action_and_names_the_unknown_files(importer, hostile_label_files):
    box, project, said, _ = importer
    box.import_bytes(hostile_label_files["csv_unknown_names"].read_bytes(), "mine.csv")
    assert "2 rows name files that are not images of this folder ('not/here.png', 'missing.jpg')" in said[-1][1]
    assert project.store.undo().startswith("import labels from mine.csv")
    assert _labels(project) == {KEPT: "kept"}


@pytest.mark.parametrize("data, reason", [(b"", "is empty"), (b"  \n", "is empty")])
def test_an_empty_upload_changes_nothing(importer, data, reason):
    box, project, said, _ = importer
    box.import_bytes(data, "blank.csv")
    assert reason in said[-1][1] and _labels(project) == {KEPT: "kept"}


@pytest.mark.parametrize("given, name", [("labels.csv", "labels.csv"), ("../../etc/passwd", "passwd"),
                                         ("C:\\Users\\me\\my labels.csv", "my labels.csv"), ("", "labels.csv"),
                                         ("..", "labels.csv"), (None, "labels.csv")])
def test_the_browsers_file_name_becomes_one_safe_path_component(given, name):
    assert upload_name(given) == name
