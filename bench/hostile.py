"""Every kind of hostile input (labeler/hostile.py) through the engine, the label store and the command line.

Prints a Markdown table for the README: kind | what it is | engine | store | CLI, each cell the
short outcome. Engine: `engine.embed` (resnet18, random weights, 32 px) on the generated folder.
Store: image files as rows of a label CSV imported into the project; label names given to
`LabelStore`; label CSVs imported with `import_labels_csv` (an unreadable file is still an item,
so it can be labeled). CLI: `python -m labeler.cli embed` /
`import` / `export` in a subprocess (embed uses the pretrained default backbone). A cell reads
TRACEBACK if a Python traceback ever shows.

    .venv/bin/python bench/hostile.py
"""
from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import Workspace, embed  # noqa: E402
from engine.data import printable_path  # noqa: E402
from labeler.errors import USER_ERRORS  # noqa: E402
from labeler.hostile import (CHANGING_FOLDER, CSV_KINDS, DUPLICATES, FILE_KINDS, GOOD, LABEL_KINDS,  # noqa: E402
                             write_changing_folder, write_image_corpus, write_label_files)
from labeler.io import import_labels_csv  # noqa: E402
from labeler.project import Project  # noqa: E402
from labeler.store import LabelStore  # noqa: E402

EMBED = dict(backbone="resnet18", size=32, batch_size=8, workers=0, pretrained=False)
TRACEBACK = "Traceback (most recent call last)"
NONE = "—"
KEPT = DUPLICATES[0]   # labeled before each label CSV is imported; no CSV names it, so it must survive


def short(text: str, limit: int = 80) -> str:
    """The first sentence of a message, with folders dropped from paths and at most `limit` characters."""
    text = re.sub(r"'(/[^']*/)([^'/]+)'", r"'\2'", str(text))
    text = re.split(r"\.\s(?=[A-Z])|; rename| \(image file|, e\.g\.|, 0 rows", text)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labeler(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labeler.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=600)


def cli_outcome(done: subprocess.CompletedProcess, success: str | None = None) -> str:
    """TRACEBACK, `success` (default: "exit 0: " and the first line printed) or the exit code and the error."""
    if TRACEBACK in done.stdout + done.stderr:
        return "TRACEBACK"
    if done.returncode == 0:
        return success or f"exit 0: {short(done.stdout.splitlines()[0] if done.stdout else '')}"
    message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return f"exit {done.returncode}: {short(message.split('error: ', 1)[-1])}"


def joined(outcomes: list[str]) -> str:
    return "; ".join(dict.fromkeys(outcomes)) if outcomes else NONE


# ---- image files ---------------------------------------------------------------------------------

def file_rows(root: Path) -> list[tuple]:
    folder = root / "images"
    made = write_image_corpus(folder)
    engine = embed_outcomes(folder)
    store = store_outcomes(folder, made, root / "files.csv")
    cli = cli_embed_outcomes(folder, root / "cli-ws")
    app = app_open_outcomes(folder, root / "app-ws")
    rows = []
    for kind in FILE_KINDS:
        entry = made[kind.id]
        if entry.skip:
            rows.append((kind, *(f"n/a: {entry.skip}",) * 4))
            continue
        shown = [printable_path(name) for name in entry.paths]
        rows.append((kind, joined([engine.get(name, "not listed") for name in shown]),
                     joined([store[name] for name in shown]), joined([cli(name) for name in shown]),
                     joined([app.get(name, "not listed") for name in shown])))
    return rows


def app_open_outcomes(folder: Path, workspace: Path) -> dict[str, str]:
    """The folder opened as the app opens it (`Project.prepare`, the default backbone): on the map, or left out
    and said on opening (`ui.opening.left_out`), with a card in the Clean tab's odd files when it is an item."""
    from labeler.cleaning import build_queues
    from labeler.ui.opening import left_out
    with Project(folder, workspace=workspace) as project:
        project.prepare()
        said = left_out(project)
        done = project.features().done_mask(len(project.items))
        odd = set(build_queues(project, queues=("odd_files",))["odd_files"]["item_id"].tolist())
        outcomes = {}
        for item in project.items:
            if done[item.id]:
                outcomes[item.path] = "on the map"
            else:
                card = "an odd files card" if item.id in odd else "NO ODD FILES CARD"
                outcomes[item.path] = f"left out, said on opening; {card}" if said else "LEFT OUT UNSAID"
        for entry in project.workspace.unusable:
            outcomes[entry["path"]] = ("left out, said on opening (not an item)" if entry["path"] in said
                                       or "entries named like images cannot be used" in said else "LEFT OUT UNSAID")
    return outcomes


def embed_outcomes(folder: Path) -> dict[str, str]:
    workspace = Workspace(folder)
    try:
        result = embed(workspace, **EMBED)
    except Exception as err:  # noqa: BLE001 - the table reports what escaped
        return {item.path: f"EXCEPTION {type(err).__name__}" for item in workspace.items()}
    skipped = {entry["path"]: f"skipped: {short(entry['reason'])}" for entry in result.skipped}
    return {**{item.path: "embedded" for item in workspace.items()}, **skipped}


def store_outcomes(folder: Path, made: dict, source: Path) -> dict[str, str]:
    """Each file as a row of a label CSV: labeled, or reported as not an image of the folder."""
    names = [printable_path(name) for entry in made.values() for name in entry.paths]
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("image_name", "tags"), *((name, "x") for name in names)])
    with Project(folder, workspace=source.parent / "store-ws") as project:
        report = import_labels_csv(project, source)
    unknown = set(report.unknown)
    return {name: "reported: not an image of the folder" if name in unknown else "labeled" for name in names}


def cli_embed_outcomes(folder: Path, workspace: Path):
    done = labeler("embed", folder, "--workspace", workspace, "--size", "32", "--workers", "0")
    lines = {line[len("  skipped "):].split(": ", 1)[0]: line.split(": ", 1)[1]
             for line in done.stdout.splitlines() if line.startswith("  skipped ")}
    if TRACEBACK in done.stdout + done.stderr or done.returncode:
        return lambda name: cli_outcome(done, "")
    return lambda name: f"prints skipped: {short(lines[name])}" if name in lines else "embedded"


# ---- label names and label files ----------------------------------------------------------------

def label_rows(root: Path) -> list[tuple]:
    folder = root / "images"
    rows = []
    for kind in LABEL_KINDS:
        rows.append((kind, NONE, store_name_outcome(root / kind.id, kind.name),
                     cli_name_outcome(folder, root / kind.id, kind.name),
                     app_name_outcome(folder, root / kind.id / "app-ws", kind.name)))
    return rows


def app_name_outcome(folder: Path, workspace: Path, name: str) -> str:
    """The name typed into the Label tab's new-label field for a selected image (`LabelApp._on_new_label`:
    blanks around it dropped, an empty field ignored), through the app's guard (an error becomes a message)."""
    from labeler.session import Session
    from labeler.ui._panel import guarded
    if not name.strip():
        return "Enter in an empty field does nothing"
    said = []
    with Project(folder, workspace=workspace) as project:
        session = Session(project)
        session.select(project.ids_for([GOOD[0]]))
        count = guarded(lambda text, kind: said.append(text))(session.label_review, name.strip())
        back = project.store.assignments()["label"].tolist()
    if said:
        return f"message: {short(said[0])}"
    return "labeled; shown as text" if count == 1 and back == [name.strip()] else f"CHANGED to {back!r}"


def store_name_outcome(where: Path, name: str) -> str:
    where.mkdir()
    with LabelStore(where / "labels.sqlite") as store:
        try:
            store.assign([0], name)
        except USER_ERRORS as err:
            return f"refused: {short(err)}"
        back = store.assignments()["label"].tolist()
    return "stored and read back exactly" if back == [name] else f"CHANGED to {back!r}"


def cli_name_outcome(folder: Path, where: Path, name: str) -> str:
    source, out = where / "name.csv", where / "out.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("image_name", "tags"), (GOOD[0], name)])
    done = labeler("import", folder, source, "--workspace", where / "ws")
    if done.returncode or TRACEBACK in done.stdout + done.stderr or "1 rows without a label" in done.stdout:
        return cli_outcome(done, "imported as a row without a label")
    exported = labeler("export", folder, "--workspace", where / "ws", "--format", "csv", "--out", out)
    if exported.returncode:
        return cli_outcome(exported, "")
    cell = list(csv.reader(out.open(newline="", encoding="utf-8")))[1][1]
    return "imported; exported as it is" if cell == name else f"imported; exported as `{cell}`"


def csv_rows(root: Path) -> list[tuple]:
    folder = root / "images"
    files = write_label_files(root / "label-files")
    rows = []
    for kind in CSV_KINDS:
        rows.append((kind, NONE, store_csv_outcome(folder, files[kind.id], root / f"{kind.id}-ws"),
                     cli_outcome(labeler("import", folder, files[kind.id], "--workspace", root / f"{kind.id}-cli")),
                     app_csv_outcome(folder, files[kind.id], root / f"{kind.id}-app")))
    return rows


def app_csv_outcome(folder: Path, source: Path, workspace: Path) -> str:
    """The file picked in the Label tab's "Import labels CSV" (`ui.importing.ImportLabels`): its message."""
    from labeler.ui._panel import guarded
    from labeler.ui.importing import ImportLabels
    said = []
    with Project(folder, workspace=workspace) as project:
        project.store.assign(project.ids_for([KEPT]), "kept")
        box = ImportLabels(project, guarded(lambda text, kind: said.append(text)), lambda text, kind:
                           said.append(text), lambda: None)
        box._run(box.import_bytes, source.read_bytes(), source.name)
        kept = dict(zip(project.labels["image_name"], project.labels["label"])).get(KEPT) == "kept"
    return f"message: {short(said[-1], 100)}" + ("" if kept else "; EARLIER LABEL LOST")


def store_csv_outcome(folder: Path, source: Path, workspace: Path) -> str:
    """Import into a project holding one earlier label; say what happened and whether that label survived."""
    with Project(folder, workspace=workspace) as project:
        project.store.assign(project.ids_for([KEPT]), "kept")
        try:
            report = import_labels_csv(project, source)
            outcome = f"imported {report.assigned}" + (f", {len(report.unknown)} unknown reported" if report.unknown
                                                       else "") + (f", {report.empty} without a label"
                                                                   if report.empty else "")
        except USER_ERRORS as err:
            outcome = f"refused: {short(err)}"
        kept = dict(zip(project.labels["image_name"], project.labels["label"])).get(KEPT) == "kept"
    return outcome + ("" if kept else "; EARLIER LABEL LOST")


# ---- a folder changing while it is embedded -----------------------------------------------------

def changing_row(root: Path) -> tuple:
    folder = root / "changing"
    changer = write_changing_folder(folder)
    first = embed(Workspace(folder), **{**EMBED, "batch_size": 2}, progress=changer)
    second = embed(Workspace(folder), **EMBED)
    skipped = ", ".join(f"{entry['path']} skipped: {entry['reason']}" for entry in first.skipped)
    engine = (f"{first.embedded} embedded, {skipped}; next run: {second.embedded} changed or new embedded, "
              f"{len(second.skipped)} skipped")
    return CHANGING_FOLDER, engine, NONE, NONE, NONE


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def main() -> int:
    logging.basicConfig(level=logging.ERROR)   # the table says what was skipped
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [*file_rows(root), *label_rows(root), *csv_rows(root), changing_row(root)]
    print("| kind | what it is | engine | store | CLI | app |")
    print("|---|---|---|---|---|---|")
    for kind, *outcomes in rows:
        print("| " + " | ".join(cell(text) for text in (f"`{kind.id}`", kind.what, *outcomes)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
