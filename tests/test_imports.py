"""The package's shape: no import cycles (counting imports made inside functions), no module too long.

Every module under src/weightscope is parsed with ``ast`` (nothing is imported). Each
``import weightscope.x`` / ``from weightscope.x import y`` anywhere in a module (at its top,
inside a function, a method, a ``try``) is an edge; ``from weightscope.x import y`` is an edge
to ``weightscope.x.y`` when that is a module, else to ``weightscope.x``. Imports under
``if TYPE_CHECKING:`` are left out: they never run. A submodule's implicit import of its
parent package is not an edge either (every submodule has it; a cycle needs an explicit one).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "weightscope"
GENERATED = {"weightscope._proto.descriptor"}
MAX_LINES = 650
# Modules still over the limit, each with where its excess goes. An entry fails the test once its
# module fits (then delete the entry), so none outlives its reason.
PENDING: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The weightscope modules ``module`` imports when it runs, wherever the import statement sits."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    # "import weightscope.a.b" runs weightscope.a.b (and its packages, implicitly: not edges)
    return {target for target in targets if target in known and target != module}


def _compiled() -> set[str]:
    """The compiled modules (``src/weightscope/_kernels.c``...): known as modules, importing none of the package's."""
    return {f"weightscope.{path.stem}" for path in PACKAGE.glob("*.c")}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules) | _compiled()
    return {name: _imports(name, path, known) for name, path in modules.items()} | {name: set() for name in _compiled()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; the ones of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"g"}, "g": {"f"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["f", "g"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from weightscope import b\n"
        "def f():\n    from weightscope.c import thing\n    import weightscope.d\n"
    )
    known = {"weightscope", "weightscope.b", "weightscope.c", "weightscope.d"}
    assert _imports("weightscope.m", source, known) == {"weightscope.c", "weightscope.d"}


def test_no_import_cycles() -> None:
    cycles = strongly_connected(import_graph())
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_no_module_over_the_line_limit() -> None:
    long = {
        name: count
        for name, path in _modules().items()
        if name not in GENERATED and (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not {name: count for name, count in long.items() if name not in PENDING}, (
        f"modules over {MAX_LINES} lines (split them where a seam is): {long}"
    )
    assert set(PENDING) <= set(long), f"now within {MAX_LINES} lines: delete from PENDING {set(PENDING) - set(long)}"
