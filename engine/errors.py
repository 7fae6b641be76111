"""Every error type the engine raises for bad input or an unusable environment, in one tuple.

Only the CLI and the apps turn these into messages for a person; anything else is a bug
and keeps its traceback.
"""
from ._sqlite import DatabaseBusyError
from .backbones import BackboneError, WeightsUnavailableError
from .data import ImageReadError, InputError
from .features import FeatureCacheError
from .neighbors import NeighborsError
from .projection import ProjectionError

ENGINE_ERRORS = (InputError, ImageReadError, BackboneError, WeightsUnavailableError, FeatureCacheError,
                 ProjectionError, NeighborsError, DatabaseBusyError)

__all__ = ["ENGINE_ERRORS", "DatabaseBusyError", "BackboneError", "WeightsUnavailableError", "ImageReadError", "InputError",
           "FeatureCacheError", "NeighborsError", "ProjectionError"]
