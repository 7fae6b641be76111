"""`labeler verify FOLDER`: every image file that cannot be read, or is suspicious, with the reason; and
`--quarantine DIR` to move them aside (never deleting anything).

The check is the engine's own reader (`engine.clean.survey_images`, which reads and decodes each file as
training and embedding do): a file it cannot decode is unreadable, with the reader's reason. A readable image is
suspicious by the cleaning queue's rules (`engine.clean.find_odd_files`: tiny, extreme aspect ratio, almost
blank, greyscale in a colour set), or when its bytes equal an earlier file's (an exact duplicate).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import InputError


@dataclass
class Finding:
    """One file worth a look: its path relative to the folder, why, and whether it cannot be read at all."""

    path: str
    reason: str
    unreadable: bool
    moved_to: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def verify_folder(folder, *, unreadable_only: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> tuple[int, list[Finding]]:
    """(image files checked, findings in path order) for every image file under `folder` (its workspace aside)."""
    from engine.clean import find_odd_files, survey_images
    from engine.data import discover_images
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Give the folder of images to check.")
    paths = discover_images(folder)
    survey = survey_images([folder / path for path in paths], progress=progress)
    stats = survey.stats
    findings: dict[str, Finding] = {}
    for row, reason in zip(*(find_odd_files(stats)[column].tolist() for column in ("row", "reason"))):
        unreadable = isinstance(stats["error"].iat[row], str)
        if unreadable or not unreadable_only:
            findings[paths[row]] = Finding(paths[row], reason, unreadable)
    if not unreadable_only:
        first: dict[str, str] = {}
        for path, digest, error in zip(paths, stats["sha1"].tolist(), stats["error"].tolist()):
            if not isinstance(digest, str) or isinstance(error, str):
                continue
            if digest in first:
                said = f"exact duplicate of {first[digest]}"
                found = findings.get(path)
                findings[path] = Finding(path, f"{found.reason}; {said}" if found else said, False)
            else:
                first[digest] = path
    return len(paths), [findings[path] for path in sorted(findings)]


def quarantine(folder, findings: list[Finding], destination) -> list[Finding]:
    """Move each finding's file from `folder` to the same relative path under `destination` (a free name when one
    is taken: `name-2.jpg`); each finding gets `moved_to`. Nothing is deleted; a file that cannot be moved keeps
    its place and its finding says why."""
    folder, destination = Path(folder).expanduser().resolve(), Path(destination).expanduser().resolve()
    if destination == folder or folder in destination.parents:
        raise InputError(f"The quarantine folder {destination} is inside {folder}: its files would be read again. "
                         f"Give a folder outside it.")
    for finding in findings:
        source = folder / finding.path
        target = _free(destination / finding.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
        except OSError as err:
            finding.reason += f" (not moved: {err.strerror or err})"
            continue
        finding.moved_to = str(target)
    return findings


def _free(path: Path) -> Path:
    candidate, number = path, 2
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate
