"""Every error type the engine raises for bad input or an unusable environment, in one tuple.

Only the CLI and the apps turn these into messages for a person; anything else is a bug
and keeps its traceback.
"""
from ._sqlite import DatabaseBusyError
from .augment import AugmentError
from .backbones import BackboneError, WeightsUnavailableError
from .data import ImageReadError, InputError
from .features import FeatureCacheError
from .interpret import InterpretError
from .neighbors import NeighborsError
from .projection import ProjectionError

ENGINE_ERRORS = (InputError, ImageReadError, BackboneError, WeightsUnavailableError, FeatureCacheError,
                 ProjectionError, NeighborsError, DatabaseBusyError, AugmentError, InterpretError)

__all__ = ["ENGINE_ERRORS", "AugmentError", "InterpretError", "DatabaseBusyError", "BackboneError", "WeightsUnavailableError", "ImageReadError", "InputError",
           "FeatureCacheError", "NeighborsError", "ProjectionError"]
