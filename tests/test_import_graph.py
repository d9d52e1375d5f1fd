"""The project's import graph, read from the source with `ast` (no module is imported).

Rules (DESIGN.md): no import cycle; the core `splitleak` imports no actor; the actors (edge,
cloud, adversary) never import each other; the attack families never import each other.
Every import counts, including those inside functions (a lazy import is still a dependency)
and under TYPE_CHECKING. An import names one module: `from a.b import c` is an edge to
`a.b.c` when that is a module, else to `a.b`; importing a module does not add edges to its
parent packages. The generated stubs (splitleak/v1) stay out.
"""
from __future__ import annotations

import ast
import functools
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("splitleak", "edge", "cloud", "adversary", "demo", "experiments")
ACTORS = ("edge", "cloud", "adversary")
GENERATED = "splitleak.v1"

Graph = dict[str, set[str]]


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_files() -> dict[str, Path]:
    """Every project module's dotted name and file, the generated stubs left out."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not inside(name, GENERATED):
                files[name] = path
    return files


def known_prefix(name: str, known: set[str]) -> str | None:
    """The longest project module that `name` starts with, or None (a third-party or generated module)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(known_prefix(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else known_prefix(base, known))
    return {name for name in found if name is not None and name != module}  # `from pkg import name` in pkg


@functools.cache
def import_graph() -> Graph:
    files = module_files()
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm: the graph's cycles, as its strongly connected components that hold one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def cycle_edges(graph: Graph, component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]


def import_chain(graph: Graph, source: str, target: str) -> list[str] | None:
    """The shortest chain of imports from a module in package `source` to one in `target`, or None."""
    starts = sorted(m for m in graph if inside(m, source))
    came_from: dict[str, str | None] = {m: None for m in starts}
    queue = deque(starts)
    while queue:
        module = queue.popleft()
        if inside(module, target):
            chain = [module]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for imported in sorted(graph[module]):
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return None


# -- the reader and the algorithms, on what they must find -------------------------------------


def test_graph_reads_the_project_imports():
    graph = import_graph()
    assert set(PACKAGES) <= set(graph) and not any(inside(m, GENERATED) for m in graph)
    assert "splitleak.cli.common" in graph["edge.cli"]  # from splitleak.cli.common import ...
    assert "splitleak.errors" in graph["splitleak.codecs"]
    assert "edge.session" in graph["edge.cli"]  # a lazy import inside run_edge
    assert "adversary.cli.attack" in graph["adversary.cli"]  # from adversary.cli import attack (a module)
    assert not any(inside(m, GENERATED) for targets in graph.values() for m in targets)


def test_tarjan_and_chains_find_what_is_there():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": {"a"}, "f": set()}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d"]]
    assert cycle_edges(graph, ["a", "b", "c"]) == ["a -> b", "b -> c", "c -> a"]
    assert import_chain(graph, "e", "c") == ["e", "a", "b", "c"]
    assert import_chain(graph, "a", "f") is None


# -- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str):
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if any(inside(m, package) for m in c)]
    assert not cycles, "import cycles:\n" + "\n".join("  " + ", ".join(cycle_edges(graph, c)) for c in cycles)


def test_core_imports_no_actor():
    graph = import_graph()
    outside = [f"{a} -> {b}" for a in sorted(graph) if inside(a, "splitleak")
               for b in sorted(graph[a]) if not inside(b, "splitleak")]
    assert not outside, "the core imports outside itself:\n  " + "\n  ".join(outside)


@pytest.mark.parametrize("actor, other", [(a, b) for a in ACTORS for b in ACTORS if a != b])
def test_actors_never_import_each_other(actor: str, other: str):
    chain = import_chain(import_graph(), actor, other)
    assert chain is None, f"{actor} imports {other}: " + " -> ".join(chain)


@pytest.mark.parametrize("family, other", [
    ("adversary.feature", "adversary.gradient"),
    ("adversary.gradient", "adversary.feature"),
])
def test_attack_families_never_import_each_other(family: str, other: str):
    """Directly or through other modules (as import-linter's independence contract counts it)."""
    chain = import_chain(import_graph(), family, other)
    assert chain is None, f"{family} imports {other}: " + " -> ".join(chain)
