"""Names of a package imported on first use (PEP 562), so importing the package stays cheap."""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, namespace: dict, exports: dict[str, list[str]]):
    """Return (`__getattr__`, `__dir__`, `__all__`) for a package whose names live in its submodules.

    `exports` maps a submodule to the names it provides; a name is imported on first access and
    then kept in `namespace` (the package's globals).
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{where[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__():
        return names

    return __getattr__, __dir__, names
