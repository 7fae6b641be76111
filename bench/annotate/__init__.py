"""A simulated annotator: how many of the app's actions it takes to label a folder, beside two baselines.

The annotator knows the true labels of a folder (folder names, an `image_name,tags` CSV, or head
direction derived from face keypoints) but acts only through the app's own session logic
(labeler/session.py) on a real project: switch layer or view, lasso a polygon of the 2D map, drop
an item from the review grid, label one item of the review by itself (its label's key over it),
click or type a label for the rest, find similar, separate labels, train, check predictions,
accept the shown predictions, accept everything above a confidence. Each of these costs one
action. It sees a true label only for an item in the review grid (`Oracle.look` refuses any
other), as a person sees the images they selected; everything else it decides from what the app
shows: the map, the colours of labels and predictions, what its checks of predictions showed.

Four policies run on the same folder, each in a fresh label store beside the shared feature cache:
  annotator       a few lassos in PCA 1-2 and UMAP of every layer to find the purest view; then lassos
                  of small groups around the centres of a k-means partition of that map, so the first
                  labels cover all of it; trains at 8% labeled and after each further 8%; after each
                  training checks the model's predictions from the surest band down (a random sample
                  above a confidence, the wrong ones labeled by key, the rest accepted as shown) and
                  accepts a whole band unseen once its checks show enough precision within an error
                  budget (check_step); when checks stop paying, lassos next to the label anchors of the
                  Predicted view and then in the best feature view, with find similar when it pays.
  annotator + fine-tune
                  the annotator, with the action "fine-tune" (the Model tab's button: a child process that
                  fine-tunes on the labels so far, then maps every image; one action, its wall time reported
                  apart) before Train at the first training point and whenever the labels have doubled; Train then
                  fits on the fine-tuned layer beside the ImageNet layers, and its lassos go to the fine-tuned layer.
  one view        UMAP of the last layer only: lasso, label the odd ones by key (or drop them), label
                  the rest (no layer switching, no find similar, no training).
  one at a time   one action per image.

`--drop-odd` makes both lasso policies drop the odd ones out instead of labeling each by its key
(dropped images stay selected and get their own majority label while that costs no more than one
action per image): the cost model of the platform.ai demo, where every odd one is clicked away.

    .venv/bin/python bench/annotate.py FOLDER [--labels CSV | --faces-direction KEYPOINTS] [--json]
    .venv/bin/python bench/annotate.py ../shared/data/cifar10
    .venv/bin/python bench/annotate.py ../shared/data/faces/images --faces-direction ../shared/data/faces/keypoints.csv

The modules, by idea:
  truth.py       the true labels: folder names, a tags CSV, head direction from face keypoints
  cost.py        the cost model: what the person may see (Oracle), what each action costs (Desk), the score (Judge)
  screen.py      the map as the annotator sees it: colours, the lassos on offer, their expected yield
  policy.py      what a lasso policy may do (Policy, ANNOTATOR, ONE_VIEW) and its record (Outcome)
  annotator.py   the Annotator's state and loop; its steps in _survey.py, _checks.py, _lassos.py, _review.py
  runner.py      a fresh label store per policy, the judge's milestones, the ratios between policies
  cli.py         the command line and its table

`bench/annotate.py` is the entry script: run as a file, its folder `bench/` comes first on `sys.path`,
where this package directory takes precedence over the script of the same name, so the script's
`import annotate` finds the package and calls `annotate.main`.
"""
from .annotator import Annotator
from .cli import main, table
from .cost import LEVELS, Desk, Judge, Oracle, PeekError
from .policy import ANNOTATOR, ONE_VIEW, POLICIES, Outcome, Policy
from .runner import POLICY_NAMES, PolicyError, benchmark, fresh_project, prepare, run_policy, useful_layers
from .screen import Region, Screen, atlas, colour_belief, expected_rate, outline, point_spacing, read_screen
from .truth import TruthError, faces_direction, truth_from_csv, truth_from_folders

__all__ = [
    "ANNOTATOR", "LEVELS", "ONE_VIEW", "POLICIES", "POLICY_NAMES",
    "Annotator", "Desk", "Judge", "Oracle", "Outcome", "PeekError", "Policy", "PolicyError", "Region", "Screen",
    "TruthError", "atlas", "benchmark", "colour_belief", "expected_rate", "faces_direction", "fresh_project",
    "main", "outline", "point_spacing", "prepare", "read_screen", "run_policy", "table", "truth_from_csv",
    "truth_from_folders", "useful_layers",
]
