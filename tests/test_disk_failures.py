"""A full disk and a read-only workspace: one clear message, and the caches and labels from before intact.

A full disk is simulated without root: the child process gets a file-size limit
(RLIMIT_FSIZE) with SIGXFSZ ignored, so a write past it fails with EFBIG as a write to a full
disk fails with ENOSPC. It runs in a subprocess so the limit never touches pytest itself.

A really full disk is a small tmpfs mounted for the test (root in a container; elsewhere those
tests skip, saying why): the workspace lives there, the features or thumbnails of real images
do not fit, and once the tmpfs is remounted bigger the same command completes. There a memory
map of a sparse file would die of SIGBUS at the first page without a block behind it; the
writers reserve the blocks first (engine/_atomic.py `_reserve`), and a test shows the hazard is real.

A read-only workspace needs a real read-only mount: the process often runs as root, whom
chmod does not stop, and SQLite opens its files in C, where no Python monkeypatch reaches.
A read-only bind mount is used where the system allows one (root in a container); elsewhere
those tests skip, saying why.
"""
from __future__ import annotations

import io
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from _helpers import write_image
from engine.errors import DiskWriteError
from labeler.errors import USER_ERRORS
from labeler.project import Project
from labeler.testing import copy_demo_digits

ROOT = Path(__file__).resolve().parents[1]
EMBED_ARGS = ["--size", "32", "--workers", "0"]   # the CLI's default backbone, whose weights ship offline
LIMIT = 200_000   # bytes: SQLite's files fit, the grown feature and thumbnail arrays do not


def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _python(args: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          preexec_fn=_limited(limit) if limit else None)


def _embed(folder, workspace, limit=None):
    return _python(["-m", "labeler.cli", "embed", str(folder), "--workspace", str(workspace), *EMBED_ARGS], limit)


def _snapshot(workspace: Path) -> dict[str, bytes]:
    """Every file of the caches (not the database, which SQLite may checkpoint), by relative path."""
    return {str(path.relative_to(workspace)): path.read_bytes() for path in sorted(workspace.rglob("*"))
            if path.is_file() and "labels.sqlite" not in path.name}


def _labels(folder, workspace) -> list[tuple]:
    with Project(folder, workspace) as project:
        return sorted(zip(project.labels["image_name"], project.labels["label"]))


def _integrity(workspace: Path) -> str:
    # closed here, not when garbage collected: an open database keeps a tmpfs from being unmounted
    with closing(sqlite3.connect(workspace / "labels.sqlite")) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _assert_old_rows_kept(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """The same files (no temporary left behind); an array may have grown, but its old rows are equal."""
    assert sorted(after) == sorted(before)
    for name, data in before.items():
        old = np.load(io.BytesIO(data)) if name.endswith(".npy") else data
        new = np.load(io.BytesIO(after[name]))[:len(old)] if name.endswith(".npy") else after[name]
        np.testing.assert_array_equal(new, old, err_msg=name)


def _one_line_error(result: subprocess.CompletedProcess, path_part: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr
    assert path_part in lines[0] and "disk is full" in lines[0] and "--workspace PATH" in lines[0]
    return lines[0]


@pytest.fixture
def embedded(tmp_path):
    """(folder, workspace): six images embedded, thumbnailed and three of them labeled; then 30 more images."""
    folder, workspace = tmp_path / "images", tmp_path / "ws"
    for i in range(6):
        write_image(folder / f"img_{i:02d}.png", seed=i)
    assert _embed(folder, workspace).returncode == 0
    with Project(folder, workspace) as project:
        project.thumbs.build(workers=0)
        project.store.assign(project.ids_for(["img_00.png", "img_01.png"]), "cat")
        project.store.assign(project.ids_for(["img_02.png"]), "dog")
    for i in range(6, 36):
        write_image(folder / f"img_{i:02d}.png", seed=i)
    return folder, workspace


@pytest.mark.slow
def test_embed_on_a_full_disk_says_so_in_one_line_and_keeps_features_thumbnails_and_labels(embedded):
    folder, workspace = embedded
    before, labels = _snapshot(workspace), _labels(folder, workspace)
    assert len(labels) == 3
    _one_line_error(_embed(folder, workspace, LIMIT), str(workspace / "features"))
    after = _snapshot(workspace)
    assert sorted(after) == sorted(before)   # no temporary left behind
    for name, data in before.items():
        if name.endswith(".npy") and not name.endswith("rows.npy"):
            # a layer may already have grown (new rows empty, their state still "to do"): old rows equal
            np.testing.assert_array_equal(np.load(io.BytesIO(after[name]))[:6], np.load(io.BytesIO(data)))
        else:
            assert after[name] == data, name   # row states, metadata, thumbnails: untouched
    assert _labels(folder, workspace) == labels and _integrity(workspace) == "ok"

    again = _embed(folder, workspace)
    assert again.returncode == 0 and again.stdout.startswith("30 embedded, 6 cached"), again.stderr
    with Project(folder, workspace, size=32) as project:
        features = project.features()
        old = np.load(io.BytesIO(before["features/mobilenet_v2-32/features.18.npy"]))
        np.testing.assert_array_equal(features.load("features.18")[:6], old)
        assert features.done_mask().all()


_BUILD_THUMBS = """
import sys
from labeler.errors import USER_ERRORS
from labeler.project import Project
try:
    with Project(sys.argv[1], sys.argv[2]) as project:
        project.thumbs.build(project.refresh_items(rescan=True), workers=0)
except USER_ERRORS as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
def test_thumbnails_on_a_full_disk_fail_with_a_message_and_keep_the_old_tiles(embedded):
    folder, workspace = embedded
    before = _snapshot(workspace)
    line = _one_line_error(_python(["-c", _BUILD_THUMBS, str(folder), str(workspace)], LIMIT),
                           str(workspace / "thumbs"))
    assert "kept unchanged" in line
    _assert_old_rows_kept(before, _snapshot(workspace))
    assert _integrity(workspace) == "ok"
    assert _python(["-c", _BUILD_THUMBS, str(folder), str(workspace)]).returncode == 0
    with Project(folder, workspace) as project:
        assert project.thumbs.done_mask(36).all()


# ---- a really full disk: the workspace on a small tmpfs ----------------------------------------

class Tmpfs:
    """A tmpfs of `size` (e.g. "2m") mounted on the new folder `path`; `resize` remounts it with another size,
    `unmount` is safe to call twice. Skips the test where mounting is not allowed."""

    def __init__(self, path: Path, size: str):
        if sys.platform != "linux":
            pytest.skip("a tmpfs mount needs Linux")
        path.mkdir(parents=True)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                  capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no `mount` command here")
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not allowed here ({done.stderr.strip()})")
        self.path, self.mounted = path, True

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        if not self.mounted:
            return
        done = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:   # a file still open there: detach it all the same, then say so
            subprocess.run(["umount", "--lazy", str(self.path)], check=True)
        self.mounted = False
        if done.returncode != 0:
            raise RuntimeError(f"{self.path} was still in use ({done.stderr.strip()}); it was detached lazily")


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)` mounts a new tmpfs under tmp_path; every one is unmounted at the end, whatever happened."""
    mounts: list[Tmpfs] = []

    def mount(size: str) -> Tmpfs:
        mounts.append(Tmpfs(tmp_path / f"tmpfs{len(mounts)}", size))
        return mounts[-1]
    try:
        yield mount
    finally:
        while mounts:
            mounts.pop().unmount()


FIRST = 40        # digits embedded and thumbnailed while the 2 MB tmpfs still has room (~1.3 MB with labels)


@pytest.fixture
def digits_on_tmpfs(tmp_path, tmpfs):
    """(folder, workspace on a 2 MB tmpfs, the tmpfs): 40 real demo digits embedded, thumbnailed and three
    labeled; then 260 more digits, whose features (~15 kB each) and thumbnails (~16 kB each) cannot fit."""
    mount = tmpfs("2m")
    digits = sorted(copy_demo_digits(tmp_path / "all", per_class=30).iterdir())
    folder, workspace = tmp_path / "images", mount.path / "ws"
    folder.mkdir()
    for path in digits[:FIRST]:
        shutil.copy(path, folder / path.name)
    assert _embed(folder, workspace).returncode == 0
    with Project(folder, workspace) as project:
        project.thumbs.build(workers=0)
        project.store.assign(project.ids_for([digits[0].name, digits[1].name]), "round")
        project.store.assign(project.ids_for([digits[2].name]), "corner")
    for path in digits[FIRST:]:
        shutil.copy(path, folder / path.name)
    return folder, workspace, mount


@pytest.mark.slow
def test_embed_onto_a_full_tmpfs_names_the_features_file_and_completes_once_the_disk_grows(digits_on_tmpfs):
    folder, workspace, mount = digits_on_tmpfs
    before, labels = _snapshot(workspace), _labels(folder, workspace)
    line = _one_line_error(_embed(folder, workspace), str(workspace / "features" / "mobilenet_v2-32"))
    cache = re.escape(str(workspace / "features" / "mobilenet_v2-32"))
    assert re.search(rf"Cannot write {cache}/features\.\d+\.npy \(No space left on device\)", line), line
    assert "kept unchanged" in line
    _assert_old_rows_kept(before, _snapshot(workspace))
    assert _labels(folder, workspace) == labels and _integrity(workspace) == "ok"

    mount.resize("32m")
    again = _embed(folder, workspace)
    assert again.returncode == 0 and again.stdout.startswith(f"{300 - FIRST} embedded, {FIRST} cached"), again.stderr
    with Project(folder, workspace, size=32) as project:
        features = project.features()
        assert features.done_mask().all()
        old = np.load(io.BytesIO(before["features/mobilenet_v2-32/features.18.npy"]))
        np.testing.assert_array_equal(features.load("features.18")[:FIRST], old)
    assert _labels(folder, workspace) == labels


_PREPARE = """
import sys
from engine.errors import DiskWriteError
from labeler.project import Project
try:
    with Project(sys.argv[1], sys.argv[2], size=32) as project:
        project.prepare()
except DiskWriteError as err:
    print(f"DiskWriteError: {err}", file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.slow
def test_preparing_a_project_on_a_full_tmpfs_raises_disk_write_error_naming_the_thumbnails(digits_on_tmpfs):
    """The Python API: `Project.prepare` makes thumbnails first; they do not fit, and say so."""
    folder, workspace, mount = digits_on_tmpfs
    before, labels = _snapshot(workspace), _labels(folder, workspace)
    done = _python(["-c", _PREPARE, str(folder), str(workspace)])
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip()
    thumbs = re.escape(str(workspace / "thumbs"))
    full = rf"DiskWriteError: Cannot write {thumbs}/64(-\d+)?\.npy \(No space left on device\)"
    assert re.match(full, message), message
    assert "disk is full" in message and "--workspace PATH" in message and "kept unchanged" in message
    _assert_old_rows_kept(before, _snapshot(workspace))
    assert _labels(folder, workspace) == labels and _integrity(workspace) == "ok"

    mount.resize("32m")
    assert _python(["-c", _PREPARE, str(folder), str(workspace)]).returncode == 0
    with Project(folder, workspace, size=32) as project:
        assert project.thumbs.done_mask(300).all() and project.features().done_mask().all()
        assert not project.needs_preparing()
    assert _labels(folder, workspace) == labels


_GROW = """
import sys
from pathlib import Path
import numpy as np
from engine import _atomic
from engine.errors import DiskWriteError
if sys.argv[2] == "without reserving":
    _atomic._reserve = lambda path: None
try:
    _atomic.grow_npy(Path(sys.argv[1]), 4096, (1024,), np.uint8)   # 4 MB on a 1 MB tmpfs
    array = np.load(sys.argv[1], mmap_mode="r+")
    array[:] = 1
    array.flush()
except DiskWriteError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_growing_an_array_on_a_full_tmpfs_is_a_message_where_a_memory_map_would_die_of_sigbus(tmpfs):
    """What `_reserve` is for: the same growth without it passes, and the first write kills the process."""
    mount = tmpfs("1m")
    path = mount.path / "features.npy"
    reserved = _python(["-c", _GROW, str(path), "reserving"])
    assert reserved.returncode == 2 and "Traceback" not in reserved.stderr, reserved.stderr
    assert f"Cannot write {path}" in reserved.stderr and "disk is full" in reserved.stderr
    assert list(mount.path.iterdir()) == []   # the temporary is gone
    unreserved = _python(["-c", _GROW, str(path), "without reserving"])
    assert unreserved.returncode == -signal.SIGBUS, unreserved.stderr

def test_labeling_on_a_full_tmpfs_names_the_database_and_keeps_every_label(tmpfs):
    from labeler.store import LabelStore
    mount = tmpfs("1m")
    with LabelStore(mount.path / "labels.sqlite") as store:
        store.assign(range(3), "cat")
        with open(mount.path / "filler", "wb") as filler, pytest.raises(OSError, match="No space left"):
            while True:                      # everything else on the disk takes the rest of it
                filler.write(bytes(1 << 16))
                filler.flush()
        with pytest.raises(DiskWriteError, match=r"labels\.sqlite.*disk is full.*--workspace PATH.*kept unchanged"):
            store.assign(range(2000), "dog")
        assert store.counts() == {"cat": 3}
        mount.resize("8m")
        store.assign(range(2000), "dog")     # the same store carries on once there is room
        assert store.counts() == {"cat": 0, "dog": 2000}
    assert _integrity(mount.path) == "ok"

# ---- a read-only workspace (a real read-only bind mount) -------------------------------------

class ReadOnlyMounts:
    """`mounts(path)` makes the folder `path` read-only in place (a bind mount); `release` undoes it."""

    def __init__(self):
        self.mounted: list[Path] = []

    def __call__(self, path: Path) -> None:
        for args in (["--bind", str(path), str(path)], ["-o", "remount,ro,bind", str(path)]):
            done = subprocess.run(["mount", *args], capture_output=True, text=True)
            if done.returncode != 0:
                if args[0] == "-o":
                    subprocess.run(["umount", str(path)], check=True)
                pytest.skip(f"a read-only bind mount is not allowed here ({done.stderr.strip()})")
        self.mounted.append(path)

    def release(self, path: Path) -> None:
        subprocess.run(["umount", str(path)], check=True)
        self.mounted.remove(path)


@pytest.fixture
def read_only():
    mounts = ReadOnlyMounts()
    yield mounts
    for path in reversed(mounts.mounted):
        mounts.release(path)


@pytest.fixture
def project_folder(tmp_path):
    folder, workspace = tmp_path / "images", tmp_path / "ws"
    for i in range(4):
        write_image(folder / f"img_{i}.png", seed=i)
    with Project(folder, workspace) as project:
        project.store.assign(project.ids_for(["img_0.png"]), "cat")
    return folder, workspace


def test_opening_a_project_in_a_read_only_workspace_names_it_and_suggests_another(project_folder, read_only):
    folder, workspace = project_folder
    write_image(folder / "new.png", seed=9)   # the scan must record it: a write
    read_only(workspace)
    with pytest.raises(USER_ERRORS) as caught:
        Project(folder, workspace)
    assert isinstance(caught.value, DiskWriteError)
    assert str(workspace) in str(caught.value) and "--workspace PATH" in str(caught.value)
    assert "read-only" in str(caught.value)


def test_embedding_into_a_read_only_cache_folder_fails_cleanly_and_keeps_labels(project_folder, read_only):
    from engine.embedding import embed
    folder, workspace = project_folder
    (workspace / "features").mkdir()
    read_only(workspace / "features")
    with Project(folder, workspace) as project:
        with pytest.raises(DiskWriteError, match=r"features.*read-only.*--workspace PATH"):
            embed(project.workspace, backbone="resnet18", size=32, workers=0, pretrained=False)
        assert list(project.labels["label"]) == ["cat"]
    assert list((workspace / "features").iterdir()) == []


def test_labeling_in_a_workspace_that_turned_read_only_fails_and_keeps_every_label(project_folder, read_only):
    """A workspace that became read-only between two runs (a connection opened before keeps writing through
    the file it has open, as the operating system allows)."""
    folder, workspace = project_folder
    read_only(workspace)
    with pytest.raises(USER_ERRORS, match=r"labels\.sqlite.*read-only.*--workspace PATH"):
        with Project(folder, workspace) as project:
            project.store.assign(project.ids_for(["img_1.png"]), "dog")
    read_only.release(workspace)
    assert _labels(folder, workspace) == [("img_0.png", "cat")] and _integrity(workspace) == "ok"


def test_export_to_a_read_only_folder_names_the_file_and_writes_nothing(project_folder, read_only, tmp_path):
    from labeler.io import export_labels_csv
    folder, workspace = project_folder
    target = tmp_path / "out"
    target.mkdir()
    read_only(target)
    with Project(folder, workspace) as project:
        with pytest.raises(USER_ERRORS, match=r"out/labels\.csv.*read-only"):
            export_labels_csv(project, target / "labels.csv")
    assert list(target.iterdir()) == []
