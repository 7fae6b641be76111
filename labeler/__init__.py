"""labeler: label a folder of images with the help of a pretrained CNN's view of them.

Names are imported on first use (PEP 562), so `import labeler` stays cheap.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "errors": ["LabelerError", "LabelFileError", "LabelStoreError"],
    "store": ["Event", "Label", "LabelStore"],
    "project": ["Project"],
    "app": ["LabelApp"],
    "session": ["Session"],
    "io": ["ExportReport", "ImportReport", "export_folders", "export_hf_metadata", "export_labels_csv",
           "export_predictions_csv", "import_folders", "import_labels_csv"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'labeler' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
