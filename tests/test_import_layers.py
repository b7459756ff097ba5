"""The import graph of cloudtune and its three cloud plugins has no circle.

The graph is read with grimp (the library under import-linter) from every import statement: those inside functions
and under `if TYPE_CHECKING:` count too, since a reader follows them all. A circle is a strongly connected component
of more than one module; the test names one loop through it, module by module, with the line of each import. The
layer contracts themselves are in pyproject.toml (`lint-imports`, run by .ci/run).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

import pytest

grimp = pytest.importorskip("grimp")

PACKAGES = ("cloudtune", "cloudtune_aws", "cloudtune_gcp", "cloudtune_azure")


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components of the graph, each a list of its nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def loop_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One circle inside a strongly connected component: a shortest path from its first module back to itself."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, set()) & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return component  # not reached: every member of a component lies on a circle through `start`


def describe(graph: "grimp.ImportGraph", loop: list[str]) -> str:
    steps = []
    for importer, imported in zip(loop, loop[1:]):
        lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
        steps.append(f"  {importer} -> {imported} (line {', '.join(map(str, lines))})")
    return "\n".join(steps)


def test_the_cycle_finder_finds_a_loop() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    components = [c for c in strongly_connected(edges, edges) if len(c) > 1]
    assert components == [["a", "b", "c"]]
    assert loop_through(components[0], edges) == ["a", "b", "c", "a"]


def test_no_import_cycle() -> None:
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=False,
                              cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = [c for c in strongly_connected(graph.modules, edges) if len(c) > 1]
    report = "\n\n".join(f"a circle of {len(c)} modules ({', '.join(c)}), for example:\n"
                         f"{describe(graph, loop_through(c, edges))}" for c in cycles)
    assert not cycles, f"import cycles (every import counts, inside functions too):\n{report}"
