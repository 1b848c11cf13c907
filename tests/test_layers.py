"""The package's layers point one way, and no two modules import each other.

Read statically: every ``import`` of a gateway module anywhere in a module of
``src/aigateway`` counts, at the top, inside a function or under ``TYPE_CHECKING``
alike (a lazy import hides a circle, it does not remove it).  ``from aigateway.x import
y`` is an import of the module ``aigateway.x.y`` when there is one, else of
``aigateway.x``.

The rules:

* no import cycle, of any length;
* ``aigateway.wire`` (the request and result types every layer shares) and
  ``aigateway.provider_specs`` are leaves: they import no other gateway module but
  ``errors``;
* the provider adapters (``providers/``) and the response cache (``cache/``) import
  nothing from the core (``core/``): the core drives them, never the other way round.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "aigateway"

Graph = Mapping[str, frozenset[str]]

# Module -> the gateway modules it may import, besides none at all.
LEAVES = {
    "aigateway.wire": {"aigateway.errors"},
    "aigateway.provider_specs": {"aigateway.errors"},
}


def module_files(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    files = {}
    for path in sorted((source / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imported_modules(name: str, path: Path, modules: Iterable[str]) -> frozenset[str]:
    """The gateway modules that module ``name`` (at ``path``) imports, anywhere in it."""
    known = set(modules)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from ..x import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    found.discard(name)
    return frozenset(found)


def import_graph(source: Path = SOURCE) -> dict[str, frozenset[str]]:
    files = module_files(source)
    return {name: imported_modules(name, path, files) for name, path in files.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle (``[a, b, ..., a]``) through each group of modules that reach
    each other (a strongly connected component of more than one module)."""
    found = []
    for component in _components(graph):
        start = min(component)
        found.append(_shortest_cycle(graph, start, component))
    return sorted(found)


def _components(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively; only those with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``within`` (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in no cycle")  # pragma: no cover


def describe(found: list[list[str]]) -> str:
    return "import cycles inside src/aigateway:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in found
    )


GRAPH = import_graph()


def test_the_scan_sees_the_whole_package() -> None:
    assert "aigateway.wire" in GRAPH
    assert "aigateway.hotpath" in GRAPH["aigateway.cache.service"]
    # Relative imports count as well: the hot-path selector imports its pure twins.
    assert "aigateway.hotpath._ttl_policy" in GRAPH["aigateway.hotpath"]


def test_no_module_imports_itself_back_through_others() -> None:
    found = cycles(GRAPH)
    assert not found, describe(found)


def test_a_cycle_is_reported_by_the_modules_on_it() -> None:
    graph = {
        "a": frozenset({"b"}),
        "b": frozenset({"c", "d"}),
        "c": frozenset({"a"}),
        "d": frozenset(),
        "e": frozenset({"f"}),
        "f": frozenset({"e"}),
    }
    found = cycles(graph)
    assert found == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert describe(found).splitlines()[1:] == ["  a -> b -> c -> a", "  e -> f -> e"]


def test_a_lazy_import_inside_a_function_still_counts(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from aigateway.two import helper\n")
    (package / "two.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from aigateway import one\n"
        "def helper():\n    from aigateway.one import thing\n"
    )
    graph = import_graph(tmp_path)
    assert graph["aigateway.two"] == {"aigateway.one"}
    assert cycles(graph) == [["aigateway.one", "aigateway.two", "aigateway.one"]]


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_the_shared_leaf_modules_import_no_other_gateway_module(leaf: str) -> None:
    assert GRAPH[leaf] <= LEAVES[leaf], f"{leaf} imports {sorted(GRAPH[leaf] - LEAVES[leaf])}"


@pytest.mark.parametrize("lower", ["aigateway.providers", "aigateway.cache"])
def test_the_provider_adapters_and_the_cache_import_nothing_from_the_core(lower: str) -> None:
    reaching = {
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module == lower or module.startswith(f"{lower}.")
        for target in targets
        if target == "aigateway.core" or target.startswith("aigateway.core.")
    }
    assert not reaching, f"{lower} imports the core: " + ", ".join(sorted(reaching))
