"""The app's per-tab logic without a browser: rows arriving while features are computed, review, labeling."""
import numpy as np

from engine import embed
from engine.data import discover_images
from labeler.project import Project
from labeler.session import Session

EMBED = dict(backbone="resnet18", size=32, batch_size=4, workers=0, pretrained=False)


def test_the_map_grows_as_features_arrive_and_reviews_label_only_kept_items(image_folder, tmp_path):
    later = tmp_path / "later"
    later.mkdir()
    for path in discover_images(image_folder)[5:]:                  # only 5 images have features at first
        (image_folder / path).rename(later / path.replace("/", "_"))
    project = Project(image_folder)
    embed(project.workspace, **EMBED)
    session = Session(project, backbone="resnet18", size=32)
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
