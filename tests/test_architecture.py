"""The package's import graph runs one way: each subpackage or top-level module of ``pspnet`` is one node, and every
import (function-local ones included) goes from a node to one in its own layer or below, with no circle.

docs/architecture.md describes the same layers; a new module must be placed in ``LAYERS`` to pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pspnet"

# Lowest first. A node may import nodes of its own layer or of lower ones.
LAYERS: list[tuple[str, set[str]]] = [
    ("ground", {"constants", "errors", "atomic", "parsing", "heap"}),
    ("data, models, pictures", {"data", "models", "visualize"}),
    ("inference", {"inference"}),
    ("model files", {"weights"}),
    ("training and evaluation", {"engine"}),
    ("run directories, deployed files", {"runs", "onnx_model"}),
    ("front doors", {"segmenter", "introspect"}),
    ("applications", {"predict", "demo", "bench", "export", "serve"}),
    ("command line and package", {"cli", "__init__"}),
]


def _node(module: str) -> str:
    """``pspnet.a.b`` -> ``a``; the package itself is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """{node: nodes it imports} over every ``.py`` file under ``root`` (the ``pspnet`` package), every import
    statement anywhere in a file counted, relative ones resolved."""
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[:-1]  # the package a relative import starts from (a package's __init__ included)
        source = _node(".".join(p for p in parts if p != "__init__"))
        edges.setdefault(source, set())
        for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(statement, ast.ImportFrom):
                if statement.level:
                    base = package[: len(package) - (statement.level - 1)]
                    if statement.module:
                        targets = [".".join([*base, statement.module])]
                    else:
                        targets = [".".join([*base, alias.name]) for alias in statement.names]
                elif statement.module and statement.module.split(".")[0] == "pspnet":
                    targets = [statement.module]
            elif isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names if alias.name.split(".")[0] == "pspnet"]
            edges[source].update(_node(t) for t in targets if _node(t) != source)
    return edges


def layer_problems(edges: dict[str, set[str]], layers: list[tuple[str, set[str]]]) -> list[str]:
    """Every node missing from ``layers``, every import that climbs a layer, and one circle if there is any."""
    rank = {node: i for i, (_, nodes) in enumerate(layers) for node in nodes}
    problems = [f"{node} is in no layer" for node in sorted(set(edges) - set(rank))]
    for source in sorted(edges):
        for target in sorted(edges[source]):
            if source in rank and target in rank and rank[target] > rank[source]:
                problems.append(
                    f"{source} ({layers[rank[source]][0]}) imports {target} ({layers[rank[target]][0]}), a layer above"
                )
    circle = find_circle(edges)
    if circle:
        problems.append("circle: " + " -> ".join(circle))
    return problems


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``edges`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_imports_run_one_way():
    edges = import_graph()
    assert {"models", "engine", "weights", "cli"} <= set(edges)  # the walk saw the package
    assert "errors" in edges["models"] and "models" in edges["weights"]  # and its imports
    assert layer_problems(edges, LAYERS) == []


def test_every_layer_names_nodes_that_exist():
    edges = import_graph()
    assert {node for _, nodes in LAYERS for node in nodes} == set(edges)


def test_the_checker_finds_a_climbing_import_a_circle_and_an_unplaced_node():
    layers = [("low", {"a"}), ("high", {"b", "c"})]
    assert layer_problems({"a": set(), "b": {"a"}, "c": {"b"}}, layers) == []
    problems = layer_problems({"a": {"b"}, "b": {"a"}, "c": set(), "d": set()}, layers)
    assert problems == ["d is in no layer", "a (low) imports b (high), a layer above", "circle: a -> b -> a"]
    assert find_circle({"b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


@pytest.mark.parametrize("statement", ["from ..engine import train", "import pspnet.engine.train"])
def test_function_local_and_absolute_imports_count(tmp_path, statement):
    package = tmp_path / "pspnet"
    (package / "models").mkdir(parents=True)
    (package / "engine").mkdir()
    (package / "__init__.py").write_text("")
    (package / "engine" / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "pspnet.py").write_text(f"def f():\n    {statement}\n")
    assert import_graph(package)["models"] == {"engine"}
