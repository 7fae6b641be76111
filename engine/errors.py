"""Every error type the engine raises for bad input or an unusable environment, under one base.

Only the CLI and the apps turn these into messages for a person, and they catch the base,
`EngineError`, so no type can be left out of a hand-kept list. Anything else is a bug and
keeps its traceback. Messages name the bad value, what is allowed and the fix.

This module imports nothing, so catching engine errors never pays for importing torch.
"""
from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises for bad input or an environment it cannot use."""


class InputError(EngineError):
    """A bad folder, CSV list, argument or label from the user; the message names it, the reason and the fix."""


class ImageReadError(EngineError):
    """A file that could not be read as an image: ``.path`` (str) and ``.reason`` (short human text)."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):
        # Keep the two-argument form when pickled across DataLoader workers.
        return (type(self), (self.path, self.reason))


class BackboneError(EngineError):
    """An unknown backbone or layer name."""


class WeightsUnavailableError(EngineError):
    """Pretrained weights are neither cached nor downloadable here."""


class PoolingError(EngineError):
    """An unknown pooling, or a feature array whose shape no pooling makes."""


class FeatureCacheError(EngineError):
    """The cache on disk does not match what was asked for."""


class DatabaseBusyError(EngineError):
    """The workspace database stayed locked by another process for longer than the caller's timeout."""


class DiskWriteError(EngineError, OSError):
    """A cache, the workspace database or an export that could not be written: the disk is full or the
    place is read-only. The writers replace files whole, so what was there before is kept; the message
    says so. Also an OSError, so code that already catches OSError around a write still does."""

    FULL, READ_ONLY = "full", "read-only"

    @classmethod
    def about(cls, path, reason: str, kind: str) -> DiskWriteError:
        """The error for `path` that could not be written because of `reason` (the system's words)."""
        if kind == cls.FULL:
            advice = ("Free some space on that disk, or put the workspace on another disk "
                      "(--workspace PATH; for an export, choose another output).")
        else:
            advice = ("Give a writable workspace folder (--workspace PATH; for an export, choose a writable "
                      "output).")
        return cls(f"Cannot write {path} ({reason}): the disk is {kind}. {advice} "
                   f"What was written before is kept unchanged.")


class ProjectionError(EngineError):
    """A projection cannot be computed with the given data or parameters."""


class NeighborsError(EngineError):
    """A similarity query cannot be answered with the given arguments."""


class FirstModelError(EngineError):
    """Too few labels to fit the first model or to estimate its accuracy."""


class AugmentError(EngineError):
    """An augmentation parameter outside its allowed range; the message names it and the range."""


class ModelError(EngineError):
    """An unknown task or a model configuration that cannot be built."""


class LearnerError(EngineError):
    """A task, learning rate or exported file the learner cannot use."""


class MetricError(EngineError):
    """Predictions and targets that cannot be compared (shapes, empty sets)."""


class InterpretError(EngineError):
    """A target or layer that Grad-CAM cannot use."""


__all__ = ["EngineError", "AugmentError", "BackboneError", "DatabaseBusyError", "DiskWriteError", "FeatureCacheError",
           "FirstModelError", "ImageReadError", "InputError", "InterpretError", "LearnerError", "MetricError",
           "ModelError", "NeighborsError", "PoolingError", "ProjectionError", "WeightsUnavailableError"]
