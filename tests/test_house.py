"""House rules of the code itself: distgan's modules import each other without a circle (every
import counts: module level, inside functions, under ``if TYPE_CHECKING``), and no module is
longer than 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distgan"
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """``distgan.a.b`` → its file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The distgan modules that ``name`` imports anywhere in its file. ``import distgan.a.b`` and
    ``from distgan.a import b`` (b a submodule) import ``distgan.a.b``; ``from distgan.a import
    x`` (x a name) imports ``distgan.a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in modules:  # import distgan.a.b.name: a module
                    target = target.rpartition(".")[0]
                found.add(target)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from . import x, from ..a import x
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{source}" if source else base
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle ``[a, b, …, a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "distgan.config" in graph["distgan.engine.runtime"]  # module level
    assert "distgan.engine.trainer" in graph["distgan.cli"]  # inside a function
    assert "distgan.trained.model" in graph["distgan"]  # under TYPE_CHECKING (and in a function)
    assert (
        "distgan.engine.checkpoint" in graph["distgan.trained.model"]
    )  # from distgan.engine import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_config_is_a_leaf() -> None:
    """The configuration imports only the errors, the overrides and the augmentation stage."""
    graph = import_graph()
    allowed = {"distgan.errors", "distgan.overrides", "distgan.augment", "distgan.ada"}
    config = {m for m in graph if m == "distgan.config" or m.startswith("distgan.config.")}
    for module in config:
        assert graph[module] <= config | allowed, (module, graph[module] - config - allowed)
    assert graph["distgan.augment"] == {"distgan.ada"} and graph["distgan.ada"] == set()


def test_no_module_is_longer_than_400_lines() -> None:
    lengths = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
        for path in module_files().values()
    }
    long = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_families_never_import_the_configuration() -> None:
    """A family is built from its own sections and a few facts of the run (families/base.py)."""
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("distgan.families"):
            assert not {m for m in imports if m.startswith(("distgan.config", "distgan.recipe"))}
