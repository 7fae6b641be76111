"""The cleaning view: likely label errors, top losses, duplicates and odd files, as grids to decide on.

`CleanView(project)` is a Panel Viewer: the app's "Clean" tab, or shown alone in Jupyter:

    from labeler.cleaning import build_queues
    view = CleanView(project, queues=build_queues(project))   # or CleanView(project): "Find issues" computes
    view                                                      # the widget
    view.queues["label_issues"]                               # DataFrames, with each item's decision

One item has the focus (click it, or move with the arrow keys); keep / exclude / relabel /
accept apply to it, go to the label store at once as one undoable event each, and move the
focus on. Excluding only marks an item: the user's files are never moved or deleted.
"""
from __future__ import annotations

import logging
from typing import ClassVar

import pandas as pd
import panel as pn
import param
from panel.custom import JSComponent

from labeler.clean_session import COLUMNS, PAGE_SIZE, CleanSession
from labeler.cleaning import QUEUE_TITLES, QUEUES
from labeler.jobs import Job

from ._panel import (NOTEBOOK_HEIGHT, Message, NotebookAware, esc, export_to_buffer, guarded, poll_job,
                     with_document_lock)
from .composite import to_data_uri
from .keys import DIGITS, Binding, KeyTable, Shortcuts

logger = logging.getLogger(__name__)

CARD_PX = 112           # thumbnail edge in the grid
PREVIEW_PX = 240        # the focused item, beside the grid
RELABEL_PLACEHOLDER = "relabel as…, then Enter"
# one item has the focus; every decision applies to it
KEYS = KeyTable(
    Binding(("ArrowLeft", "ArrowRight"), "← / →", "previous / next item", "_key_move"),
    Binding(("ArrowUp", "ArrowDown"), "↑ / ↓", "item above / below", "_key_move"),
    Binding(("PageUp", "PageDown"), "PgUp / PgDn", "previous / next page", "_key_page"),
    Binding(("[", "]"), "[ / ]", "previous / next queue", "_key_queue"),
    Binding(DIGITS, "1 … 9", "relabel the item with the label of that number", "_key_relabel"),
    Binding(("r",), "r", "type a label (then Enter) to relabel the item", focus=RELABEL_PLACEHOLDER),
    Binding(("a",), "a", "accept the suggestion (label; duplicates: keep or exclude as suggested)", "_key_decide"),
    Binding(("k",), "k", "keep the item as it is", "_key_decide"),
    Binding(("x", "Delete"), "x or Delete", "exclude the item (its file is never moved or deleted)", "_key_decide"),
    Binding(("h",), "h", "hide / show decided items", "_key_hide"),
    Binding(("ctrl+z",), "Ctrl+Z", "undo the last decision", "_key_decide"),
    Binding(("ctrl+shift+z",), "Ctrl+Shift+Z", "redo", "_key_decide"),
)
MOVES = {"ArrowLeft": -1, "ArrowRight": 1, "ArrowUp": -COLUMNS, "ArrowDown": COLUMNS}
EMPTY_TEXT = {
    "label_issues": "No likely label errors: label a few images of at least two labels (a handful each), then "
                    "find issues again.",
    "top_losses": "Fine-tune a model in the Model tab (or give a model file from <code>labeler train --out</code> "
                  "below), then find issues again.",
    "duplicates": "No duplicates or near-duplicates found.",
    "odd_files": "No odd files: every image is readable and looks like the others.",
}


class CleanGrid(JSComponent):
    """One page of a queue as cards (thumbnail, given and suggested label, reason, decision); a click focuses a card."""

    items = param.List(default=[], doc="the cards: dicts with id, src, name, given, label, suggested, "
                                       "confidence, reason, score, decision, group, keep")
    focus = param.Integer(default=-1, doc="index in `items` of the focused card (a click sets it)")

    _esm = """
    function line(className, text) {
      const div = document.createElement('div');
      div.className = className;
      div.textContent = text;      // text, never HTML: names and labels come from the user's files
      return div;
    }

    function card(item, index, model) {
      const el = document.createElement('div');
      el.className = 'clean-card';
      el.dataset.item = item.id;
      if (item.decision) { el.classList.add('decided'); }
      if (item.group >= 0) { el.classList.add(item.group % 2 ? 'group-odd' : 'group-even'); }
      const img = document.createElement('img');
      img.src = item.src;
      img.alt = item.name;
      el.append(img);
      if (item.decision) {
        el.append(line('badge ' + item.decision.split(/[: ]/)[0], item.decision));
      }
      el.append(line('name', item.name));
      if (item.group >= 0) {
        el.append(line(item.keep ? 'group keeper' : 'group', 'group ' + item.group + (item.keep ? ' · keep' : ' · copy')));
      }
      let given = 'given: ' + (item.given || '—');
      if (item.label !== item.given) { given += ' → now ' + (item.label || 'none'); }
      el.append(line('given', given));
      if (item.suggested) {
        const differs = item.suggested !== item.given;
        el.append(line('suggested' + (differs ? ' differs' : ''),
                       (differs ? 'suggested: ' : 'predicted: ') + item.suggested + item.confidence));
      }
      el.append(line('reason', item.reason));
      if (item.score) { el.append(line('score', 'score ' + item.score)); }
      el.addEventListener('click', () => { model.focus = index; });
      return el;
    }

    export function render({ model, el }) {
      const grid = document.createElement('div');
      grid.className = 'clean-cards';   // the container itself is .clean-grid (Panel names it after the class)
      const refocus = () => {
        Array.from(grid.children).forEach((card, i) => card.classList.toggle('focused', i === model.focus));
        const focused = grid.children[model.focus];
        if (focused) { focused.scrollIntoView({ block: 'nearest' }); }
      };
      const draw = () => {
        grid.replaceChildren(...model.items.map((item, i) => card(item, i, model)));
        refocus();
      };
      draw();
      model.on('items', draw);
      model.on('focus', refocus);
      el.replaceChildren(grid);
    }
    """

    _stylesheets: ClassVar[list[str]] = [f"""
    .clean-cards {{ display: grid; grid-template-columns: repeat({COLUMNS}, minmax(0, 1fr)); gap: 8px;
                  font: 12px/1.35 system-ui, sans-serif; }}
    .clean-card {{ border: 2px solid #dcdcdc; border-radius: 6px; padding: 4px; background: #fff; cursor: pointer;
                  overflow: hidden; min-width: 0; position: relative; }}
    .clean-card.group-odd {{ background: #eef4fc; }}
    .clean-card.focused {{ border-color: #1f77b4; box-shadow: 0 0 0 2px #1f77b4; }}
    .clean-card img {{ width: 100%; aspect-ratio: 1; object-fit: contain; background: #282828; display: block;
                      border-radius: 3px; }}
    .clean-card.decided img {{ opacity: 0.45; }}
    .clean-card > div {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
    .clean-card .name {{ color: #666; font-size: 11px; margin-top: 2px; }}
    .clean-card .given {{ font-weight: 600; white-space: normal; }}
    .clean-card .suggested {{ color: #666; white-space: normal; }}
    .clean-card .suggested.differs {{ color: #0d47a1; font-weight: 600; }}
    .clean-card .reason {{ color: #777; font-size: 11px; white-space: normal; display: -webkit-box;
                          -webkit-line-clamp: 2; -webkit-box-orient: vertical; }}
    .clean-card .score {{ color: #999; font-size: 11px; }}
    .clean-card .group {{ color: #555; }}
    .clean-card .group.keeper {{ color: #1b5e20; font-weight: 600; }}
    .clean-card .badge {{ position: absolute; top: 8px; left: 8px; max-width: calc(100% - 16px); box-sizing: border-box;
                         font-weight: 700; padding: 1px 6px; border-radius: 3px; box-shadow: 0 1px 3px rgba(0,0,0,.4); }}
    .badge.kept {{ background: #d7efd7; color: #1b5e20; }}
    .badge.excluded {{ background: #fadcdc; color: #b71c1c; }}
    .badge.relabeled {{ background: #dce9fb; color: #0d47a1; }}
    """]


class CleanView(NotebookAware, pn.viewable.Viewer):
    """Review the cleaning queues of a project and decide on each item, in the browser or a notebook.

    Args:
        project: a labeler.project.Project, or an image folder (opened as one).
        queues: {queue: DataFrame} from `labeler.cleaning.build_queues`; None: "Find issues" computes them.
        thumbs: the project's ThumbCache (default: opened from the workspace).
        The queues are computed from the project's features (`project.backbone`, `project.size`).
        builder: the function that computes queues (default `labeler.cleaning.build_queues`).
    """

    queue = param.Selector(default=QUEUES[0], objects=list(QUEUES), doc="the queue shown")
    hide_decided = param.Boolean(default=False, doc="leave decided items out of the grid")
    model_path = param.String(default="", doc="an exported model (labeler train --out) for top losses; empty: the "
                                              "current model (Model tab)")
    status = param.String(default="", doc="the last message shown to the user")
    computing = param.Boolean(default=False, doc="whether the queues are being computed")

    def __init__(self, project, *, queues=None, thumbs=None, builder=None, **params):
        super().__init__(**params)
        if not hasattr(project, "store"):
            from labeler.project import Project
            project = Project(project)
        self.project = project
        self.thumbs = thumbs if thumbs is not None else project.thumbs
        self._builder = builder
        self._message = Message()
        self._run = guarded(self._show, self._in_document)
        self._job: Job | None = None
        self._model: tuple[str, str] | None = None     # the top losses' model: (file, what to call it)
        self.session = CleanSession(project, queues)
        self._computed = queues is not None
        self._uris: dict[tuple[int, int], str] = {}
        self._shown_page: tuple | None = None
        self._label_names: list[str] | None = None
        self._widgets()
        self._layout = self._page()
        self.refresh()

    # -- layout ----------------------------------------------------------------------------------
    def _widgets(self) -> None:
        button = {"sizing_mode": "stretch_width"}
        self._queue_select = pn.widgets.RadioButtonGroup(options=self._queue_options(), value=self.queue,
                                                         color="primary", variant="outline")
        self._find = pn.widgets.Button(label="Find issues", color="primary", width=130)
        self._hide = pn.widgets.Checkbox.from_param(self.param.hide_decided, name="Hide decided (h)", margin=(16, 10))
        self._model_path = pn.widgets.TextInput.from_param(self.param.model_path, name="",
                                                           placeholder="model.pt for top losses (default: current model)",
                                                           sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(value=-1, max=100, sizing_mode="stretch_width", visible=False)
        self._page_text = pn.pane.HTML("", sizing_mode="stretch_width")
        self._prev_page = pn.widgets.Button(label="◀ page", width=80)
        self._next_page = pn.widgets.Button(label="page ▶", width=80)
        self._grid = CleanGrid(sizing_mode="stretch_width")
        self._empty = pn.pane.HTML("", sizing_mode="stretch_width", visible=False)
        self._detail = pn.pane.HTML("", sizing_mode="stretch_width", min_height=PREVIEW_PX + 120)
        self._keep = pn.widgets.Button(label="Keep (k)", color="success", **button)
        self._exclude = pn.widgets.Button(label="Exclude (x)", color="danger", **button)
        self._accept = pn.widgets.Button(label="Accept suggestion (a)", color="primary", **button)
        self._labels_box = pn.Column(sizing_mode="stretch_width")
        self._relabel = pn.widgets.TextInput(placeholder=RELABEL_PLACEHOLDER, sizing_mode="stretch_width")
        self._undo = pn.widgets.Button(label="Undo", **button)
        self._redo = pn.widgets.Button(label="Redo", **button)
        from labeler.io import export_cleaned
        self._download = pn.widgets.FileDownload(
            callback=lambda: export_to_buffer(export_cleaned, self.project, self._show,
                                              empty="No labeled image to write yet: cleaned.csv holds only its header."),
            filename="cleaned.csv", label="Download cleaned.csv", **button)
        self._shortcuts = Shortcuts.for_table(KEYS, view="clean")
        # callbacks
        self._queue_select.param.watch(lambda e: setattr(self, "queue", e.new), "value")
        self._find.on_click(lambda e: self._run(self.compute))
        self._prev_page.on_click(lambda e: self._act(self.session.step_page, -1))
        self._next_page.on_click(lambda e: self._act(self.session.step_page, 1))
        self._grid.param.watch(lambda e: self._run(self._on_click, e), "focus")
        self._keep.on_click(lambda e: self._decide(self.session.keep))
        self._exclude.on_click(lambda e: self._decide(self.session.exclude))
        self._accept.on_click(lambda e: self._decide(self.session.accept))
        self._relabel.param.watch(self._on_relabel_typed, "enter_pressed")
        self._undo.on_click(lambda e: self._decide(self.session.undo))
        self._redo.on_click(lambda e: self._decide(self.session.redo))
        self._shortcuts.on_key(lambda key: self._run(KEYS.dispatch, self, key))

    def _page(self):
        side = pn.Column(
            self._detail, self._keep, self._exclude, self._accept,
            pn.pane.HTML("<b>Relabel as</b> (click, or press its number)"), self._labels_box, self._relabel,
            pn.Row(self._undo, self._redo, sizing_mode="stretch_width"), self._download,
            pn.Card(pn.pane.HTML(KEYS.help_html()), title="Shortcuts", collapsed=True,
                    sizing_mode="stretch_width"),
            self._shortcuts, width=300, scroll=True, sizing_mode="stretch_height")
        main = pn.Column(
            pn.Row(self._queue_select, self._find, self._hide, sizing_mode="stretch_width"),
            self._message, self._progress,
            pn.Row(self._prev_page, self._next_page, self._page_text, sizing_mode="stretch_width"),
            self._empty, self._grid, self._model_path, sizing_mode="stretch_both", scroll=True)
        return pn.Row(main, side, sizing_mode="stretch_both", min_height=700)

    def use_focus_keys(self) -> None:
        """Take keys only while the view has the focus (in a notebook, where the page is Jupyter's)."""
        self._shortcuts.scope = "focus"

    def _for_notebook(self) -> None:
        self._layout.param.update(sizing_mode="stretch_width", height=NOTEBOOK_HEIGHT, min_height=None)
        self.use_focus_keys()

    def __panel__(self):
        return self._layout

    @property
    def queues(self) -> dict[str, pd.DataFrame]:
        """Every queue as shown, with `decision` ('kept', 'relabeled: cat', 'excluded' or '') and `label` (now)."""
        return {name: self.session.table(name, hide_decided=False) for name in QUEUES}

    # -- drawing ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw from the session and the store (after changes made elsewhere, e.g. in the Label tab or a
        notebook cell)."""
        with self._in_document():
            self._redraw()

    def _redraw(self) -> None:
        s = self.session
        table = s.table()
        position = s.position(table)
        page, pages = s.page(table)
        shown = table.iloc[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        key = (s.queue, s.hide_decided, s.store.version, page, id(s.frames[s.queue]))
        if key != self._shown_page:    # moving the focus within a page sends no cards again
            self._grid.items = [self._card(row) for row in shown.itertuples()]
            self._shown_page = key
        self._grid.focus = position - page * PAGE_SIZE if position >= 0 else -1
        self._empty.object = self._empty_text()
        self._empty.visible = table.empty
        self._grid.visible = not table.empty
        decided = int((s.table(hide_decided=False)["decision"] != "").sum())
        total = len(s.table(hide_decided=False))
        first = page * PAGE_SIZE + 1 if len(table) else 0
        self._page_text.object = (f"<b>{QUEUE_TITLES[s.queue]}</b>: {first}–{page * PAGE_SIZE + len(shown)} of "
                                  f"{len(table)} shown · {decided} of {total} decided · page {page + 1} of {pages}")
        self._prev_page.disabled, self._next_page.disabled = page == 0, page >= pages - 1
        self._detail.object = self._detail_html(table.iloc[position] if position >= 0 else None)
        self._refresh_labels()
        self._undo.disabled = not s.store.can_undo_own()
        self._redo.disabled = not s.store.can_redo_own()

    def _card(self, row) -> dict:
        confidence = "" if pd.isna(row.confidence) else f" · {row.confidence:.2f}"
        return {"id": int(row.item_id), "src": self._uri(int(row.item_id), CARD_PX), "name": row.image_name,
                "given": row.given, "label": row.label, "suggested": row.suggested or "", "confidence": confidence,
                "reason": row.reason, "score": "" if pd.isna(row.score) else f"{row.score:.3f}",
                "decision": row.decision, "group": int(row.group), "keep": bool(row.keep)}

    def _uri(self, item_id: int, size: int) -> str:
        key = (item_id, size)
        if key not in self._uris:
            if len(self._uris) > 2000:
                self._uris.clear()
            self._uris[key] = to_data_uri(self.thumbs.preview_jpeg(item_id, size))
        return self._uris[key]

    def _detail_html(self, row) -> str:
        if row is None:
            return "<i>No item in focus.</i>"
        facts = [("file", row.image_name), ("given", row.given or "—")]
        if row.label != row.given:
            facts.append(("label now", row.label or "none"))
        if row.suggested:
            confidence = "" if pd.isna(row.confidence) else f" ({row.confidence:.2f})"
            facts.append(("suggested", f"{row.suggested}{confidence}"))
        if row.group >= 0:
            facts.append(("group", f"{row.group}, {'suggested keeper' if row.keep else 'a copy'}"))
        facts += [("why", row.reason), ("decision", row.decision or "none yet")]
        rows = "".join(f"<tr><th style='text-align:left;padding-right:6px;vertical-align:top'>{name}</th>"
                       f"<td style='word-break:break-all'>{esc(value)}</td></tr>" for name, value in facts)
        return (f'<img src="{self._uri(int(row.item_id), PREVIEW_PX)}" style="max-width:{PREVIEW_PX}px;'
                f'max-height:{PREVIEW_PX}px;display:block;margin:auto"><table style="font-size:12px">{rows}</table>')

    def _empty_text(self) -> str:
        if self.computing:
            return ""
        if not self._computed:
            return "Press <b>Find issues</b> to look for likely label errors, duplicates and odd files."
        if self.session.hide_decided and len(self.session.table(hide_decided=False)):
            return "Every item of this queue is decided (untick “Hide decided” to see them)."
        return EMPTY_TEXT[self.session.queue]

    def _refresh_labels(self) -> None:
        names = self.session.labels
        if names == self._label_names:
            return
        self._label_names = names
        buttons = []
        for index, name in enumerate(names):
            btn = pn.widgets.Button(label=f"{index + 1}: {name}" if index < 9 else name, sizing_mode="stretch_width")
            btn.on_click(lambda e, name=name: self._decide(self.session.relabel, name))
            buttons.append(btn)
        self._labels_box[:] = buttons

    def _queue_options(self) -> dict[str, str]:
        if not self._computed:
            return {QUEUE_TITLES[name]: name for name in QUEUES}
        counts = self.session.counts()
        return {f"{QUEUE_TITLES[name]} ({counts[name][1]})": name for name in QUEUES}

    def _show(self, text: str, kind: str = "info") -> None:
        self.status = text
        self._message.show(text, kind)

    # -- actions ---------------------------------------------------------------------------------
    @param.depends("queue", watch=True)
    def _on_queue(self) -> None:
        self._run(self._switch_queue)

    def _switch_queue(self) -> None:
        self.session.switch(self.queue)
        self._queue_select.value = self.queue
        self._show("")
        self.refresh()

    @param.depends("hide_decided", watch=True)
    def _on_hide(self) -> None:
        self.session.hide_decided = self.hide_decided
        self._run(self.refresh)

    def _act(self, action, *args) -> None:
        self._run(action, *args)
        self._run(self.refresh)

    def _decide(self, action, *args) -> None:
        said = self._run(action, *args)
        if said is not None:
            self._show(said, "success")
        self._run(self.refresh)

    def _on_click(self, event) -> None:
        table = self.session.table()
        page = self.session.page(table)[0]
        index = page * PAGE_SIZE + event.new
        if 0 <= event.new and index < len(table) and index != self.session.position(table):
            self.session.focus(int(table["item_id"].iat[index]))
            self.refresh()

    def _on_relabel_typed(self, event) -> None:
        name = (self._relabel.value_input or self._relabel.value or "").strip()
        if name:
            self._relabel.value = ""
            # enter_pressed arrives outside the document lock; Bokeh models may only change under it
            with_document_lock(lambda: self._decide(self.session.relabel, name))

    # -- keys (the KEYS table names these) -------------------------------------------------------
    def _key_move(self, key: str) -> None:
        self._act(self.session.move, MOVES[key])

    def _key_page(self, key: str) -> None:
        self._act(self.session.step_page, -1 if key == "PageUp" else 1)

    def _key_queue(self, key: str) -> None:
        self.queue = self.session.step_queue(1 if key == "]" else -1)

    def _key_hide(self, key: str) -> None:
        self.hide_decided = not self.hide_decided

    def _key_decide(self, key: str) -> None:
        s = self.session
        self._decide({"a": s.accept, "k": s.keep, "x": s.exclude, "Delete": s.exclude,
                      "ctrl+z": s.undo, "ctrl+shift+z": s.redo}[key])

    def _key_relabel(self, key: str) -> None:
        self._decide(self.session.relabel_by_number, int(key))

    # -- computing the queues --------------------------------------------------------------------
    def show(self) -> None:
        """Called when the view comes into sight: compute the queues the first time, else redraw."""
        if not self._computed and not self.computing:
            self.compute()
        else:
            self.refresh()

    def compute(self, *, wait: bool = False) -> None:
        """Compute every queue (in a background job unless `wait`); decisions already made are kept."""
        if self.computing:
            return
        self.computing = True
        self._find.disabled = True
        self._show("Finding likely label errors, duplicates and odd files…", "info")
        self._progress.value, self._progress.visible = -1, True
        self._model = self._top_loss_model()
        self._job = Job(self._work, name="labeler-clean")
        if wait:
            self._finish(self._job.run())
            return
        self._job.start()
        poll_job(self._job, on_progress=lambda job: self._run(self._on_progress, job),
                 on_done=lambda job: self._run(self._finish, job), period_ms=300)

    def _on_progress(self, job: Job) -> None:
        if job.total:
            self._progress.value = int(100 * job.done / job.total)
            self._show(f"Finding issues: {job.stage} ({job.done:,} of {job.total:,})…", "info")

    def _work(self, job: Job):
        """In the job's thread: the queues, computed from a Project of its own (its own connection and
        item list), not while the app is still embedding."""
        from labeler.project import Project, workspace_lock
        build = self._builder
        if build is None:
            from labeler.cleaning import build_queues as build
        with workspace_lock(self.project.workspace.root), \
                Project(self.project.folder, self.project.workspace.root, backbone=self.project.backbone,
                        size=self.project.size) as project:
            return build(project, model=self._model[0] if self._model else None, progress=job.report)

    def _top_loss_model(self) -> tuple[str, str] | None:
        """The model file for top losses and its name: the one typed in the field, else the current model."""
        from labeler.model_store import ModelStore
        if typed := self.model_path.strip():
            return typed, typed
        store = ModelStore(self.project.workspace.root)
        return None if (current := store.current_id) is None else (str(store.model_path(current)), current)

    def _finish(self, job: Job) -> None:
        self.computing = False
        self._find.disabled, self._find.label = False, "Find issues again"
        self._progress.visible = False
        if job.error:
            self._show(f"Could not find issues: {job.error}", "danger")
        else:
            self.session.set_queues(job.result)
            self._computed = True
            self._queue_select.options = self._queue_options()
            counts = self.session.counts()
            found = ", ".join(f"{counts[name][1]} {QUEUE_TITLES[name].lower()}" for name in QUEUES)
            used = f" Top losses of {self._model[1]}." if self._model else ""
            self._show(f"Found {found}.{used}", "success")
        self.refresh()
