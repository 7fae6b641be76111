"""Work of seconds off the server's main thread, headless: a UMAP of the map (labeler/ui/background_layout.py) and
Train's first model (labeler/ui/first_model_actions.py). The app keeps answering meanwhile; the UMAP is drawn when
it is ready if still wanted (pressing on asks for the newest only; a failure goes back to what the map shows), and
the first model's predictions are stored and shown when it is done.

The app's poller (`poll_job`, a periodic callback of a served page) is replaced by one that keeps the finished
job's callback, which the test then calls as the server's tick would."""
import threading

import numpy as np
import pytest

import engine.projection
from engine.errors import ProjectionError
from labeler.project import Project
from labeler.session import BASE_VIEWS, Session


@pytest.fixture
def app(prepared_folder, tmp_path):
    from labeler.ui.app import LabelApp
    app = LabelApp(prepared_folder, workspace=tmp_path / "workspace", backbone="resnet18", size=32)
    app.polled = []
    app._poll = lambda job, on_done, period_ms: app.polled.append((job, on_done))
    return app


def _tick(app):
    """The server's tick after the oldest computation finished: its callback runs."""
    job, on_done = app.polled.pop(0)
    assert job.join(120), "the background computation did not finish"
    on_done(job)


def _drawn_xy(app) -> np.ndarray:
    data = app.map.source.data
    return np.column_stack([data["x"], data["y"]]).astype(float)


def test_a_umap_is_computed_in_the_background_while_labels_are_answered_then_drawn(app):
    pca = _drawn_xy(app)
    assert app.session.view.name == "PCA 1-2"
    app._step_view(1)                                       # ↓: PCA 1-2 -> UMAP
    assert app.session.view.name == "UMAP" and len(app.polled) == 1
    assert app.status.startswith("Computing UMAP for ") and "(computing…)" in app._view_name.object
    np.testing.assert_array_equal(_drawn_xy(app), pca)      # the map shows what it showed
    app.map.source.selected.indices = [0, 1, 2]             # and answers a lasso and a label meanwhile
    app._label("cat")
    assert app.status.startswith("Labeled 3 images “cat”")
    _tick(app)
    assert app._view_name.object == "<b>View</b>: UMAP"
    assert not np.allclose(_drawn_xy(app), pca)             # the UMAP is drawn
    assert app.status.startswith("Labeled 3 images “cat”")  # and the acknowledgement stays
    assert app.polled == []


def test_a_umap_ready_while_a_selection_is_reviewed_waits_until_it_is_labeled(app):
    """A redraw clears the map's selection and moves its points: a review begun on the map shown keeps it."""
    pca = _drawn_xy(app)
    app._step_view(1)
    app.map.source.selected.indices = [0, 1, 2, 3]          # lassoed on the map shown, meanwhile
    app.session.review.toggle(app.session.review.ids[0])     # one dropped
    _tick(app)
    assert "(ready: shown once this selection is labeled or cleared)" in app._view_name.object
    assert app.status.endswith("is ready: the map shows it once this selection is labeled or cleared.")
    np.testing.assert_array_equal(_drawn_xy(app), pca)
    assert len(app.session.review.ids) == 4 and len(app.session.review.dropped) == 1   # the review as it was
    app._label("cat")                                        # the dropped one stays selected: still waiting
    assert app.session.review.ids and "ready" in app._view_name.object
    app._label("dog")                                        # the review is closed: the UMAP is drawn
    assert app._view_name.object == "<b>View</b>: UMAP" and not np.allclose(_drawn_xy(app), pca)
    assert app.status.startswith("Labeled 1 images “dog”")


def test_pressing_on_while_a_umap_is_computed_draws_the_newest_layer_and_keeps_the_others(app):
    app._step_view(1)
    first = app.session.layer
    app._step_layer(1)                                      # →, before the first UMAP is ready
    wanted = app.session.layer
    assert wanted != first and len(app.polled) == 1         # one computation at a time
    assert app.status.startswith(f"Computing UMAP for {wanted}")
    _tick(app)                                              # the first ends: the newest one starts
    assert len(app.polled) == 1 and app.session.is_ready(first, app.session.view)
    assert "(computing…)" in app._view_name.object
    _tick(app)
    assert app.session.layer == wanted and app._view_name.object == "<b>View</b>: UMAP"
    assert app.status == ""                                 # the note said what came; the map has it now
    app._step_layer(-1)                                     # back: drawn at once, from what was computed
    assert app.session.layer == first and app.polled == [] and "computing" not in app._view_name.object


def test_a_umap_that_fails_leaves_the_map_and_its_names_as_they_were_and_says_why(app, monkeypatch):
    def fail(features, method, *args, **kwargs):
        raise ProjectionError(f"{method} cannot place these {len(features)} images")
    monkeypatch.setattr(engine.projection, "cached_projection", fail)
    pca, layer = _drawn_xy(app), app.session.layer
    app._step_view(1)
    _tick(app)
    assert app.status == "The map stays as it was: umap cannot place these 12 images"
    assert app.session.view.name == "PCA 1-2" and app.session.layer == layer
    assert app._view_name.object == "<b>View</b>: PCA 1-2"
    np.testing.assert_array_equal(_drawn_xy(app), pca)
    assert app.polled == []                                 # nothing asked again


def test_a_session_computes_a_view_without_holding_its_lock(prepared_folder, tmp_path, monkeypatch):
    """Another view can be drawn while a UMAP computes in another thread (the session's lock is not held)."""
    project = Project(prepared_folder, tmp_path / "workspace", backbone="resnet18", size=32)
    session = Session(project)
    umap = next(view for view in BASE_VIEWS if view.method == "umap")
    started, release = threading.Event(), threading.Event()
    real = engine.projection.cached_projection

    def slow_umap(features, method, *args, **kwargs):
        if method == "umap":
            started.set()
            assert release.wait(60)
        return real(features, method, *args, **kwargs)
    monkeypatch.setattr(engine.projection, "cached_projection", slow_umap)
    work = session.coords_work(session.layer, umap)
    rows = session.rows.copy()
    session.rows = rows[:5]                                 # read when the work was made, not when it runs
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert started.wait(60)
    drawn = []
    other = threading.Thread(target=lambda: drawn.append(session.coords(session.layer, BASE_VIEWS[0])), daemon=True)
    other.start()
    other.join(30)
    assert drawn and drawn[0].shape == (5, 2), "PCA waited for the UMAP computing in another thread"
    release.set()
    thread.join(60)
    session.rows = rows
    assert session.is_ready(session.layer, umap) and session.coords(session.layer, umap).shape == (len(rows), 2)


def test_going_back_to_the_map_shown_while_a_umap_is_computed_leaves_that_map_alone(app):
    app._step_view(1)
    app._step_view(-1)                                       # back to PCA 1-2 before the UMAP is ready
    pca = _drawn_xy(app)
    app.map.source.selected.indices = [0, 1]                 # and a review begun on it
    _tick(app)                                               # the UMAP ends: kept for later, not drawn
    assert app._view_name.object == "<b>View</b>: PCA 1-2" and len(app.session.review.ids) == 2
    np.testing.assert_array_equal(_drawn_xy(app), pca)
    assert app.polled == [] and not app._positions.computing
    app._step_view(1)                                        # now UMAP is drawn at once
    assert app._view_name.object == "<b>View</b>: UMAP" and app.polled == []


def test_train_runs_in_the_background_while_labels_are_answered_and_its_predictions_follow(app):
    app.map.source.selected.indices = [0, 1, 2]
    app._label("cat")
    app.map.source.selected.indices = [6, 7, 8]
    app._label("dog")
    version = app.session.store.version
    app._on_train()
    assert app.status.startswith("Training on cached features… Keep labeling meanwhile") and len(app.polled) == 1
    app._on_train()                                          # pressed again while it runs
    assert app.status.startswith("Training already") and len(app.polled) == 1
    app.map.source.selected.indices = [3]                    # a label meanwhile is answered at once
    app._label("cat")
    assert app.status.startswith("Labeled 1 images “cat”") and app.session.latest_model() is None
    _tick(app)
    assert app.status.startswith("Trained.") and "label" in app._report.object
    assert app.session.latest_model() == f"first-{version}"  # fitted on the labels as they were when pressed
    classes, ids, probs = app.session.predictions()
    assert sorted(classes) == ["cat", "dog"] and len(ids) == len(app.session.rows) == 12
    assert "Predicted" in [view.name for view in app.session.views]
    app._on_train()                                          # and Train works again
    assert len(app.polled) == 1


def test_a_train_that_cannot_fit_says_why_and_can_be_pressed_again(app):
    app.map.source.selected.indices = [0, 1, 2]
    app._label("cat")                                        # one label: nothing to tell apart
    app._on_train()
    _tick(app)
    assert app._message.kind == "warning" and app.session.latest_model() is None
    assert app.status and not app.status.startswith("Trained")
    app._on_train()
    assert app.status.startswith("Training on cached features") and len(app.polled) == 1
