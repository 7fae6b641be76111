"""The Label tab's first model: Train (in a background thread), checks of its predictions, and accepting them.

Train fits a logistic regression on the cached features of every layer and predicts every image: seconds, and
41 s at 100k images (README, "The whole workflow at scale"). On the server's main thread that stopped every
page of the server meanwhile; here the fitting and predicting run in a thread (`Session.training_work`: numpy
and scikit-learn leave the interpreter to the pages while they compute) and the predictions are stored, and the
map coloured, on the server's tick once it is done. The person keeps labeling meanwhile; a second Train while
one runs is told so.
"""
from __future__ import annotations

from labeler.jobs import Job

from ._panel import esc, html_table

TRAIN_POLL_MS = 300


class FirstModelActions:
    """Train, Check predictions, Accept shown and Accept all above, as `LabelApp` methods."""

    _training: Job | None = None

    def _on_train(self) -> None:
        if self._training is not None:
            self._show("Training already: its report shows here when it is done.", "info")
            return
        work = self.session.training_work()             # the labels as they are now
        self._show("Training on cached features… Keep labeling meanwhile: the map shows the predictions when it "
                   "is done.", "info")
        self._training = Job(lambda job: work(), name="labeler-train").start()
        self._poll(self._training, on_done=lambda job: self._run(self._trained, job), period_ms=TRAIN_POLL_MS)

    def _trained(self, job: Job) -> None:
        self._training = None
        if job.error is not None:
            self._show(job.error, "warning")
            return
        report = self.session.finish_training(job.result)
        rows = [(name, v["n"], f"{v['precision']:.0%}", f"{v['recall']:.0%}") for name, v in report.per_label.items()]
        seen = " and the fine-tuned layer it also uses was trained on them" if self.session.model_layer else ""
        self._report.object = (f"<b>{esc(report.summary())}</b><br><small>Optimistic: lassoed labels are the easy "
                               f"cores of groups{seen}. Checks of random predictions below measure the rest.</small>"
                               + html_table(("label", "n", "precision", "recall"), rows))
        self._show("Trained. Unlabeled images now show the predicted label (paler); the view list now offers "
                   "Predicted, which places them between the labels by the model's probabilities. Check predictions "
                   "shows a random sample above the threshold to confirm or correct.", "success")
        self._show_checked()
        self._after_change()

    def _show_checked(self) -> None:
        """Whose predictions are shown, and what checks showed of them above the threshold: a fair estimate of
        Accept's precision."""
        if self.session.latest_model() is None:
            self._checked.object = ""
            return
        checked = self.session.checked(float(self._threshold.value))
        whose = f"Predictions shown: {esc(self.session.describe_predictions())}. "
        if not checked.seen:
            self._checked.object = (f"<small>{whose}No check of this model at {checked.threshold:.2f} or above "
                                    f"yet: Check predictions shows a random sample to judge.</small>")
            return
        self._checked.object = (f"<small>{whose}Checked at {checked.threshold:.2f} or above: <b>{checked.right} of "
                                f"{checked.seen}</b> right (precision at least {checked.lower_bound:.0%}, 95% "
                                f"confidence).</small>")

    def _on_check(self) -> None:
        review = self.session.check_predictions(float(self._threshold.value))
        self.grid.show(review)
        self._update_review_text()
        self._show("")

    def _on_accept_shown(self) -> None:
        count = self.session.accept_review()
        rest = self.session.review.ids
        self._show(f"Labeled {count} images as predicted." + (
            f" The {len(rest)} you dropped stay selected: label them, or lasso anew." if rest else ""), "success")
        self._set_selection(rest)
        self._show_checked()
        self._after_change()

    def _on_accept(self) -> None:
        accepted = self.session.accept_above(float(self._threshold.value))
        checked, wrong = accepted.checked, accepted.likely_wrong
        judged = (f" Checks put about {wrong} of them wrong ({checked.right} of {checked.seen} checked right)."
                  if wrong is not None else " None was checked: Check predictions first to know how many are wrong.")
        self._show(f"Accepted {accepted.count} predictions above {accepted.threshold:.2f} (undoable).{judged}",
                   "success")
        self._after_change()
