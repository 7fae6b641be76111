"""`labeler verify`: every file the engine's reader cannot read is listed with its reason (the hostile corpus of
labeler/hostile.py, kind by kind), suspicious readable ones too; `--quarantine` moves exactly those aside, keeping
their paths, never deleting and never overwriting."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from _helpers import write_image
from engine.errors import InputError
from labeler.hostile import FILE_KINDS
from labeler.verify import quarantine, verify_folder


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "photos"
    for i in range(8):
        write_image(folder / "cats" / f"cat_{i}.png", seed=i)
    (folder / "cats" / "page.png").write_text("<html>a web page, saved as .png</html>")
    (folder / "dogs").mkdir()
    (folder / "dogs" / "empty.jpg").write_bytes(b"")
    (folder / "dogs" / "copy.png").write_bytes((folder / "cats" / "cat_3.png").read_bytes())
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(folder / "dogs" / "grey_card.png")
    (folder / "notes.txt").write_text("not an image file: not checked")
    return folder


def test_unreadable_and_suspicious_files_are_listed_with_the_reason(folder):
    checked, found = verify_folder(folder)
    assert checked == 12
    by_path = {finding.path: finding for finding in found}
    assert sorted(by_path) == ["cats/page.png", "dogs/copy.png", "dogs/empty.jpg", "dogs/grey_card.png"]
    assert by_path["dogs/empty.jpg"].unreadable and "empty file (0 bytes)" in by_path["dogs/empty.jpg"].reason
    assert by_path["cats/page.png"].unreadable and by_path["cats/page.png"].reason.startswith("unreadable: ")
    assert by_path["dogs/copy.png"].reason == "exact duplicate of cats/cat_3.png"
    assert "almost blank" in by_path["dogs/grey_card.png"].reason and not by_path["dogs/grey_card.png"].unreadable
    _, unreadable = verify_folder(folder, unreadable_only=True)
    assert [finding.path for finding in unreadable] == ["cats/page.png", "dogs/empty.jpg"]


def test_quarantine_moves_the_files_found_and_deletes_nothing(folder, tmp_path):
    aside = tmp_path / "aside"
    (aside / "dogs").mkdir(parents=True)
    (aside / "dogs" / "empty.jpg").write_bytes(b"an earlier quarantine's file")
    before = sorted(p.name for p in folder.rglob("*") if p.is_file()) + ["empty.jpg"]
    _, found = verify_folder(folder)
    moved = quarantine(folder, found, aside)
    assert all(finding.moved_to for finding in moved)
    assert (aside / "cats" / "page.png").is_file() and (aside / "dogs" / "empty-2.jpg").is_file()
    assert (aside / "dogs" / "empty.jpg").read_bytes() == b"an earlier quarantine's file"      # never overwritten
    after = sorted(p.name.replace("empty-2", "empty") for p in (*folder.rglob("*"), *aside.rglob("*")) if p.is_file())
    assert after == sorted(before)
    assert verify_folder(folder)[1] == []
    with pytest.raises(InputError, match="inside"):
        quarantine(folder, found, folder / "quarantine")


def test_every_hostile_kind_the_reader_refuses_is_listed_with_the_readers_reason(hostile_corpus):
    corpus, made = hostile_corpus
    _, found = verify_folder(corpus, unreadable_only=True)
    by_path = {finding.path: finding.reason for finding in found}
    refused = [kind for kind in FILE_KINDS if kind.load is not None and not made[kind.id].skip]
    assert len(refused) >= 8
    for kind in refused:
        for path in made[kind.id].paths:
            if path in by_path or kind.id in ("symlink_loop", "named_pipe", "non_utf8_name"):
                continue
            pytest.fail(f"{kind.id}: {path} was not listed as unreadable")
        listed = [by_path[path] for path in made[kind.id].paths if path in by_path]
        assert all(kind.load in reason for reason in listed), (kind.id, listed)


def test_the_cli_says_what_it_found_and_exits_1(folder, tmp_path):
    command = [sys.executable, "-m", "labeler.cli", "verify", str(folder), "--json", "--unreadable-only",
               "--quarantine", str(tmp_path / "aside")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["checked"] == 12 and [f["path"] for f in out["found"]] == ["cats/page.png", "dogs/empty.jpg"]
    assert all(f["moved_to"] for f in out["found"]) and not (folder / "cats" / "page.png").exists()
    clean = subprocess.run(command[:7], capture_output=True, text=True, timeout=300)        # no quarantine this time
    assert clean.returncode == 0 and json.loads(clean.stdout)["found"] == []
