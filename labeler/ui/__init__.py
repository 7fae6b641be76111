"""The Panel and Bokeh side of labeler: the app, the cleaning view, the map, the review grid, keys.

Everything here only wires widgets to the UI-free logic in `labeler/` (session, store, cleaning,
project); nothing outside this package imports Panel or Bokeh. Names are imported on first use.
"""
from engine._lazy import lazy_exports

_EXPORTS = {
    "app": ["LabelApp"],
    "clean_view": ["CleanView"],
    "serve": ["serve"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
