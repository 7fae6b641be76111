"""The app's per-tab logic without a browser: rows arriving while features are computed, review, labeling."""
import numpy as np
import pytest

from engine import embed
from engine.data import discover_images
from labeler.errors import LabelerError
from labeler.palette import paler
from labeler.project import Project
from labeler.session import Session

EMBED = dict(backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)


def test_the_map_grows_as_features_arrive_and_reviews_label_only_kept_items(image_folder, tmp_path):
    later = tmp_path / "later"
    later.mkdir()
    for path in discover_images(image_folder)[5:]:                  # only 5 images have features at first
        (image_folder / path).rename(later / path.replace("/", "_"))
    project = Project(image_folder, backbone="resnet18", size=32)
    embed(project.workspace, **EMBED)
    session = Session(project)
    assert len(session.rows) == 5
    assert session.coords().shape == (5, 2)
    for path in later.iterdir():                                     # the rest arrive
        path.rename(image_folder / path.name)
    embed(project.workspace, **EMBED)
    session.refresh_rows()
    assert len(session.rows) == 12 and session.coords().shape == (12, 2)

    review = session.select(session.rows[:4])
    assert review.toggle(int(session.rows[1])) is True               # dropped
    assert review.toggle(int(session.rows[2])) is True
    assert review.toggle(int(session.rows[2])) is False              # and taken back
    assert session.label_review("blob") == 3
    names, labels = session.human_labels()
    assert names == ["blob"]
    assert np.flatnonzero(labels == 0).tolist() == sorted(int(i) for i in session.rows[[0, 2, 3]])


def test_training_offers_the_predicted_view_which_places_images_by_the_models_probabilities(image_folder):
    project = Project(image_folder, backbone="resnet18", size=32)
    embed(project.workspace, **EMBED)
    session = Session(project)
    assert "Predicted" not in [v.name for v in session.views]
    paths = {item.id: item.path for item in project.items}
    a = [int(i) for i in session.rows if paths[int(i)].startswith("a/")]
    b = [int(i) for i in session.rows if paths[int(i)].startswith("b/")]
    session.select(a[:3])
    session.label_review("a")
    session.select(b[:3])
    session.label_review("b")
    session.train()
    names = [v.name for v in session.views]
    assert "Predicted" in names
    session.view_index = names.index("Predicted")
    assert session.view.follows_labels
    assert session.is_ready() is False                 # no coordinates computed yet in this session
    xy = session.coords()
    assert session.is_ready() is True                  # the Predicted view stands on PCA 1-2, now computed
    assert xy.shape == (len(session.rows), 2) and np.isfinite(xy).all()
    radius = np.linalg.norm(xy, axis=1)
    labeled = np.isin(session.rows, a[:3] + b[:3])
    assert radius[labeled].min() > radius[~labeled].max()     # done images sit outside, the rest inside
    _, ids, probs = session.predictions()
    row_of = {int(i): k for k, i in enumerate(session.rows)}
    p_a = {int(i): probs[k, 0] for k, i in enumerate(ids)}
    free = [i for i in session.rows if not labeled[row_of[int(i)]]]
    # the more the model leans to "a" (anchor at the top), the higher the image sits
    tops = np.array([xy[row_of[int(i)], 1] for i in free])
    leans = np.array([p_a[int(i)] for i in free])
    assert np.corrcoef(tops, leans)[0, 1] > 0.8
    # a new session on the same project offers it at once (the predictions are stored)
    assert "Predicted" in [v.name for v in Session(project).views]


def test_images_dropped_from_a_review_stay_selected_for_their_own_label(image_folder):
    project = Project(image_folder, backbone="resnet18", size=32)
    embed(project.workspace, **EMBED)
    session = Session(project)
    ids = [int(i) for i in session.rows[:5]]
    review = session.select(ids)
    review.toggle(ids[1])
    review.toggle(ids[3])
    assert session.label_review("a") == 3
    assert session.review.ids == [ids[1], ids[3]] and not session.review.dropped
    assert session.label_review("b") == 2                    # one more click labels the odd ones out
    assert session.review.ids == []
    names, labels = session.human_labels()
    assert [names[labels[i]] for i in ids] == ["a", "b", "a", "b", "a"]


def _session_with_predictions(image_folder, probs_a):
    """Six images labeled (3 a, 3 b), and stored predictions for the six others: P(a) as given."""
    project = Project(image_folder, backbone="resnet18", size=32)
    embed(project.workspace, **EMBED)
    session = Session(project)
    rows = [int(i) for i in session.rows]
    session.select(rows[:3])
    session.label_review("a")
    session.select(rows[3:6])
    session.label_review("b")
    free = rows[6:]
    probs = np.array([[p, 1 - p] for p in probs_a], dtype=np.float32)
    session.store.set_predictions("m1", free, ["a", "b"], probs)
    return session, free


def test_a_check_shows_a_random_sample_of_unlabeled_predictions_above_the_threshold(image_folder):
    session, free = _session_with_predictions(image_folder, [0.99, 0.97, 0.02, 0.6, 0.5, 0.93])
    review = session.check_predictions(0.9, n=10, seed=0)
    confident = {free[0]: "a", free[1]: "a", free[2]: "b", free[5]: "a"}
    assert set(review.ids) == set(confident) and review.predicted == confident
    assert review.ids[-1] == free[2]                             # grouped by the predicted label
    assert review.check.pool == 4 and review.check.threshold == 0.9
    assert len(session.check_predictions(0.9, n=2, seed=1).ids) == 2
    with pytest.raises(LabelerError, match="0.995"):
        session.check_predictions(0.995)


def test_accepting_a_check_labels_what_was_kept_and_measures_the_precision(image_folder):
    session, free = _session_with_predictions(image_folder, [0.99, 0.97, 0.02, 0.6, 0.5, 0.93])
    session.check_predictions(0.9, n=3, seed=0)
    shown = list(session.review.ids)
    wrong = shown[0]
    session.review.toggle(wrong)                                  # the person disagrees with this one
    assert session.accept_review() == 2
    names, labels = session.human_labels()
    for item in shown[1:]:
        assert names[labels[item]] == session_predicted(session, item)
    assert labels[wrong] == -1 and session.review.ids == [wrong]   # the wrong one stays selected
    assert session.checked_precision(0.9) == (2, 3)
    assert session.checked_precision(0.995) == (0, 0)
    # what the checks showed is kept in the label store: a reload (a new session) still knows it
    assert Session(session.project).checked_precision(0.9) == (2, 3)
    # the next check draws from the images not checked yet; accept skips the one shown to be wrong
    assert session.check_predictions(0.9, n=10, seed=0).ids == [i for i in (free[0], free[1], free[5], free[2])
                                                               if i not in shown]
    session.select([])
    session.accept(0.9)
    assert session.human_labels()[1][wrong] == -1
    with pytest.raises(LabelerError, match="Check"):
        session.accept_review()


def session_predicted(session, item):
    classes, ids, probs = session.predictions()
    return classes[int(probs[list(ids).index(item)].argmax())]


def test_one_image_of_a_review_can_be_labeled_by_itself(image_folder):
    session, free = _session_with_predictions(image_folder, [0.99, 0.97, 0.02, 0.6, 0.5, 0.93])
    review = session.check_predictions(0.9, n=4, seed=0)
    first = review.ids[0]
    session.label_item(first, "b")                                 # predicted a: a wrong prediction, fixed
    assert first not in session.review.ids and first not in session.review.predicted
    names, labels = session.human_labels()
    assert names[labels[first]] == "b"
    assert session.accept_review() == 3
    assert session.checked_precision(0.9) == (3, 4)
    with pytest.raises(LabelerError, match="not in the review"):
        session.label_item(free[3], "a")


def test_accepting_without_a_model_says_to_train_and_accepting_after_checks_says_how_many_are_likely_wrong(
        image_folder):
    project = Project(image_folder, backbone="resnet18", size=32)
    embed(project.workspace, **EMBED)
    with pytest.raises(LabelerError, match="needs a trained model: press Train first"):
        Session(project).accept_above(0.9)
    session, free = _session_with_predictions(image_folder, [0.99, 0.97, 0.02, 0.6, 0.5, 0.93])
    session.check_predictions(0.9, n=2, seed=0)
    session.review.toggle(session.review.ids[0])
    session.accept_review()                                       # 1 of 2 checked right
    accepted = session.accept_above(0.9)
    assert accepted.count == 2 and (accepted.checked.right, accepted.checked.seen) == (1, 2)
    assert accepted.likely_wrong == 1 and 0 < accepted.checked.lower_bound < 0.5


def test_colours_show_labels_paler_predictions_and_fade_what_the_model_knows(image_folder):
    session, free = _session_with_predictions(image_folder, [0.99, 0.97, 0.02, 0.6, 0.5, 0.93])
    colours = session.label_colours()
    colour, alpha = session.colours()
    names, labels = session.human_labels()
    labeled = np.flatnonzero(labels >= 0)
    assert [colour[i] for i in labeled] == [colours[names[labels[i]]] for i in labeled]
    assert colour[free[0]] == paler(colours["a"]) and colour[free[2]] == paler(colours["b"])
    faded_colour, faded = session.colours(vary_opacity=True)
    assert faded[free[0]] < faded[free[3]] < faded[free[4]]       # 0.99 sure fades most, 0.5 not at all
    assert (faded[labeled] < 0.1).all() and (alpha[labeled] > 0.9).all()
    assert (session.frames()[labeled] >= 0).all() and (session.frames()[free] == -1).all()


def test_undo_and_redo_go_through_the_session(image_folder):
    session, _ = _session_with_predictions(image_folder, [0.5] * 6)
    counts = session.label_counts()
    assert session.can_undo and not session.can_redo and session.label_for_key(2) == "b"
    assert session.undo() and session.label_counts() != counts and session.can_redo
    assert session.redo() and session.label_counts() == counts and session.label_for_key(3) is None
