"""The labeler engine: images -> per-layer CNN features -> 2D projections and find-similar. No UI imports.

Names are imported on first use (PEP 562), so `import engine` stays cheap: opening a project
whose features are cached never pays for importing torch or umap.
"""
from ._lazy import lazy_exports

_EXPORTS = {
    "activations": ["extract_activations"],
    "backbones": ["BACKBONES", "DEFAULT_BACKBONE", "BackboneCfg", "create_backbone", "get_backbone_cfg"],
    "data": ["IMAGE_EXTENSIONS", "ImageScan", "decode_image", "discover_images", "load_image", "read_image_list",
             "scan_images"],
    "augment": ["build_transforms"],
    "datablock": ["LabelFromCSV", "LabelFromRegex", "MaskLabel", "PointsLabel", "TaskData", "build_data",
                  "label_from_folder"],
    "splits": ["FolderSplit", "FuncSplit", "GroupSplit", "ListSplit", "RandomSplit"],
    "demo": ["demo_folder", "demo_truth"],
    "learner": ["Callback", "EarlyStopping", "Learner", "ProgressCallback", "SaveBest", "task_for"],
    "predictor": ["Predictor", "load_exported"],
    "tasks": ["TASKS", "ClassifyTask", "MultiLabelTask", "RegressTask", "SegmentTask", "Task", "get_task",
              "register_task"],
    "models": ["create_model"],
    "interpret": ["ClassTarget", "CoordinateTarget", "GradCAM", "Interpretation", "RegionTarget", "cam_layer",
                  "confusion_matrix", "explain", "explain_image", "explain_images", "most_confused", "top_losses"],
    "plots": ["plot_confusion", "plot_losses", "plot_lr_find", "plot_top_losses"],
    "clean": ["DEFAULT_DUPLICATE_THRESHOLD", "DUPLICATE_WEIGHTS", "DuplicateFinder", "LabelIssueFinder", "OddFileRules",
              "duplicate_rows", "find_odd_files", "image_stats", "model_losses", "survey_images"],
    "embedding": ["DEFAULT_SIZE", "EmbedResult", "embed"],
    "errors": ["EngineError", "AugmentError", "BackboneError", "DatabaseBusyError", "FeatureCacheError",
               "FirstModelError", "ImageReadError", "InputError", "InterpretError", "LearnerError", "MetricError",
               "ModelError", "NeighborsError", "PoolingError", "ProjectionError", "WeightsUnavailableError"],
    "features": ["FeatureCache"],
    "neighbors": ["SimilarityIndex", "find_similar"],
    "pooling": ["DEFAULT_POOLING", "POOLINGS"],
    "projection": ["PROJECTIONS", "SUPERVISED", "cached_projection", "create_projector"],
    "workspace": ["Item", "Workspace"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
