"""The hostile corpus (labeler/hostile.py) through the served app in headless Chromium: opening the folder,
importing every hostile labels CSV with the Label tab's file picker, typing every hostile label name.

Each good image is on the map, each unusable file is listed with its reason, each CSV imports or says why
naming the file (and then changes nothing), each label name is stored exactly or refused with the reason, and
after all of it: no script ran, no element came from a name, no page error, no traceback in the server log,
the labels kept before the imports still there, and the page's label buttons equal the store.
"""
import re

import pytest

from labeler.hostile import CSV_KINDS, DUPLICATES, FILE_KINDS, LABEL_KINDS
from labeler.project import Project
from labeler.testing import (assert_no_traceback, injected_elements, lasso, shown_labels, start_server,
                             stop_server, wait_until)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEPT_LABEL = "kept before"


@pytest.fixture
def served_corpus(hostile_corpus, tmp_path):
    folder, made = hostile_corpus
    workspace = tmp_path / "workspace"
    with Project(folder, workspace) as project:      # a label saved before anything hostile is imported
        project.store.assign(project.ids_for([DUPLICATES[0]]), KEPT_LABEL)
    proc, url = start_server(folder, workspace)
    yield folder, workspace, made, url
    assert_no_traceback(stop_server(proc))


def _labels(folder, workspace) -> dict[str, str]:
    with Project(folder, workspace) as project:
        frame = project.labels
        return dict(zip(frame["image_name"], frame["label"]))


def _counts(folder, workspace) -> dict[str, int]:
    with Project(folder, workspace) as project:
        return project.store.counts()


def _said(page, pattern: str) -> str:
    message = page.locator(".labeler-message").filter(has_text=re.compile(pattern)).first
    message.wait_for(timeout=60_000)
    return message.inner_text()


def test_the_hostile_corpus_opened_imported_and_typed_in_the_served_app(served_corpus, hostile_label_files, page):
    folder, workspace, made, url = served_corpus
    seen = {"dialogs": [], "errors": []}
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.goto(url)
    page.get_by_text(re.compile(r"^Layer: ")).first.wait_for(timeout=300_000)

    # opening the folder: the page says what is left out of the map and why; the odd files queue of the Clean
    # tab names every file that could not be read, with its reason
    said = _said(page, r"are not on the map")
    assert "6 files could not be read" in said and "entries named like images cannot be used" in said, said
    page.locator(".bk-tab", has_text="Clean").click()
    page.get_by_role("button", name=re.compile(r"^Odd files")).click()
    page.get_by_text(re.compile(r"^Odd files: ")).first.wait_for(timeout=120_000)
    with Project(folder, workspace) as project:
        items = {item.path for item in project.items}
        entries = {entry["path"]: entry["reason"] for entry in project.workspace.unusable}
    assert f"{len(entries)} entries named like images cannot be used" in said, said
    kinds = [kind for kind in FILE_KINDS if kind.embed and not made[kind.id].skip]
    for kind in kinds:
        if made[kind.id].paths[0] not in items:    # not an item at all: counted in the message
            assert any(kind.embed in reason for reason in entries.values()), (kind.id, entries)
    # an item that cannot be read: a card of its own (the cards are drawn after the queue's title)
    unreadable = [kind.embed for kind in kinds if made[kind.id].paths[0] in items]
    def odd() -> str:
        return "\n".join(page.locator(".clean-card").all_inner_texts())
    wait_until(lambda: all(reason in odd() for reason in unreadable), 60)
    page.locator(".bk-tab", has_text="Label").click()

    # importing each hostile CSV with the file picker
    expected = _labels(folder, workspace)
    assert expected == {DUPLICATES[0]: KEPT_LABEL}
    picker = page.locator("input[type=file]")
    for kind in CSV_KINDS:
        source = hostile_label_files[kind.id]
        picker.set_input_files(str(source))
        if kind.refused:
            said = _said(page, rf"{re.escape(source.name)}.*Nothing changed")
            assert kind.refused in said, (kind.id, said)
            assert "labeler-import-" not in said                 # the person's file, never a server path
        else:
            said = _said(page, rf"^Imported {re.escape(source.name)}:")
            expected.update(kind.labels)
            if kind.id == "csv_unknown_names":
                assert "not/here.png" in said and "missing.jpg" in said, said
        wait_until(lambda: _labels(folder, workspace) == expected, 30)
        wait_until(lambda: shown_labels(page) == _counts(folder, workspace), 30)
    # an import is one undoable action
    before = _labels(folder, workspace)
    page.get_by_role("button", name="Undo").click()
    _said(page, r"^Undid: import labels from csv_odd_file_names\.csv")
    assert _labels(folder, workspace) != before
    page.get_by_role("button", name="Redo").click()
    _said(page, r"^Redid: ")
    wait_until(lambda: _labels(folder, workspace) == before, 30)

    # typing each hostile label name for a lassoed group
    field = page.get_by_placeholder("new label, then Enter")
    for kind in LABEL_KINDS:
        lasso(page, 0.05, 0.95, 0.15, 0.95)
        page.get_by_text(re.compile(r"\d+ selected")).first.wait_for(timeout=20_000)
        before = _counts(folder, workspace)
        field.fill(kind.name)
        field.press("Enter")
        if not kind.name.strip():                 # an empty field: Enter does nothing
            page.wait_for_timeout(500)
            assert _counts(folder, workspace) == before
        elif kind.refused:
            assert kind.refused in _said(page, re.escape(kind.refused)), kind.id
            assert _counts(folder, workspace) == before
        else:
            _said(page, rf"^Labeled \d+ images “{re.escape(kind.name.strip())}”")
            assert _counts(folder, workspace).get(kind.name.strip(), 0) > 0, kind.id
        wait_until(lambda: shown_labels(page) == _counts(folder, workspace), 30)

    # nothing ran, nothing became HTML, the label kept from before the imports is where it was
    assert page.title() == "labeler"
    assert not any(injected_elements(page).values()), injected_elements(page)
    assert not seen["dialogs"] and not seen["errors"], seen
    page.reload()        # a folder with unreadable files opens at once again (they are not retried)
    page.get_by_text(re.compile(r"^Layer: ")).first.wait_for(timeout=120_000)
    wait_until(lambda: shown_labels(page) == _counts(folder, workspace), 30)
    assert DUPLICATES[0] in _labels(folder, workspace)

