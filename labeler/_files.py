"""Safe label files: spreadsheet-formula neutralization, atomic writes, export trees, folder names, reports."""
from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine._atomic import atomic_output, new_dir_beside

from .errors import LabelFileError

EXPORT_MARKER = ".labeler-export"   # marks an export tree, so exporting again may replace it

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Columns holding a file path that pandas, fastai and datasets open: a quote would change the path.
PATH_COLUMNS = frozenset({"image_name", "file_name", "mask"})
_UNSAFE_IN_FOLDER_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def _runs_as_formula(cell: str) -> bool:
    """Whether a spreadsheet would run `cell` (once any quotes before it are dropped) as a formula."""
    return cell.lstrip("'").startswith(_FORMULA_STARTS)


def neutralize(cell: str) -> str:
    """Prefix a quote to a cell a spreadsheet would run as a formula.

    Cells that already start with quotes before such a character get one more, so that
    `restore_cell` gives back exactly what was written (the round trip is exact).
    """
    return "'" + cell if _runs_as_formula(cell) else cell


def restore_cell(cell: str) -> str:
    """Undo `neutralize`: drop one leading quote that stands before a formula character."""
    return cell[1:] if cell.startswith("'") and _runs_as_formula(cell) else cell


def neutralize_path(cell: str) -> str:
    """Make a relative path a spreadsheet would run as a formula safe without changing the file it names: `./` first.

    A quote would make readers look for a file that does not exist; `./-rf.png` is still
    `-rf.png` to pandas users, fastai (`ColReader` joins it to the folder) and datasets
    (imagefolder normalizes `file_name`), and a spreadsheet shows it as text.
    """
    return "./" + cell if _runs_as_formula(cell) else cell


def restore_path(cell: str) -> str:
    """Undo `neutralize_path`; a path quote-prefixed by `neutralize` (older exports) loses its quote."""
    return cell[2:] if cell.startswith("./") and _runs_as_formula(cell[2:]) else restore_cell(cell)


def safe_cell(column: str, cell):
    """`cell` as written to a CSV under `column`: paths through `neutralize_path`, other text through `neutralize`."""
    if not isinstance(cell, str):
        return cell
    return neutralize_path(cell) if column in PATH_COLUMNS else neutralize(cell)


def write_csv_atomically(out: Path, header: list[str], rows: Iterable[list[str]]) -> int:
    """Write a CSV (every cell made safe by `safe_cell`) to a temporary file beside `out`, then move it in place.

    Returns the number of data rows. Readers see the old file or the new one, never half of one.
    """
    out = checked_output_file(out)
    count = 0
    with atomic_output(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([neutralize(cell) for cell in header])
        for row in rows:
            writer.writerow([safe_cell(column, cell) for column, cell in zip(header, row, strict=True)])
            count += 1
    return count


def checked_output_file(out) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise LabelFileError(f"Output {str(out)!r} is a folder; give a file name, e.g. {str(out / 'labels.csv')!r}.")
    if not out.parent.is_dir():
        raise LabelFileError(f"Cannot write {str(out)!r}: the folder {str(out.parent)!r} does not exist. "
                             f"Create it first or choose another place.")
    return out


def folder_names(labels: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """A distinct, portable folder name per label (characters no file system allows become '_').

    Names differ case-insensitively (`Cat` and `cat` would share one folder on macOS and
    Windows) and from `reserved` (files the export writes beside the folders).
    """
    names: dict[str, str] = {}
    taken = {name.lower() for name in reserved}
    for label in labels:
        base = _UNSAFE_IN_FOLDER_NAME.sub("_", label).strip().rstrip(".") or "_"
        if base.startswith("."):
            base = "_" + base
        name, suffix = base, 2
        while name.lower() in taken:
            name, suffix = f"{base}-{suffix}", suffix + 1
        taken.add(name.lower())
        names[label] = name
    return names


def unique_file_name(name: str, taken: set[str]) -> str:
    """`name`, else `stem-2.ext`, `stem-3.ext`, ...: the first not in `taken` (case-insensitively); adds it."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 2
    while candidate.lower() in taken:
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    taken.add(candidate.lower())
    return candidate


# ---- export trees: built beside the target, then moved in place ----------------------------------

def check_tree_target(out, images: Path, workspace: Path) -> Path:
    """The absolute folder an export tree may be written to, or a LabelFileError saying why not.

    Refused: a missing parent folder; a place inside the image folder that the next scan would
    read as new images (a hidden folder there, or the workspace, is fine); an existing folder
    that is neither empty nor an earlier export (one holding `EXPORT_MARKER`).
    """
    out = Path(out).expanduser().absolute()
    if not out.parent.is_dir():
        raise LabelFileError(f"Cannot export to {str(out)!r}: the folder {str(out.parent)!r} does not exist. "
                             f"Create it first or choose another place.")
    real = out.resolve()
    if real.is_relative_to(images) and not real.is_relative_to(workspace):
        if not any(part.startswith(".") for part in real.relative_to(images).parts):
            raise LabelFileError(f"Export folder {str(out)!r} is inside the image folder {images}; its images would "
                                 f"be found as new items. Choose a folder outside it, or a hidden one inside it "
                                 f"(e.g. {str(images / '.exports' / out.name)!r}).")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / EXPORT_MARKER).exists())):
        raise LabelFileError(f"Export folder {str(out)!r} already exists and is not an earlier labeler export. "
                             f"Choose a new folder, or empty it first.")
    return out


@contextmanager
def building_tree(out: Path, made_by: str) -> Iterator[Path]:
    """Yield a new folder beside `out` holding `EXPORT_MARKER`; when the block succeeds it replaces `out`.

    `out` must have passed `check_tree_target`: an earlier export there is replaced whole, so
    readers see the old tree or the new one. On failure the half-built folder is removed.
    """
    building = new_dir_beside(out, "building")
    try:
        (building / EXPORT_MARKER).write_text(f"made by {made_by}; the next export there replaces this folder\n")
        yield building
        if not out.exists():
            os.replace(building, out)
            return
        old = new_dir_beside(out, "old")
        os.replace(out, old / "previous")
        try:
            os.replace(building, out)
        except BaseException:
            os.replace(old / "previous", out)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def place_file(source: Path, target: Path, copy: bool) -> None:
    """A copy of `source` at `target`, or a relative symbolic link to it (valid while both move together).

    Links are relative to the real folders, so `target`'s tree may be built beside its final place
    and renamed. Copies get the user's normal permissions (not the source's mode).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if copy:
            shutil.copyfile(source, target)
        else:
            os.symlink(os.path.relpath(source.resolve(), target.parent.resolve()), target)
    except OSError as err:
        hint = "" if copy else " If this file system cannot hold symbolic links, export copies (copy=True, --copy)."
        verb = "copy" if copy else "link"
        raise LabelFileError(f"Cannot {verb} {source} to {target} ({err.strerror}).{hint}") from err


@dataclass
class ImportReport:
    """What an import did. `unknown` lists file names that are not images of the project (never guessed)."""

    source: str
    rows: int = 0                                   # data rows (or files) read
    assigned: int = 0                               # items whose labels changed
    labels: list[str] = field(default_factory=list)  # label names found
    unknown: list[str] = field(default_factory=list)
    empty: int = 0                                  # rows without a label
    conflicts: list[str] = field(default_factory=list)  # single-label: names given two different labels
    event_id: int = 0                               # the undoable event (0: nothing changed)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ExportReport:
    """What an export wrote; excluded and missing items are left out and counted."""

    path: str
    format: str
    rows: int = 0
    skipped_excluded: int = 0
    skipped_missing: int = 0
    folders: dict[str, str] = field(default_factory=dict)   # folders export: label -> folder name

    def to_json(self) -> dict:
        return asdict(self)
