"""One person's cleaning pass, without widgets: the queues, the focused item, decisions, undo.

The cleaning view (labeler/ui/clean_view.py) wires widgets and keys to these methods. Every
decision goes to the label store at once (`LabelStore.decide`, one undoable event), and what
each item shows as decided is read back from the store, so nothing is lost when the view
switches queue, the page reloads or the server restarts.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .cleaning import QUEUE_TITLES, QUEUES, empty_queue
from .errors import LabelerError

PAGE_SIZE = 32      # items on one page of the grid
COLUMNS = 8         # cards per row: Up / Down move by this many


class CleanSession:
    """The queues of one cleaning pass and where the person is in them.

    Args:
        project: a labeler.project.Project (its store receives every decision).
        queues: {queue name: DataFrame} as `labeler.cleaning.build_queues` returns (may come later
            through `set_queues`).
    """

    def __init__(self, project, queues: Mapping[str, pd.DataFrame] | None = None):
        self.project, self.store = project, project.store
        self.frames: dict[str, pd.DataFrame] = {name: empty_queue() for name in QUEUES}
        self.queue = QUEUES[0]
        self.hide_decided = False
        self._focus: dict[str, int] = {}          # queue -> focused item id (kept when switching queue)
        self._shown: dict[str, list] = {}        # queue -> [store version, table, table without decided]
        if queues is not None:
            self.set_queues(queues)

    # -- queues -------------------------------------------------------------------------------
    def set_queues(self, queues: Mapping[str, pd.DataFrame]) -> None:
        unknown = sorted(set(queues) - set(QUEUES))
        if unknown:
            raise LabelerError(f"Unknown cleaning queue(s) {unknown}; the queues are {', '.join(QUEUES)}.")
        for name, frame in queues.items():
            self.frames[name] = frame.reset_index(drop=True)
        self._shown.clear()

    def switch(self, queue: str) -> None:
        if queue not in QUEUES:
            raise LabelerError(f"Unknown cleaning queue {queue!r}; choose one of {', '.join(QUEUES)}.")
        self.queue = queue

    def step_queue(self, step: int) -> str:
        self.queue = QUEUES[(QUEUES.index(self.queue) + step) % len(QUEUES)]
        return self.queue

    def counts(self) -> dict[str, tuple[int, int]]:
        """(decided, total) per queue."""
        result = {}
        for name in QUEUES:
            table = self.table(name, hide_decided=False)
            result[name] = (int((table["decision"] != "").sum()), len(table))
        return result

    def table(self, queue: str | None = None, *, hide_decided: bool | None = None) -> pd.DataFrame:
        """The queue as shown: its rows, items decided in it earlier that it no longer lists (after a
        recompute: excluded items leave the queues) at the end, and columns `decision` (text,
        "" when undecided) and `label` (the current label)."""
        queue = queue or self.queue
        hide = self.hide_decided if hide_decided is None else hide_decided
        version = self.store.version
        cached = self._shown.get(queue)
        if cached is None or cached[0] != version:   # every key press asks; the store changes less often
            cached = self._shown[queue] = [version, self._make_table(queue), None]
        if not hide:
            return cached[1]
        if cached[2] is None:
            cached[2] = cached[1][cached[1]["decision"] == ""].reset_index(drop=True)
        return cached[2]

    def _make_table(self, queue: str) -> pd.DataFrame:
        decisions = self.store.decisions()
        frame = self._with_earlier_decisions(queue, self.frames[queue], decisions[decisions["queue"] == queue])
        texts = self.decision_texts(queue, decisions)
        ids = frame["item_id"].to_numpy(dtype=np.int64)
        frame = frame.assign(decision=[texts.get(int(i), "") for i in ids], label=self._current_labels(ids))
        return frame.reset_index(drop=True)

    def decision_texts(self, queue: str, decisions: pd.DataFrame | None = None) -> dict[int, str]:
        """What each decided item shows: 'kept', 'relabeled: cat' or 'excluded'.

        The queue's own decision wins; relabels and exclusions made in another queue change the
        item everywhere, so they show too (naming that queue); an item excluded any other way
        shows 'excluded'.
        """
        texts: dict[int, str] = {}
        table = self.store.decisions() if decisions is None else decisions
        for row in table[(table["queue"] != queue) & (table["decision"] != "keep")].itertuples():
            texts[int(row.item_id)] = f"{_decision_text(row.decision, row.label)} ({QUEUE_TITLES.get(row.queue, row.queue)})"
        for row in table[table["queue"] == queue].itertuples():
            texts[int(row.item_id)] = _decision_text(row.decision, row.label)
        for item in self.store.excluded():
            if not texts.get(item, "").startswith("excluded"):
                texts[item] = "excluded"
        return texts

    def _with_earlier_decisions(self, queue: str, frame: pd.DataFrame, decided: pd.DataFrame) -> pd.DataFrame:
        gone = decided[~decided["item_id"].isin(frame["item_id"])]
        if gone.empty:
            return frame
        paths = dict(zip((item.id for item in self.project.items), (item.path for item in self.project.items)))
        extra = empty_queue().reindex(range(len(gone)))
        extra = extra.assign(item_id=gone["item_id"].to_numpy(), image_name=[paths.get(i, "") for i in gone["item_id"]],
                             score=np.nan, given="", suggested="", confidence=np.nan,
                             reason="decided in an earlier pass", group=-1, keep=True)
        return pd.concat([frame, extra.astype(frame.dtypes.to_dict())], ignore_index=True)

    def _current_labels(self, ids: np.ndarray) -> list[str]:
        table = self.store.assignments()
        current = table.groupby("item_id")["label"].agg(" ".join).to_dict() if len(table) else {}
        return [current.get(int(i), "") for i in ids]

    @property
    def labels(self) -> list[str]:
        """Label names in display order: the keys 1 to 9 relabel with the first nine."""
        return [label.name for label in self.store.label_defs()]

    # -- focus ----------------------------------------------------------------------------------
    def position(self, table: pd.DataFrame | None = None) -> int:
        """Row of the focused item in the shown table (the first row when it is not shown); -1 when empty."""
        table = self.table() if table is None else table
        if table.empty:
            return -1
        focused = self._focus.get(self.queue)
        rows = np.flatnonzero(table["item_id"].to_numpy() == focused) if focused is not None else []
        return int(rows[0]) if len(rows) else 0

    def focused(self, table: pd.DataFrame | None = None) -> pd.Series | None:
        """The focused row of the shown table, or None when the queue shows nothing."""
        table = self.table() if table is None else table
        position = self.position(table)
        return None if position < 0 else table.iloc[position]

    def focus(self, item_id: int) -> None:
        self._focus[self.queue] = int(item_id)

    def move(self, step: int) -> None:
        """Move the focus `step` items along the queue (stops at both ends)."""
        table = self.table()
        if not table.empty:
            position = int(np.clip(self.position(table) + step, 0, len(table) - 1))
            self._focus[self.queue] = int(table["item_id"].iat[position])

    def page(self, table: pd.DataFrame | None = None) -> tuple[int, int]:
        """(page index, number of pages) of the focused item."""
        table = self.table() if table is None else table
        return max(0, self.position(table)) // PAGE_SIZE, max(1, -(-len(table) // PAGE_SIZE))

    def step_page(self, step: int) -> None:
        table = self.table()
        page, pages = self.page(table)
        page = int(np.clip(page + step, 0, pages - 1))
        if not table.empty:
            self._focus[self.queue] = int(table["item_id"].iat[min(page * PAGE_SIZE, len(table) - 1)])

    # -- decisions ------------------------------------------------------------------------------
    def relabel(self, label: str) -> str:
        row = self._require_focus()
        self._decide(row, "relabel", label)
        return f"Relabeled {row.image_name} “{label.strip()}” (undo: Ctrl+Z)."

    def relabel_by_number(self, number: int) -> str:
        names = self.labels
        if not 1 <= number <= len(names):
            raise LabelerError(f"There is no label {number}; the labels are "
                               f"{', '.join(f'{i + 1}: {n}' for i, n in enumerate(names[:9])) or 'none yet'}.")
        return self.relabel(names[number - 1])

    def exclude(self) -> str:
        row = self._require_focus()
        self._decide(row, "exclude")
        return f"Excluded {row.image_name} (its file stays where it is; undo: Ctrl+Z)."

    def keep(self) -> str:
        row = self._require_focus()
        self._decide(row, "keep")
        return f"Kept {row.image_name} as it is."

    def accept(self) -> str:
        """Do what the queue suggests: the suggested label, a duplicate group's keep / exclude, or exclude an odd file."""
        row = self._require_focus()
        if self.queue == "duplicates":
            return self.keep() if row.keep else self.exclude()
        if row.suggested and row.suggested != row.given:
            return self.relabel(row.suggested)
        if self.queue == "odd_files":
            return self.exclude()
        raise LabelerError(f"{row.image_name} has no suggested label to accept; keep it (k), exclude it (x) or "
                           f"relabel it (1-9, r).")

    def _decide(self, row: pd.Series, decision: str, label: str | None = None) -> None:
        following = self._next_after(row)
        self.store.decide([int(row.item_id)], self.queue, decision, label)
        if following is not None:
            self._focus[self.queue] = following

    def _next_after(self, row: pd.Series) -> int | None:
        """The item to focus after deciding `row`: the next one still undecided, else the next one."""
        table = self.table()
        ids = table["item_id"].to_numpy()
        position = int(np.flatnonzero(ids == row.item_id)[0])
        later = table.iloc[position + 1:]
        open_ = later[later["decision"] == ""]
        if len(open_):
            return int(open_["item_id"].iat[0])
        return int(later["item_id"].iat[0]) if len(later) else None

    def _require_focus(self) -> pd.Series:
        row = self.focused()
        if row is None:
            raise LabelerError(f"The queue {QUEUE_TITLES[self.queue]!r} shows no item to decide on.")
        return row

    def undo(self) -> str:
        done = self.store.undo_own()
        return f"Undid: {done}" if done else "Nothing to undo."

    def redo(self) -> str:
        done = self.store.redo_own()
        return f"Redid: {done}" if done else "Nothing to redo."


def _decision_text(decision: str, label: str) -> str:
    return {"keep": "kept", "exclude": "excluded"}.get(decision) or f"relabeled: {label}"
