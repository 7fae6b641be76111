"""The Label tab's heatmaps: the hover preview and the review grid show where the current model looked.

Wiring only: `labeler.heatmaps` computes the pictures (`HeatmapCache`) and schedules them in a
background job (`HeatmapWork`: the hovered image first, then the grid's a batch at a time); this
polls the job and shows what is ready. Until an image's heatmap is done the preview shows the
plain image and the grid its thumbnail, so the page never waits for Grad-CAM.
"""
from __future__ import annotations

import logging

from labeler.heatmaps import HeatmapCache, HeatmapWork

from ._panel import esc, poll_job
from .composite import to_data_uri

logger = logging.getLogger(__name__)

GRID_HEATMAPS = 96       # grid tiles explained, from the top: eight rows (48 took 12 s on two busy CPU cores)
PREVIEW_TEXT_PX = 44     # under the preview: the file name and what the model predicts
POLL_MS = 300


class LabelHeatmaps:
    """Heatmaps of the project's current model in the hover preview and the review grid, while `on`.

    Args:
        project: the app's labeler.project.Project.
        grid: the review grid (`ReviewGrid`); its tiles are overlaid, and each review shown asks for more.
        preview: the HTML pane of the hover preview.
        run, show: the view's guarded runner and its status line (`_panel.guarded`, `Message.show`).
    """

    def __init__(self, project, grid, preview, run, show):
        self.cache = HeatmapCache(project)
        self.work = HeatmapWork(self.cache)
        self.grid, self.preview, self._run, self._show = grid, preview, run, show
        self.thumbs = project.thumbs
        self.on = False
        self.wait = False                  # compute in place (tests, scripts) instead of in a background job
        self._previewed = None             # (item, px, file name) of the preview shown
        self.previewing_heatmap = False    # whether the preview shows a heatmap now
        self._tiles: dict[tuple, object] = {}   # (model, item) -> the grid tile made from its heatmap
        grid.on_show = self.fill_grid

    def switch(self, on: bool) -> str | None:
        """Turn the heatmaps on or off; what to tell the person, None when nothing changed.

        Raises NoModelError (and stays off) when the project has no model yet. The model loads in the
        background job, with the first heatmap.
        """
        if on == self.on:
            return None
        model_id = self.cache.require_model() if on else None
        self.on = on
        self.fill_grid()
        if self._previewed is not None:
            self.show_preview(*self._previewed)
        if not on:
            return "Heatmaps off."
        return (f"Heatmaps of {model_id}: the preview and the review grid show where it looked for the "
                f"label it predicts (red to yellow: more evidence), computed as you hover and lasso.")

    # -- the preview ---------------------------------------------------------------------------
    def show_preview(self, item_id: int, px: int, name: str) -> None:
        """The hovered image, with its heatmap and prediction once they are computed."""
        self._previewed = (item_id, px, name)
        heatmap = self.cache.cached([item_id]).get(item_id) if self.on else None
        if heatmap is None:
            uri = to_data_uri(self.thumbs.preview_jpeg(item_id, px))
            below = "<br><small><i>computing its heatmap…</i></small>" if self.on else ""
        else:
            from labeler.thumbs import encode_jpeg
            uri = to_data_uri(encode_jpeg(heatmap.fitted(px)))
            below = f"<br><small><b>{esc(heatmap.model_id)}</b> predicts {esc(heatmap.caption)}</small>"
        self.previewing_heatmap = heatmap is not None
        self.preview.object = (f'<img src="{uri}" style="max-width:{px}px;max-height:{px}px"><br>'
                               f"<small>{esc(name)}</small>{below}")
        if heatmap is None and self.on:
            self._ask(hover=item_id)

    # -- the review grid ---------------------------------------------------------------------------
    def fill_grid(self) -> None:
        """Show the heatmaps of the grid's first GRID_HEATMAPS images that are ready; ask for the rest."""
        if not self.on:
            self.work.ask(grid=[])         # what was still to do for the grid is moot
            self.grid.set_overlays({})
            return
        wanted = self.grid.ids[:GRID_HEATMAPS]
        ready = self._show_tiles(wanted)
        self._ask(grid=[item for item in wanted if item not in ready])

    def _show_tiles(self, wanted) -> set[int]:
        ready = self.cache.cached(wanted)
        size, tiles = self.grid.tile_size, {}
        for item, heatmap in ready.items():
            key = (heatmap.model_id, item, size)
            if key not in self._tiles:
                self._tiles[key] = heatmap.tile(size)
            tiles[item] = self._tiles[key]
        if len(self._tiles) > 2 * self.cache.capacity:   # tiles of pictures the cache has dropped
            self._tiles = {key: tile for key, tile in self._tiles.items() if key[1] in tiles}
        self.grid.set_overlays(tiles)
        return set(ready)

    # -- the background job ------------------------------------------------------------------------
    def _ask(self, **asked) -> None:
        job = self.work.ask(wait=self.wait, **asked)
        if job is None:
            return                         # the running job takes it up
        if self.wait:
            self._done(job)
        else:
            poll_job(job, on_progress=lambda job: self._run(self._refresh),
                     on_done=lambda job: self._run(self._done, job), period_ms=POLL_MS)

    def _refresh(self) -> None:
        """Show what the job has computed so far."""
        if not self.on:
            return
        self._show_tiles(self.grid.ids[:GRID_HEATMAPS])
        if self._previewed is not None and not self.previewing_heatmap and self.cache.cached([self._previewed[0]]):
            self.show_preview(*self._previewed)

    def _done(self, job) -> None:
        self._refresh()
        if job.error:
            self._show(f"Could not compute heatmaps: {job.error}", "warning")
