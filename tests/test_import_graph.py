"""The package's import graph, read with `ast` (no import runs): the three experiments are siblings
under the CLI, no module reaches into another's private names, and there are no cycles.

Every import counts, also the lazy ones inside functions. `from . import x` imports module x;
`from .m import y` imports module m (and m.y when that is a module)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nsneurons"
RUNNERS = {"nsneurons.runners.neuronllm", "nsneurons.runners.crosstask", "nsneurons.runners.naica"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a `from ... import` (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, ast.Module]) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> nsneurons modules it imports, 'module: private name' for every private import or access)."""
    graph, private = {m: set() for m in mods}, []
    for name, tree in mods.items():
        is_package = (PACKAGE.parent / Path(*name.split("."))).is_dir()
        aliases: dict[str, str] = {}  # local name -> nsneurons module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("nsneurons"):
                        graph[name].add(a.name)
                        aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom):
                source = resolve(name, is_package, node)
                if not source.startswith("nsneurons"):
                    continue
                for a in node.names:
                    target = f"{source}.{a.name}"
                    if target in mods:  # `from . import x`: module x
                        graph[name].add(target)
                        aliases[a.asname or a.name] = target
                    else:
                        graph[name].add(source)
                        if a.name.startswith("_"):
                            private.append(f"{name}: from {source} import {a.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    for name in graph:
        graph[name] = {m for m in graph[name] if m in mods and m != name}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v), on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph_and_private():
    return imports(modules())


def test_the_checker_sees_relative_lazy_and_private_imports():
    mods = {
        "nsneurons": ast.parse(""),
        "nsneurons.a": ast.parse("def f():\n    from . import b\n    return b._x\n"),
        "nsneurons.b": ast.parse("from .a import _y\n"),
        "nsneurons.c": ast.parse("from nsneurons.b import z\n"),
    }
    graph, private = imports(mods)
    assert graph == {
        "nsneurons": set(),
        "nsneurons.a": {"nsneurons.b"},
        "nsneurons.b": {"nsneurons.a"},
        "nsneurons.c": {"nsneurons.b"},
    }
    assert sorted(private) == ["nsneurons.a: nsneurons.b._x", "nsneurons.b: from nsneurons.a import _y"]
    assert cycles(graph) == [["nsneurons.a", "nsneurons.b"]]


def test_the_cli_imports_the_three_runners(graph_and_private):
    graph, _ = graph_and_private
    assert RUNNERS <= graph["nsneurons.cli"]


def test_no_runner_imports_another(graph_and_private):
    graph, _ = graph_and_private
    assert {r: graph[r] & RUNNERS for r in RUNNERS} == {r: set() for r in RUNNERS}


def test_no_module_imports_a_private_name_of_another(graph_and_private):
    _, private = graph_and_private
    assert private == []


def test_no_import_cycles(graph_and_private):
    graph, _ = graph_and_private
    assert cycles(graph) == []
