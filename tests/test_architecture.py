"""The layout rules of the codebase, checked by reading the source (`ast`), never by importing it.

- `engine/` knows nothing about the label store or the UI: it imports no `labeler`, `panel`,
  `bokeh` or `param`.
- Only `labeler/ui/` imports Panel or Bokeh; the rest of `labeler/` is testable without them.
- No import cycles among the project's modules.
- No module over `MAX_LINES` lines, unless `LONG_MODULES` says why.

Every import counts, including those inside functions (a deferred import is still a dependency)
and those under `if TYPE_CHECKING:` (an annotation-only import still says what a module knows of).
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "labeler")  # the importable packages whose modules make the graph
MAX_LINES = 500
LINE_CHECKED = ("engine", "labeler", "apps", "bench", "tests")
# {path relative to the repository root: why it may be longer than MAX_LINES}. Keep it short:
# a file belongs here only when splitting it would make it harder to read, never "not split yet".
LONG_MODULES: dict[str, str] = {}
UI_LIBRARIES = ("panel", "bokeh")
NOT_IN_ENGINE = ("labeler", "panel", "bokeh", "param")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the project's packages."""
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    """Exported name -> submodule (full name), for a package whose `__init__` has a lazy `_EXPORTS` table.

    `engine/__init__.py` and `labeler/__init__.py` import nothing at module level but `engine._lazy`;
    `from engine import Learner` imports `engine.learner` on first use (PEP 562). So that import is
    an edge to `engine.learner`, the module that really runs, and not to `engine`: an edge to the
    `__init__` would hide a real cycle behind it (`engine.learner` reached through the package), and
    making the `__init__` depend on all its exports would invent cycles for every submodule that
    uses one. The `__init__` itself keeps its one real edge, to `engine._lazy`.
    """
    path = _modules().get(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: f"{package}.{module}" for module, names in table.items() for name in names}
    return {}


def _base(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The full name of what `from <level dots><target> import ...` names, seen from `module`."""
    if level == 0:
        return target or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[:len(anchor) - (level - 1)]
    return ".".join(anchor + ([target] if target else []))


@cache
def _imports(module: str) -> frozenset[str]:
    """Full names of what `module` imports, resolved to project modules where they are ones."""
    path = _modules()[module]
    known = _modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path.name == "__init__.py", node.level, node.module)
            lazy = _lazy_exports(base)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else lazy.get(alias.name, base))
    return frozenset(found)


def _top(name: str) -> str:
    return name.split(".")[0]


def _offenders(modules, forbidden) -> list[str]:
    return [f"{module} ({_modules()[module].relative_to(ROOT)}) imports {name}"
            for module in sorted(modules) for name in sorted(_imports(module)) if _top(name) in forbidden]


def test_engine_imports_no_labeler_or_ui_library():
    engine = [m for m in _modules() if _top(m) == "engine"]
    offenders = _offenders(engine, NOT_IN_ENGINE)
    assert not offenders, (f"engine/ must not import {', '.join(NOT_IN_ENGINE)}; move the code that needs them to "
                           "labeler/ (or labeler/ui/ for widgets):\n  " + "\n  ".join(offenders))


def test_only_labeler_ui_imports_panel_or_bokeh():
    outside_ui = [m for m in _modules() if _top(m) == "labeler" and not m.startswith("labeler.ui")]
    offenders = _offenders(outside_ui, UI_LIBRARIES)
    assert not offenders, ("only labeler/ui/ may import Panel or Bokeh; move these modules into labeler/ui/, or "
                           "their logic into a plain module that the widget wires up:\n  " + "\n  ".join(offenders))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _project_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {name for name in _imports(m) if name in modules and name != m} for m in modules}


def test_no_import_cycles():
    graph = _project_graph()
    described = []
    for component in _cycles(graph):
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
        described.append(f"{', '.join(component)}: " + "; ".join(edges))
    assert not described, ("import cycles among the project's modules; move what both sides need into a third "
                           "module (e.g. a machinery module `_name.py`) that imports neither:\n  "
                           + "\n  ".join(described))


def test_cycle_finder_sees_cycles_through_lazy_exports():
    """The checks above only protect if the graph they read is right: `from engine import name` goes to
    the submodule that defines `name`, and a relative import resolves against the module's package."""
    assert "engine.learner" in _imports("labeler.training")
    assert "engine.clean" in _imports("labeler.cleaning")
    assert "engine.pooling" in _imports("engine.features")
    assert {name for name in _imports("engine") if _top(name) in PACKAGES} == {"engine._lazy"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_stay_under_the_line_limit():
    long = []
    for folder in LINE_CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES and relative not in LONG_MODULES:
                long.append(f"{relative}: {lines} lines")
    assert not long, (f"modules over {MAX_LINES} lines; split them by responsibility (or, if splitting would make "
                      "one harder to read, add it to LONG_MODULES with the reason):\n  " + "\n  ".join(long))
