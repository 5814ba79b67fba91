"""The package's floors: every import (lazy and type-only ones included) points to the same or a lower floor,
and no modules import each other in a circle. See the docstrings of the subpackages for what each holds."""

from __future__ import annotations

import ast
from pathlib import Path

import gptkit

PACKAGE = Path(gptkit.__file__).parent
# Lowest first. The ground floor is the package root with errors.py and io.py.
FLOORS = ["text", "models", "generation", "training", "tasks", "server", "cli"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The gptkit modules a file imports anywhere in it (`from gptkit.models import lora` is gptkit.models.lora)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gptkit")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gptkit":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def floor(module: str) -> int:
    parts = module.split(".")
    if module == "gptkit.__main__":
        return len(FLOORS)  # the entry point, beside the CLI
    return FLOORS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in FLOORS else 0


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def test_every_import_points_down() -> None:
    upward = []
    for module, targets in import_graph().items():
        if module == "gptkit":  # the facade: names resolved lazily from the floors (importlib), type-only imports
            continue
        upward += [f"{module} -> {t}" for t in sorted(targets) if floor(t) > floor(module)]
    assert upward == [], "imports of a higher floor:\n" + "\n".join(upward)


def test_subpackages_say_what_they_hold_and_may_import() -> None:
    for name in FLOORS:
        init = PACKAGE / name / "__init__.py"
        if not init.parent.is_dir():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "import" in doc, f"{init}: the docstring should say what the floor may import"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    graph = import_graph()
    graph.pop("gptkit")  # the facade's lazy names are not imports of its modules
    assert cycles(graph) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
