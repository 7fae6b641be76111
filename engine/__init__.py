"""The labeler engine: images -> per-layer CNN features -> 2D projections and find-similar. No UI imports.

Names are imported on first use (PEP 562), so `import engine` stays cheap: opening a project
whose features are cached never pays for importing torch or umap.
"""
from importlib import import_module

_EXPORTS = {
    "activations": ["extract_activations"],
    "backbones": ["BACKBONES", "DEFAULT_BACKBONE", "BackboneCfg", "create_backbone", "get_backbone_cfg"],
    "data": ["IMAGE_EXTENSIONS", "decode_image", "discover_images", "load_image", "read_image_list"],
    "demo": ["demo_folder", "demo_truth"],
    "embedding": ["DEFAULT_SIZE", "EmbedResult", "embed"],
    "errors": ["ENGINE_ERRORS", "BackboneError", "FeatureCacheError", "ImageReadError", "InputError",
               "NeighborsError", "ProjectionError", "WeightsUnavailableError"],
    "features": ["FeatureCache"],
    "neighbors": ["SimilarityIndex", "find_similar"],
    "pooling": ["DEFAULT_POOLING", "POOLINGS"],
    "projection": ["PROJECTIONS", "SUPERVISED", "cached_projection", "create_projector"],
    "workspace": ["Item", "Workspace"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
