"""The cleaning view without a browser: queues as grids, decisions from keys and buttons, kept in the store."""
import csv
import io

import numpy as np
import pandas as pd
import pytest
from _helpers import run_notebook, write_image

from labeler.clean_session import PAGE_SIZE, CleanSession
from labeler.ui.clean_view import CleanView
from labeler.cleaning import QUEUES, empty_queue
from labeler.errors import LabelerError
from labeler.project import Project


@pytest.fixture
def project(image_folder):
    with Project(image_folder, actor="me") as opened:
        ids = [item.id for item in opened.items]
        opened.store.assign(ids[:6], "a")
        opened.store.assign(ids[6:], "b")
        yield opened


def queue(project, ids, *, suggested=None, group=None, keep=None):
    """A queue as labeler.cleaning.build_queues makes it (the contract's columns, by score descending)."""
    names = project.paths_for(ids)
    given = dict(zip(project.labels["item_id"], project.labels["label"]))
    count = len(ids)
    return pd.DataFrame({
        "item_id": np.asarray(ids, dtype=np.int64), "image_name": names,
        "score": np.linspace(0.9, 0.1, count), "given": [given.get(i, "") for i in ids],
        "suggested": suggested or [""] * count, "confidence": np.full(count, 0.8),
        "reason": ["looks odd"] * count, "group": np.asarray(group or [-1] * count, dtype=np.int64),
        "keep": np.asarray(keep or [True] * count, dtype=bool)})


@pytest.fixture
def queues(project):
    return {"label_issues": queue(project, [0, 7, 3], suggested=["b", "a", "b"]),
            "top_losses": queue(project, [7, 1, 2, 8], suggested=["a", "a", "b", "a"]),
            "duplicates": queue(project, [4, 5, 10, 11], group=[0, 0, 1, 1], keep=[True, False, True, False]),
            "odd_files": empty_queue()}


@pytest.fixture
def view(project, queues):
    return CleanView(project, queues=queues)


def shown(view):
    return {card["id"]: card["decision"] for card in view._grid.items}


def press(view, *keys):
    for key in keys:   # one at a time, as a person types
        view._shortcuts.press(key)


def current_label(project, item):
    return dict(zip(project.labels["item_id"], project.labels["label"]))[item]


# ---- the session ---------------------------------------------------------------------------------

def test_queue_table_lists_items_by_score_with_current_label_and_no_decision(project, queues):
    session = CleanSession(project, queues)
    table = session.table()
    assert table["item_id"].tolist() == [0, 7, 3]
    assert table["label"].tolist() == ["a", "b", "a"] and (table["decision"] == "").all()


def test_decisions_show_in_their_queue_and_relabels_and_exclusions_everywhere(project, queues):
    session = CleanSession(project, queues)
    session.relabel("b")                       # item 0, focused first
    assert session.focused()["item_id"] == 7   # the focus moves on
    session.exclude()                          # item 7
    session.switch("top_losses")
    session.keep()                             # item 7 again: kept in this queue
    texts = dict(zip(session.table()["item_id"], session.table()["decision"]))
    assert texts[7] == "kept"
    session.switch("label_issues")
    texts = dict(zip(session.table()["item_id"], session.table()["decision"]))
    assert texts == {0: "relabeled: b", 7: "excluded", 3: ""}
    assert current_label(project, 0) == "b"


def test_exclusion_from_another_queue_names_that_queue(project, queues):
    session = CleanSession(project, queues)
    session.switch("top_losses")
    session.exclude()                          # item 7
    session.switch("label_issues")
    assert session.table().set_index("item_id").loc[7, "decision"] == "excluded (Top losses)"


def test_switching_queues_keeps_each_queues_focus(project, queues):
    session = CleanSession(project, queues)
    session.move(2)
    session.switch("top_losses")
    session.move(1)
    session.switch("label_issues")
    assert session.focused()["item_id"] == 3
    session.switch("top_losses")
    assert session.focused()["item_id"] == 1


def test_hide_decided_leaves_decided_items_out(project, queues):
    session = CleanSession(project, queues)
    session.keep()
    session.hide_decided = True
    assert session.table()["item_id"].tolist() == [7, 3]
    assert session.counts()["label_issues"] == (1, 3)


def test_accept_relabels_to_the_suggestion_and_in_duplicates_keeps_or_excludes(project, queues):
    session = CleanSession(project, queues)
    session.accept()
    assert current_label(project, 0) == "b"
    session.switch("duplicates")
    session.accept()                             # item 4: the suggested keeper
    session.accept()                             # item 5: a copy
    assert dict(zip(session.table()["item_id"], session.table()["decision"])) == \
        {4: "kept", 5: "excluded", 10: "", 11: ""}
    assert project.store.excluded() == {5}


def test_accept_without_a_suggestion_says_what_to_do(project):
    session = CleanSession(project, {"label_issues": queue(project, [0])})
    with pytest.raises(LabelerError, match=r"has no suggested label to accept; keep it \(k\), exclude it \(x\)"):
        session.accept()


def test_relabel_by_number_uses_the_labels_display_order(project, queues):
    session = CleanSession(project, queues)
    session.relabel_by_number(2)
    assert current_label(project, 0) == "b"
    with pytest.raises(LabelerError, match=r"There is no label 7; the labels are 1: a, 2: b"):
        session.relabel_by_number(7)


def test_undo_takes_back_the_last_decision(project, queues):
    session = CleanSession(project, queues)
    session.exclude()
    assert session.undo() == "Undid: exclude 1 item (label_issues)"
    assert project.store.excluded() == set() and (session.table()["decision"] == "").all()


def test_decisions_outlive_a_new_session_and_a_recompute_that_leaves_excluded_items_out(project, queues):
    CleanSession(project, queues).exclude()                        # item 0
    again = CleanSession(project, {"label_issues": queue(project, [7, 3])})   # recomputed: 0 is excluded now
    table = again.table()
    assert table["item_id"].tolist() == [7, 3, 0]
    assert table["decision"].tolist() == ["", "", "excluded"]


def test_paging_moves_the_focus_a_page_at_a_time(tmp_path):
    for i in range(PAGE_SIZE + 6):
        write_image(tmp_path / "many" / f"{i:03d}.png", seed=i)
    with Project(tmp_path / "many") as many:
        session = CleanSession(many, {"label_issues": queue(many, list(range(PAGE_SIZE + 6)))})
        assert session.page() == (0, 2)
        session.step_page(1)
        assert session.position() == PAGE_SIZE and session.page() == (1, 2)
        session.move(-1)
        assert session.page() == (0, 2)
        session.step_page(5)
        assert session.position() == PAGE_SIZE


def test_unknown_queue_is_rejected_with_the_choices(project):
    with pytest.raises(LabelerError, match=r"Unknown cleaning queue 'typos'; choose one of label_issues"):
        CleanSession(project).switch("typos")


# ---- the view ------------------------------------------------------------------------------------

def test_keys_relabel_exclude_and_move_and_the_grid_shows_the_decisions(view, project):
    press(view, "2")                       # relabel item 0 with label 2 ("b"); focus moves to item 7
    press(view, "ArrowRight", "x")         # skip 7, exclude 3
    assert shown(view) == {0: "relabeled: b", 7: "", 3: "excluded"}
    assert view._grid.items[0]["label"] == "b" and view._grid.items[0]["given"] == "a"
    assert "Excluded" in view.status
    press(view, "ctrl+z")
    assert shown(view)[3] == "" and project.store.excluded() == set()
    press(view, "ctrl+shift+z")
    assert shown(view)[3] == "excluded"


def test_switching_queue_and_back_still_shows_both_decisions(view):
    press(view, "a", "x")                  # accept the suggestion for item 0, exclude item 7
    press(view, "]")
    assert view.queue == "top_losses" and shown(view)[7] == "excluded (Likely label errors)"
    press(view, "[")
    assert view.queue == "label_issues" and shown(view) == {0: "relabeled: b", 7: "excluded", 3: ""}


def test_buttons_and_typed_labels_decide_on_the_focused_item(view, project):
    view._keep.clicks += 1                 # item 0
    view._grid.focus = 2                   # a click on the third card (item 3)
    view._relabel.value_input = "c"
    view._relabel.param.trigger("enter_pressed")
    assert shown(view) == {0: "kept", 7: "", 3: "relabeled: c"}
    assert current_label(project, 3) == "c" and "3: c" in [b.label for b in view._labels_box]


def test_a_bad_key_action_shows_a_message_not_an_error(project):
    view = CleanView(project, queues={"label_issues": queue(project, [0])})
    press(view, "a")
    assert "no suggested label to accept" in view.status


def test_download_is_the_cleaned_csv(view, project):
    press(view, "2", "x")                  # item 0 -> b, item 7 excluded
    rows = list(csv.reader(io.StringIO(view._download.callback().getvalue().decode())))
    by_name = dict(rows[1:])
    names = project.paths_for([0, 7])
    assert rows[0] == ["image_name", "tags"] and by_name[names[0]] == "b" and names[1] not in by_name
    assert len(rows) == 1 + 11


def test_compute_fills_the_queues_and_a_failure_is_a_message(project, queues):
    calls = []

    opened_with = []

    def builder(opened, **kwargs):
        calls.append(kwargs)
        opened_with.append((opened.backbone, opened.size))
        return queues

    view = CleanView(project, builder=builder)
    assert "Find issues" in view._empty.object and view._empty.visible
    view.compute(wait=True)
    assert calls[0]["model"] is None and opened_with[0] == ("mobilenet_v2", 160)
    assert list(view._queue_select.options) == ["Likely label errors (3)", "Top losses (4)", "Duplicates (4)",
                                                "Odd files (0)"]
    assert view.status == "Found 3 likely label errors, 4 top losses, 4 duplicates, 0 odd files."
    view.queue = "odd_files"
    assert view._empty.visible and "every image is readable" in view._empty.object

    def broken(opened, **kwargs):
        raise ValueError("boom")

    failing = CleanView(project, builder=broken)
    failing.compute(wait=True)
    assert failing.status == "Could not find issues: ValueError: boom (the server log has the details)"
    assert not failing.computing


def test_top_losses_use_the_current_model_unless_a_model_file_is_typed(project, queues):
    from labeler.model_store import ModelStore, write_record
    models = []

    def builder(opened, **kwargs):
        models.append(kwargs["model"])
        return {**queues, "top_losses": empty_queue()}

    view = CleanView(project, builder=builder)
    view.compute(wait=True)                               # no model yet: the empty queue says where to get one
    view.queue = "top_losses"
    assert models == [None] and "Top losses of" not in view.status
    assert "Fine-tune a model in the Model tab" in view._empty.object
    store = ModelStore(project.workspace.root)
    for _ in range(2):                                    # a folder with a record is a finished model
        write_record(store.new_dir(), {"task": "classify", "metrics": {}, "labels": 12})
    store.set_current("model-1")
    view.compute(wait=True)
    assert models[-1] == str(store.model_path("model-1")) and view.status.endswith(" Top losses of model-1.")
    view.model_path = " elsewhere/model.pt "              # a file typed in the field wins
    view.compute(wait=True)
    assert models[-1] == "elsewhere/model.pt" and view.status.endswith(" Top losses of elsewhere/model.pt.")


def test_queues_property_gives_dataframes_with_decisions(view):
    press(view, "k")
    frames = view.queues
    assert list(frames) == list(QUEUES)
    assert frames["label_issues"].loc[0, "decision"] == "kept"
    assert {"item_id", "image_name", "score", "given", "suggested", "confidence", "reason", "group", "keep",
            "decision", "label"} <= set(frames["duplicates"].columns)


def test_the_view_opens_a_folder_given_by_path(image_folder):
    view = CleanView(str(image_folder))
    assert view.project.folder == image_folder.resolve() and view._grid.items == []
    view.project.close()


def test_keys_that_arrive_together_are_each_handled_in_order(view):
    view._shortcuts.press("k", "k", "x")   # the page sent three presses in one message
    assert shown(view) == {0: "kept", 7: "kept", 3: "excluded"}


@pytest.mark.slow
def test_clean_notebook_runs_on_real_digits(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    import shutil
    from pathlib import Path

    from engine.demo import demo_folder, demo_truth
    folder = tmp_path / "digits"
    folder.mkdir()
    with open(demo_truth(), newline="") as f:
        for name, _ in list(csv.reader(f))[1:81]:                     # 80 digits, about 8 per class
            shutil.copy(demo_folder() / name, folder / name)
    monkeypatch.setenv("LABELER_EXAMPLE_FOLDER", str(folder))
    notebook = Path(__file__).resolve().parent.parent / "examples" / "clean_in_jupyter.ipynb"
    assert all(cell.outputs == [] for cell in nbformat.read(notebook, as_version=4).cells
               if cell.cell_type == "code")
    run_notebook(notebook, tmp_path, monkeypatch)
    rows = list(csv.reader(io.StringIO((tmp_path / "cleaned.csv").read_text())))
    assert rows[0] == ["image_name", "tags"] and len(rows) == 1 + 79    # one excluded
