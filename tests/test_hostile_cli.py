"""Every kind of hostile input (labeler/hostile.py) through `python -m labeler.cli`, as a person runs it.

Each command runs in a subprocess, so what is asserted is what a person sees: the exit code, a
message naming the file and the reason, and never a Python traceback.
"""
import csv
import json
import subprocess
import sys

import pytest

from engine.data import printable_path
from labeler.hostile import CSV_KINDS, FILE_KINDS, GOOD, LABEL_KINDS
from labeler.project import Project

TRACEBACK = "Traceback (most recent call last)"


def labeler(*argv, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "labeler.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout)
    assert TRACEBACK not in done.stdout + done.stderr, done.stderr[-3000:]
    return done


@pytest.mark.weights
@pytest.mark.slow
def test_embed_prints_each_bad_file_with_its_reason_and_embeds_the_rest(hostile_corpus, tmp_path):
    folder, made = hostile_corpus
    done = labeler("embed", folder, "--workspace", tmp_path / "ws", "--size", "32", "--workers", "0")
    assert done.returncode == 0
    bad = {name: kind for kind in FILE_KINDS if kind.embed for name in made[kind.id].paths}
    for name, kind in bad.items():
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"  skipped {printable_path(name)}: "))
        assert kind.embed in line
    good = sum(len(made[kind.id].paths) for kind in FILE_KINDS if kind.embed is None)
    assert done.stdout.startswith(f"{good} embedded, 0 cached, {len(bad)} skipped")
    again = json.loads(labeler("embed", folder, "--workspace", tmp_path / "ws", "--size", "32", "--json").stdout)
    assert (again["embedded"], again["cached"], len(again["skipped"])) == (0, good, len(bad))


def open_project(folder, workspace, kept: dict | None = None) -> dict[str, str]:
    """Label `kept` in the project (in this process); returns its labels as image name -> label."""
    with Project(folder, workspace=workspace) as project:
        for name, label in (kept or {}).items():
            project.store.assign(project.ids_for([name]), label)
        return dict(zip(project.labels["image_name"], project.labels["label"]))


@pytest.mark.parametrize("kind", CSV_KINDS, ids=lambda kind: kind.id)
def test_import_of_each_csv_kind_exits_cleanly_naming_the_file_and_the_reason(hostile_corpus, hostile_label_files,
                                                                               kind, tmp_path):
    folder, workspace = hostile_corpus[0], tmp_path / "ws"
    open_project(folder, workspace, {GOOD[5]: "kept"})
    done = labeler("import", folder, hostile_label_files[kind.id], "--workspace", workspace)
    labels = open_project(folder, workspace)
    if kind.refused:
        assert done.returncode == 2 and done.stdout == ""
        assert f"labeler import: error: Label file {str(hostile_label_files[kind.id])!r}" in done.stderr
        assert kind.refused in done.stderr
        assert labels == {GOOD[5]: "kept"}                                         # nothing lost, nothing added
    else:
        assert done.returncode == 0 and done.stderr.count("\n") <= 1              # at most the unknown-names warning
        assert f"{len(kind.labels)} items labeled" in done.stdout
        assert labels == {GOOD[5]: "kept", **kind.labels}
    if kind.id == "csv_unknown_names":
        assert "not an image of the folder: not/here.png" in done.stdout


@pytest.mark.parametrize("kind", LABEL_KINDS, ids=lambda kind: kind.id)
def test_each_hostile_label_name_is_imported_exactly_or_refused_naming_the_row(hostile_corpus, kind, tmp_path):
    folder, workspace = hostile_corpus[0], tmp_path / "ws"
    source = write_csv(tmp_path / "name.csv", {GOOD[0]: "kept", GOOD[1]: kind.name})
    done = labeler("import", folder, source, "--workspace", workspace)
    if kind.id in ("label_empty", "label_blank"):            # an empty cell is a row without a label, not an error
        assert done.returncode == 0 and "1 rows without a label" in done.stdout
        assert open_project(folder, workspace) == {GOOD[0]: "kept"}
    elif kind.refused:
        assert done.returncode == 2 and "name.csv', row 3: Label name" in done.stderr and kind.refused in done.stderr
        assert open_project(folder, workspace) == {}
    else:
        assert done.returncode == 0 and open_project(folder, workspace) == {GOOD[0]: "kept", GOOD[1]: kind.name}


def test_export_and_labels_commands_neutralize_formulas_and_keep_odd_file_names(hostile_corpus, tmp_path):
    folder, workspace = hostile_corpus[0], tmp_path / "ws"
    given = {**{GOOD[i]: kind.name for i, kind in enumerate(k for k in LABEL_KINDS if not k.refused)},
             "-rf.png": "dash", "=1+1.png": "formula", "line\nbreak.png": "newline", " name with  spaces .png": "sp"}
    open_project(folder, workspace, given)
    out = tmp_path / "out.csv"
    done = labeler("export", folder, "--workspace", workspace, "--format", "csv", "--out", out)
    assert done.returncode == 0 and done.stdout.startswith(f"wrote {len(given)} items")
    rows = dict(list(csv.reader(out.open(newline="", encoding="utf-8")))[1:])
    assert [cell for pair in rows.items() for cell in pair if cell[:1] in "=+-@\t\r"] == []
    assert rows == {(f"./{name}" if name[0] in "=+-@" else name): ("'" + label if label[0] in "=+-@" else label)
                    for name, label in given.items()}
    labels = labeler("labels", folder, "--workspace", workspace)
    assert labels.returncode == 0 and f"{len(given)} labeled" in labels.stdout


def write_csv(path, labels: dict):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("image_name", "tags"), *labels.items()])
    return path
