"""The package's modules import one another in one direction only (no cycles).

Every import statement counts, including the ones inside functions: a lazy import hides a
cycle from Python's import machinery, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Repository folder -> installed package name (see pyproject's package-dir).
PACKAGES = {"ra_lite": "ra_lite", "convert": "ra_lite.convert", "models": "ra_lite.models"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            # the deepest known module the name refers to (from pkg import submodule counts)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    # A package's __init__ is not an edge target: importing ra_lite.x.y runs ra_lite/__init__,
    # which here only defines lazy names.
    return {m: {t for t in _imports(p, m, known) if _modules()[t].name != "__init__.py"}
            for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_detector_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert "ra_lite.runtime.engine" in graph and graph["ra_lite.runtime.engine"]
    assert _cycles(graph) == []


def test_runtime_does_not_import_the_layers_above_it():
    """The runtime is a library for judge/cli/serve/bench, never a user of them."""
    above = ("ra_lite.judge", "ra_lite.cli", "ra_lite.serve", "ra_lite.bench", "ra_lite.batch",
             "ra_lite.remote")
    for module, targets in import_graph().items():
        if module.startswith("ra_lite.runtime"):
            bad = [t for t in targets if t.startswith(above)]
            assert not bad, f"{module} imports {bad}"
