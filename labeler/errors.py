"""Every error type `labeler/` raises for bad input, in one hierarchy.

Only the CLI and the apps turn these into messages for a person; anything else is a bug and
keeps its traceback. Messages name the bad value, what is allowed and how to fix it.
"""


class LabelerError(Exception):
    """Base of every error the labeler package raises for bad input or an unusable project."""


class LabelStoreError(LabelerError):
    """A label operation that cannot be done: unknown label, invalid name, conflicting change."""


class LabelFileError(LabelerError):
    """A label file (CSV, folder tree, export target) that cannot be read or written."""


__all__ = ["LabelerError", "LabelStoreError", "LabelFileError"]
