"""The registry of tasks (`engine.tasks`): a task class is creatable by its name once registered."""
from __future__ import annotations

from .errors import EngineError, LearnerError

# --- the registry ----------------------------------------------------------------------

TASKS: dict[str, type] = {}


def register_task(cls: type) -> type:
    """Class decorator: `cls` becomes creatable by its `name` (build_data, create_model, exports, the CLI)."""
    if not cls.name or TASKS.get(cls.name, cls) is not cls:
        raise LearnerError(f"{cls.__qualname__} needs a `name` no other task has (registered: {', '.join(TASKS)}).")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, error: type[EngineError] = LearnerError) -> type:
    """The task class registered as `name`; an unknown name raises `error`, listing the registered ones."""
    if name not in TASKS:
        raise error(f"Unknown task {name!r}. Choose one of: {', '.join(TASKS)}.")
    return TASKS[name]
