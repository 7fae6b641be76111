"""Two LabelApps on one project, headless (two browser tabs of `labeler serve`): what each says and shows of the
other's labels, and the review that stays after a label (the map's own selection clearing is nobody's lasso)."""
import re


def _tab(prepared_folder, tmp_path):
    from labeler.ui.app import LabelApp
    return LabelApp(prepared_folder, workspace=tmp_path / "workspace", backbone="resnet18", size=32)


def _lasso(app, positions) -> list[int]:
    """What a lasso in the page does on the server: the plot's selection changes."""
    app.map.source.selected.indices = list(positions)
    return app.session.review.ids


def _buttons(app) -> dict[str, int]:
    found = (re.match(r"^(?:\d+: )?(.+) \((\d+)\)$", button.name) for button in app._labels_box.objects)
    return {m.group(1): int(m.group(2)) for m in found if m}


def test_images_dropped_before_a_label_stay_selected_for_the_next_one(prepared_folder, tmp_path):
    app = _tab(prepared_folder, tmp_path)
    ids = _lasso(app, [0, 1, 2, 3])
    app.session.review.toggle(ids[2])                    # dropped
    app._label("cat")
    assert app.status.startswith("Labeled 3 images “cat”. The 1 you dropped stay selected")
    assert app.session.review.ids == [ids[2]] and list(app.map.source.selected.indices) == []
    _lasso(app, [4])
    assert _lasso(app, []) == []                         # the person's own empty lasso still clears the review


def test_a_tab_shows_and_says_another_tabs_labels_at_its_next_action_and_undoes_only_its_own(prepared_folder, tmp_path):
    a, b = _tab(prepared_folder, tmp_path), _tab(prepared_folder, tmp_path)
    _lasso(a, [0, 1, 2, 3])
    a._label("cat")
    assert _buttons(b) == {}                             # nothing shown before b acts
    _lasso(b, [4, 5])
    assert b.status == "Another tab labeled 4 images since your last action (shown here now)."
    assert _buttons(b) == {"cat": 4}
    b._label("dog")
    assert b.status == "Labeled 2 images “dog”."         # the acknowledgement stays: no news since the lasso
    _lasso(a, [6])
    assert a.status == "Another tab labeled 2 images since your last action (shown here now)."
    _lasso(b, [7])
    b._label("dog")                                      # while a reviews its selection
    a._label("cat")
    assert a.status == ("Labeled 1 images “cat”. Another tab labeled 1 image since your last action "
                        "(shown here now).")
    assert _buttons(a) == {"cat": 5, "dog": 3}
    b._on_undo()
    assert b.status == "Undid: label 1 item 'dog'. Another tab labeled 1 image since your last action (shown here now)."
    b._on_undo()
    assert b.status == "Undid: label 2 items 'dog'" and _buttons(b) == {"cat": 5}
    a._on_undo()
    assert a.status == "Undid: label 1 item 'cat'. Another tab undid 2 actions since your last action (shown here now)."
    assert _buttons(a) == {"cat": 4}


def test_the_labels_download_says_which_labeled_images_it_leaves_out(prepared_folder, tmp_path):
    app = _tab(prepared_folder, tmp_path)
    ids = _lasso(app, [0, 1, 2])
    app._label("cat")
    assert app._csv("labels").getvalue().decode().count("\n") == 4          # the header and three rows
    assert app.status.startswith("Labeled 3 images")                          # nothing left out: nothing said
    app.session.project.store.exclude(ids[:1], "a blurred copy")
    rows = app._csv("labels").getvalue().decode().splitlines()
    assert len(rows) == 3 and _buttons(app) == {"cat": 3}                    # the buttons count it still
    assert app.status == "The file holds 2 labeled images; left out: 1 excluded in the Clean tab."
