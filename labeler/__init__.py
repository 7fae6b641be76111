"""labeler: label a folder of images with the help of a pretrained CNN's view of them.

Names are imported on first use (PEP 562), so `import labeler` stays cheap.
"""
from engine._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "errors": ["LabelerError", "LabelFileError", "LabelStoreError"],
    "store": ["Event", "Label", "LabelStore"],
    "project": ["Project"],
    "ui.app": ["LabelApp"],
    "session": ["Session"],
    "jobs": ["Job"],
    "progress": ["stage_bars"],
    "io": ["ExportReport", "ImportReport", "export_cleaned", "export_folders", "export_hf", "export_hf_metadata",
           "export_labels_csv", "export_predictions_csv", "import_folders", "import_labels_csv"],
    "ui.clean_view": ["CleanView"],
    "ui.model_view": ["ModelView"],
    "finetune": ["TrainSpec", "start_training", "current_training"],
    "model_store": ["ModelStore"],
    "ui.notebook": ["notebook_extension"],
    "cleaning": ["QUEUES", "QUEUE_TITLES", "build_queues"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
__all__ = __all__ + ["__version__"]
