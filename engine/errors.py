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
from .learner import LearnerError
from .metrics import MetricError
from .models import ModelError
from .neighbors import NeighborsError
from .projection import ProjectionError

ENGINE_ERRORS = (InputError, ImageReadError, BackboneError, WeightsUnavailableError, FeatureCacheError,
                 ProjectionError, NeighborsError, DatabaseBusyError, AugmentError, InterpretError,
                 LearnerError, MetricError, ModelError)

__all__ = ["ENGINE_ERRORS", "LearnerError", "MetricError", "ModelError", "AugmentError", "InterpretError", "DatabaseBusyError", "BackboneError", "WeightsUnavailableError", "ImageReadError", "InputError",
           "FeatureCacheError", "NeighborsError", "ProjectionError"]
