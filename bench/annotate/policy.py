"""What a lasso policy may do (`Policy`, the two that run: `ANNOTATOR`, `ONE_VIEW`) and the record it keeps
of its lassos, checks and find similar (`Outcome`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    name: str
    explore: bool = True          # try PCA 1-2 and UMAP of every layer, keep the purest
    similar: bool = True          # grow a clean review with find similar when that pays
    train: bool = True            # train at first_train, then each retrain_every; check and accept (check_step)
    start: tuple[int, str] | None = None    # (layer index, view name) to go to first
    # label a review only if (label + drops) / items labeled <= this; leaving mixed lassos unlabeled
    # stalled cifar10 at 81% (4,679 actions), while labeling every majority reached 90% in 3,923
    max_cost: float = float("inf")
    explore_lassos: int = 2
    first_train: float = 0.08     # train once this share of the items is labeled...
    retrain_every: float = 0.08   # ...and again after each further share
    predicted: bool = True        # after training, lasso around the label anchors of the Predicted view
    survey: bool = True           # before the first model, lasso small groups spread over the whole map
    # the odd ones out of a review: each labeled by itself (one key each), or dropped (one click each;
    # they stay selected and are labeled by their own majority while that costs no more than one at a time)
    label_odd: bool = True
    review_size: int = 40         # images lassoed there at first (grows while reviews stay pure)
    # fine-tune the network (one action; `labeler.finetune`, as the Model tab does) before Train once the labels have
    # grown by this share since the last fine-tune (the first at first_train); its layer becomes the map the lassos
    # use and a part of Train's features (Train's model on both predicted cifar10 better than the fine-tuned network
    # alone at 300 and 1,200 random labels: 0.70 and 0.75 against 0.55 and 0.70). None: Train only
    fine_tune_growth: float | None = None


ANNOTATOR = Policy("annotator")
FINE_TUNING = Policy("annotator + fine-tune", fine_tune_growth=1.0)
ONE_VIEW = Policy("one view", explore=False, similar=False, train=False, predicted=False, survey=False,
                  start=(-1, "UMAP"))
POLICIES = {policy.name: policy for policy in (ANNOTATOR, FINE_TUNING, ONE_VIEW)}   # the lasso policies by name


@dataclass
class Outcome:
    """Lassos in one view: how pure the reviews were, what they labeled and what they cost."""

    lassos: int = 0
    free: int = 0
    majority: int = 0
    labeled: int = 0
    actions: int = 0

    def add(self, free: int, majority: int, labeled: int, actions: int) -> None:
        self.lassos += 1
        self.free, self.majority, self.labeled, self.actions = (self.free + free, self.majority + majority,
                                                                self.labeled + labeled, self.actions + actions)

    @property
    def purity(self) -> float:
        return self.majority / max(1, self.free)

    def to_json(self) -> dict:
        return {"lassos": self.lassos, "purity": round(self.purity, 3), "labeled": self.labeled,
                "actions": self.actions}
