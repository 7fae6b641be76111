"""Every error type `labeler/` raises for bad input, in one hierarchy, and what is shown to people.

Only the CLI and the apps turn these into messages for a person: they catch `USER_ERRORS`, the
two bases (this package's `LabelerError` and the engine's `EngineError`), so no error type can
be forgotten. Anything else is a bug and keeps its traceback. Messages name the bad value, what
is allowed and how to fix it.
"""
from engine.errors import EngineError


class LabelerError(Exception):
    """Base of every error the labeler package raises for bad input or an unusable project."""


class LabelStoreError(LabelerError):
    """A label operation that cannot be done: unknown label, invalid name, conflicting change."""


class LabelFileError(LabelerError):
    """A label file (CSV, folder tree, export target) that cannot be read or written."""


class ThumbnailError(LabelerError):
    """A thumbnail cache asked for a size or an item list it cannot make."""


class CompositeError(LabelerError):
    """A composite image of thumbnails asked for with positions, ranges or sizes it cannot draw."""


class SessionError(LabelerError):
    """An action the session cannot do now (nothing selected, no model yet); the message says what first."""


class ServeError(LabelerError):
    """A server that cannot start as asked: clashing login options, an unreadable password file, an origin
    that is not HOST[:PORT], an address or port it cannot listen on."""


# shown to the person as a message; anything else is a bug
USER_ERRORS = (LabelerError, EngineError)

__all__ = ["USER_ERRORS", "CompositeError", "LabelerError", "LabelFileError", "LabelStoreError", "ServeError",
           "SessionError", "ThumbnailError"]
