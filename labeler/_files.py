"""Safe label files: spreadsheet-formula neutralization, atomic writes, folder names, reports."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine._atomic import atomic_output

from .errors import LabelFileError

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_IN_FOLDER_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def neutralize(cell: str) -> str:
    """Prefix a quote to a cell a spreadsheet would run as a formula.

    Cells that already start with quotes before such a character get one more, so that
    `restore_cell` gives back exactly what was written (the round trip is exact).
    """
    return "'" + cell if cell.lstrip("'").startswith(_FORMULA_STARTS) else cell


def restore_cell(cell: str) -> str:
    """Undo `neutralize`: drop one leading quote that stands before a formula character."""
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_STARTS) else cell


def write_csv_atomically(out: Path, header: list[str], rows: Iterable[list[str]]) -> int:
    """Write a CSV (every cell neutralized) to a temporary file beside `out`, then move it in place.

    Returns the number of data rows. Readers see the old file or the new one, never half of one.
    """
    out = checked_output_file(out)
    count = 0
    with atomic_output(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([neutralize(cell) for cell in header])
        for row in rows:
            writer.writerow([neutralize(cell) for cell in row])
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


def folder_names(labels: Iterable[str]) -> dict[str, str]:
    """A distinct, portable folder name per label (characters no file system allows become '_')."""
    names: dict[str, str] = {}
    taken: set[str] = set()
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
