"""Labels in and out: CSV files (the `image_name,tags` layout pandas and fastai read), folder-per-class
trees (`<label>/<file name>`, what torchvision's ImageFolder and fastai's `parent_label` read),
Hugging Face imagefolder datasets and model predictions.

Imports match file names exactly (relative to the project folder); names that are not images of
the project are reported, never guessed. Each import is one transaction and one undoable event,
so a failed import leaves the labels as they were. Exports skip excluded and missing items, are
written beside the target and moved in place (files and trees alike, with the user's normal
permissions).

No exported cell runs as a formula when the CSV is opened in a spreadsheet (one starting with
=, +, -, @, a tab or a carriage return), whether it comes from people (labels) or from files (names).
Text cells get a leading quote; path columns (image_name, file_name) get `./` instead, because
pandas, fastai and datasets must still find the file: `./-rf.png` is the same file, a quoted
name is not. Labels therefore reach those readers with the quote (`'=1+1`); imports here strip
both prefixes, so round trips are exact.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np

from engine._atomic import write_text
from engine.data import discover_images

from ._files import (EXPORT_MARKER, ExportReport, ImportReport, building_tree, check_tree_target, folder_names,
                     place_file, restore_cell, restore_path, unique_file_name, write_csv_atomically)
from ._labels import validate_name
from .errors import LabelFileError, LabelStoreError

logger = logging.getLogger(__name__)

MAPPING_FILE = "labels.csv"   # in an export tree: file_name (in the tree), label, image_name (in the project)


# ---- import -----------------------------------------------------------------------------------

def import_labels_csv(project, csv_path, *, image_column="image_name", label_column="tags",
                      label_delimiter=" ", sep=",") -> ImportReport:
    """Assign the labels of a CSV (one row per image) as one undoable event.

    Single-label projects take each label cell whole; multi-label ones split it on
    `label_delimiter`. Columns are names or 0-based positions.

    Raises:
        LabelFileError: the file is missing, empty, not UTF-8, not CSV, lacks a column or holds
            an invalid label name (the message names the file, and the row).
    """
    path = Path(csv_path).expanduser()
    table = _read_label_csv(path, sep)
    image_col = _column(table, image_column, path, "image_column", sep)
    label_col = _column(table, label_column, path, "label_column", sep)
    multi = project.store.multi_label
    if multi and not label_delimiter:
        raise LabelFileError(f"label_delimiter {label_delimiter!r} is empty; give the character between labels, e.g. ' '.")
    report = ImportReport(source=str(path), rows=len(table))
    collected: dict[str, list[str]] = {}
    for row, (name, cell) in enumerate(zip(table[image_col], table[label_col]), start=2):
        name = restore_path(name)
        labels = _cell_labels(restore_cell(cell), label_delimiter if multi else None, path, row)
        if not name.strip() or not labels:
            report.empty += 1
            continue
        collected.setdefault(name, []).extend(labels)
    assign_collected(project, collected, report, f"import labels from {path.name}")
    return report


def _read_label_csv(path: Path, sep: str):
    import pandas as pd
    if path.is_dir():
        raise LabelFileError(f"Label file {str(path)!r} is a folder. To import a folder-per-class tree use "
                             f"import_folders (labeler import FOLDER --folders ROOT).")
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                           encoding="utf-8-sig", skipinitialspace=False)
    except FileNotFoundError:
        raise LabelFileError(f"Label file {str(path)!r} does not exist. Check the path for typos.") from None
    except pd.errors.EmptyDataError:
        raise LabelFileError(f"Label file {str(path)!r} is empty. It needs a header row (e.g. image_name,tags) "
                             f"and one row per image.") from None
    except UnicodeDecodeError:
        raise LabelFileError(f"Label file {str(path)!r} is not UTF-8 text ({_first_bad_byte(path)}). Save it as UTF-8 "
                             f"CSV (in Excel: 'CSV UTF-8') and import again.") from None
    except (pd.errors.ParserError, OSError, ValueError) as err:
        raise LabelFileError(f"Label file {str(path)!r} cannot be read as CSV ({err}). Check its quoting and "
                             f"separator (sep={sep!r}).") from None


def _first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8, e.g. "byte b'\\xe9' on line 2" (pandas counts within its read buffer)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"byte {data[err.start:err.start + 1]!r} on line {line}"
    return "an invalid byte"


def _column(table, column, path: Path, argument: str, sep: str) -> str:
    columns = list(table.columns)
    if isinstance(column, int) and not isinstance(column, bool) and -len(columns) <= column < len(columns):
        return columns[column]
    if column in columns:
        return column
    hint = ""
    for other in (";", "\t", ",", "|"):
        if other != sep and len(columns) == 1 and other in str(columns[0]):
            hint = f" The header looks separated by {other!r}: pass sep={other!r} (--sep)."
    flag = "--" + argument.replace("_", "-")
    raise LabelFileError(f"Label file {str(path)!r} has no column {column!r}; its columns are "
                         f"{[str(c) for c in columns]}. Pass {argument}=... ({flag}) naming one of them.{hint}")


def _cell_labels(cell: str, delimiter: str | None, path: Path, row: int) -> list[str]:
    parts = cell.split(delimiter) if delimiter else [cell]
    try:
        return [validate_name(part) for part in parts if part.strip()]
    except LabelStoreError as err:
        raise LabelFileError(f"Label file {str(path)!r}, row {row}: {err}") from None


def assign_collected(project, collected: dict[str, list[str]], report: ImportReport, description: str) -> None:
    """Map names to item ids (reporting unknown ones and single-label conflicts) and assign in one event
    (the imports here, and the label column of `labeler download`'s URL list).

    Names that differ but mean one item (`a.png`, `./a.png`, `a.png `) pool their labels.
    """
    by_path = {item.path: item.id for item in project.refresh_items()}
    multi = project.store.multi_label
    by_item: dict[int, tuple[str, list[str]]] = {}
    for name, labels in collected.items():
        item = by_path.get(project.item_key(name, by_path))
        if item is None:
            report.unknown.append(name)
        else:
            by_item.setdefault(item, (name, []))[1].extend(labels)
    wanted: dict[int, list[str]] = {}
    for item, (name, labels) in by_item.items():
        labels = list(dict.fromkeys(labels))
        if len(labels) > 1 and not multi:
            report.conflicts.append(name)
        else:
            wanted[item] = labels
    report.labels = sorted({label for labels in wanted.values() for label in labels})
    if report.unknown:
        logger.warning("%s: %d file name(s) are not images of %s, e.g. %r", report.source, len(report.unknown),
                       project.folder, report.unknown[0])
    before = project.store.version
    report.event_id = project.store.assign_many(wanted, source="import", kind="import",
                                                description=f"{description} ({len(wanted):,} items)")
    report.assigned = project.store.event(report.event_id).count if report.event_id else 0
    logger.info("%s: %d items labeled (store version %d -> %d)", report.source, report.assigned, before,
                project.store.version)


def import_folders(project, root) -> ImportReport:
    """Assign labels from a folder-per-class tree: ROOT/<label>/.../<image>, as one undoable event.

    A file is matched to an item by its real path inside the project folder (the tree may hold
    links to the images, or be the project folder itself), else, in a tree that `export_folders`
    wrote, by the original path its `labels.csv` gives, else by its path below its class folder.
    The label is the folder's name, except in such a tree, where a folder stands for the label
    `labels.csv` gives it (`<img>` was written to the folder `_img_`, which no file system refuses).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LabelFileError(f"Class folder tree {str(root)!r} does not exist or is not a folder. Give the "
                             f"folder whose sub-folders are named after the labels.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise LabelFileError(f"Class folder tree {str(root)!r} has no sub-folders; expected ROOT/<label>/<images>.")
    known = {item.path for item in project.refresh_items()}
    originals, folder_labels = _exported_originals(root)
    report = ImportReport(source=str(root))
    collected: dict[str, list[str]] = {}
    for class_dir in class_dirs:
        try:
            label = validate_name(folder_labels.get(class_dir.name, class_dir.name))
        except LabelStoreError as err:
            raise LabelFileError(f"Class folder {str(class_dir)!r}: {err}") from None
        for relative in discover_images(class_dir):
            report.rows += 1
            original = originals.get(f"{class_dir.name}/{relative}")
            name = _item_name(project, class_dir / relative, relative, known, original)
            collected.setdefault(name, []).append(label)
    assign_collected(project, collected, report, f"import class folders of {root.name}")
    return report


def _exported_originals(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """file_name -> image_name and folder -> label of the export tree `root` (from its labels.csv); empty for
    any other tree."""
    if not (root / EXPORT_MARKER).exists() or not (root / MAPPING_FILE).is_file():
        return {}, {}
    with open(root / MAPPING_FILE, newline="", encoding="utf-8") as f:
        rows = [row for row in list(csv.reader(f))[1:] if len(row) >= 3]
    originals = {restore_path(row[0]): restore_path(row[2]) for row in rows}
    folders = {restore_path(row[0]).split("/")[0]: restore_cell(row[1]) for row in rows if "/" in restore_path(row[0])}
    return originals, folders


def _item_name(project, file: Path, relative: str, known: set[str], original: str | None) -> str:
    try:
        inside = file.resolve().relative_to(project.folder).as_posix()
    except (ValueError, OSError):
        inside = None
    for name in (inside, original, relative):
        if name in known:
            return name
    return inside or relative


# ---- export -----------------------------------------------------------------------------------

def _rows_to_export(project) -> tuple[list[tuple[object, list[str]]], ExportReport]:
    """(item, labels in display order) of labeled items that are neither excluded nor missing."""
    table = project.store.assignments()
    items = {item.id: item for item in project.refresh_items()}
    excluded = project.store.excluded()
    report = ExportReport(path="", format="")
    grouped: dict[int, list[str]] = {}
    for item_id, label in zip(table["item_id"].tolist(), table["label"].tolist()):
        grouped.setdefault(item_id, []).append(label)
    rows = []
    for item_id, labels in grouped.items():
        if item_id in excluded:
            report.skipped_excluded += 1
        elif item_id not in items or items[item_id].missing:
            report.skipped_missing += 1
        else:
            rows.append((items[item_id], labels))
    return rows, report


def _tags(labels: list[str], delimiter: str, multi: bool) -> str:
    return delimiter.join(labels) if multi else labels[0]


def _check_delimiter(project, rows, delimiter: str, where: str) -> None:
    if not project.store.multi_label:
        return
    if not isinstance(delimiter, str) or not delimiter:
        raise LabelFileError(f"label_delimiter {delimiter!r} must be a non-empty string, e.g. ' ' or ';'.")
    clashing = sorted({label for _, labels in rows for label in labels if delimiter in label})
    if clashing:
        other = next(c for c in (";", "|", ",", "/") if not any(c in label for label in clashing))
        raise LabelFileError(f"Cannot write {where}: label(s) {clashing[:5]} contain the label delimiter "
                             f"{delimiter!r}, so the labels could not be told apart. Export with another "
                             f"delimiter (label_delimiter={other!r}, --delimiter '{other}') or rename those labels.")


def export_labels_csv(project, out, *, label_delimiter=" ") -> ExportReport:
    """Write `image_name,tags` (multi-label: tags joined by `label_delimiter`): what pandas and fastai read.

    A tag a spreadsheet would run as a formula is written with a leading quote (`'=1+1`); an
    image_name gets `./` instead (`./-rf.png`), so that pandas and fastai still open the file.
    When images of the project were downloaded (`labeler download`), a third column, `url`, gives
    each one's source (empty for the others).
    """
    from .download import source_urls
    rows, report = _rows_to_export(project)
    _check_delimiter(project, rows, label_delimiter, str(out))
    multi = project.store.multi_label
    urls = source_urls(project.workspace.root)
    header = ["image_name", "tags"] + (["url"] if urls else [])
    report.rows = write_csv_atomically(Path(out), header,
                                       ([item.path, _tags(labels, label_delimiter, multi)]
                                        + ([urls.get(item.path, "")] if urls else []) for item, labels in rows))
    report.path, report.format = str(out), "csv"
    logger.info("exported %d labeled items to %s", report.rows, out)
    return report


def export_cleaned(project, out, *, label_delimiter=" ") -> int:
    """Write cleaned.csv after a cleaning pass; returns the rows written.

    `image_name,tags`, one row per labeled item that is neither excluded nor missing, with its
    current label: the corrections made while cleaning (relabels) are in it, the items set
    aside (exclusions) are not. The layout is `export_labels_csv`'s, so fastai and pandas read
    it the same way; nothing is copied, moved or deleted.
    """
    return export_labels_csv(project, out, label_delimiter=label_delimiter).rows


def export_hf_metadata(project, out) -> ExportReport:
    """A Hugging Face imagefolder `metadata.csv` for the images where they are (file_name,label;
    multi-label: file_name,labels space-joined).

    `out` is the file or a folder to hold metadata.csv; it must lie in the image folder or above
    it, because file_name is relative to the metadata file. `datasets` reads these labels as
    strings; `export_hf` writes a dataset folder whose label column loads as a `ClassLabel`.
    """
    out = Path(out).expanduser()
    out = out / "metadata.csv" if out.is_dir() else out
    base = out.parent.resolve()
    if os.path.relpath(project.folder, base).startswith(".."):
        raise LabelFileError(f"{str(out)!r} is not in (or above) the image folder {project.folder}, so file_name "
                             f"could not point to the images. Write it to {project.folder / 'metadata.csv'}.")
    rows, report = _rows_to_export(project)
    multi = project.store.multi_label
    _check_delimiter(project, rows, " ", str(out))
    header = ["file_name", "labels" if multi else "label"]
    report.rows = write_csv_atomically(out, header, ([Path(os.path.relpath(project.folder / item.path, base)).as_posix(),
                                                      _tags(labels, " ", multi)] for item, labels in rows))
    report.path, report.format = str(out), "hf"
    return report


def export_predictions_csv(project, out, model_id=None) -> ExportReport:
    """image_name, prediction, confidence, label (the current labels) and prob_<class> per class."""
    found = project.store.predictions(model_id)
    if found is None:
        raise LabelStoreError("No predictions are stored yet; train a model first, then export its predictions.")
    found_id, classes, item_ids, probs = found
    items = {item.id: item for item in project.refresh_items()}
    labeled = project.labels
    current = dict(zip(labeled["item_id"], labeled["tags" if project.store.multi_label else "label"]))
    excluded = project.store.excluded()
    report = ExportReport(path=str(out), format="predictions")
    rows = []
    for item_id, row in zip(item_ids.tolist(), probs):
        if item_id in excluded:
            report.skipped_excluded += 1
        elif item_id not in items or items[item_id].missing:
            report.skipped_missing += 1
        else:
            rows.append([items[item_id].path, *_prediction_cells(classes, row, project.store.multi_label),
                         current.get(item_id, ""), *(f"{p:.6g}" for p in row)])
    header = ["image_name", "prediction", "confidence", "label", *(f"prob_{name}" for name in classes)]
    report.rows = write_csv_atomically(Path(out), header, rows)
    logger.info("exported predictions of %r for %d items to %s", found_id, report.rows, out)
    return report


def _prediction_cells(classes: list[str], row: np.ndarray, multi: bool) -> list[str]:
    if not len(classes):
        return ["", ""]
    if multi:
        return [" ".join(c for c, p in zip(classes, row) if p >= 0.5), f"{float(row.max()):.6g}"]
    best = int(row.argmax())
    return [classes[best], f"{float(row[best]):.6g}"]


def export_folders(project, out, *, copy=False) -> ExportReport:
    """OUT/<label>/<file name>: relative symbolic links to the images (copies with `copy=True`).

    The layout torchvision's `ImageFolder`, fastai's `parent_label` and `datasets`' imagefolder
    read: the label is the immediate parent folder. Images of one label with the same file name
    become `name.jpg`, `name-2.jpg`, ... (in order of their paths); `OUT/labels.csv` maps each
    exported file to its label and original path (file_name,label,image_name; fastai's
    `ImageDataLoaders.from_csv(OUT)` reads it as it is). Multi-label items appear under each of
    their labels (one row per copy). An existing OUT is replaced only if it is empty or an earlier
    export (it holds `.labeler-export`); the new tree is built beside it and moved in place.
    """
    return _export_tree(project, out, "folders", by_label=True, copy=copy)


def export_hf(project, out, *, link=False) -> ExportReport:
    """A folder `datasets.load_dataset("imagefolder", data_dir=OUT)` loads with the labels, offline.

    Single-label: the tree of `export_folders` (copies; relative links with `link=True`), which
    imagefolder turns into a `label` column of type `ClassLabel` named after the label folders
    (sorted; a project with one label needs `drop_labels=False`). A metadata file would turn that
    column into plain text: `datasets` takes the features of a metadata file from its values, and
    `load_dataset("imagefolder", ...)` reads no dataset card. Multi-label: the images in OUT with
    `metadata.jsonl` ({"file_name": ..., "labels": [...]}), a `labels` column of lists of label
    names. Both write `OUT/labels.csv` (file_name,label,image_name) and replace only an earlier export.
    """
    report = _export_tree(project, out, "hf", by_label=not project.store.multi_label, copy=not link)
    if len(report.folders) == 1:
        logger.warning("%s holds one label only: datasets' imagefolder adds its label column only with "
                       "load_dataset('imagefolder', data_dir=..., drop_labels=False)", out)
    return report


def _export_tree(project, out, fmt: str, *, by_label: bool, copy: bool) -> ExportReport:
    """OUT/<label>/<file name> (`by_label`) or OUT/<file name> with metadata.jsonl, and OUT/labels.csv."""
    out = check_tree_target(out, project.folder, project.workspace.root)
    rows, report = _rows_to_export(project)
    rows.sort(key=lambda row: row[0].path)
    present = {label for _, labels in rows for label in labels}
    if by_label:
        report.folders = folder_names((label for label in project.store.counts() if label in present),
                                      reserved=[MAPPING_FILE])
    taken: dict[str, set[str]] = {}
    mapping, metadata = [], []
    with building_tree(out, f"labeler export --format {fmt}") as building:
        for item, labels in rows:
            copies = [(report.folders[label], [label]) for label in labels] if by_label else [("", labels)]
            for folder, its_labels in copies:   # one file per label folder, or one file with all its labels
                name = unique_file_name(Path(item.path).name, taken.setdefault(folder, set()))
                file_name = f"{folder}/{name}" if folder else name
                place_file(project.folder / item.path, building / file_name, copy)
                mapping += [[file_name, label, item.path] for label in its_labels]
                if not by_label:
                    metadata.append(json.dumps({"file_name": file_name, "labels": its_labels}, ensure_ascii=False))
            report.rows += 1
        write_csv_atomically(building / MAPPING_FILE, ["file_name", "label", "image_name"], mapping)
        if not by_label:
            write_text(building / "metadata.jsonl", "".join(line + "\n" for line in metadata))
    report.path, report.format = str(out), fmt
    logger.info("exported %d labeled items to %s (%s)", report.rows, out, fmt)
    return report


__all__ = ["EXPORT_MARKER", "MAPPING_FILE", "ExportReport", "ImportReport", "export_cleaned", "export_folders",
           "export_hf", "export_hf_metadata", "export_labels_csv", "export_predictions_csv", "import_folders",
           "import_labels_csv"]
