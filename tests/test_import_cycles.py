"""The package's layering: no module of src/tagseg imports itself back through others.

Every import counts, including the ones inside functions (a lazy import hides a cycle from the
interpreter, not from the design); only imports under ``if TYPE_CHECKING:`` are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tagseg

PACKAGE_ROOT = Path(tagseg.__file__).parent


def module_names() -> dict[str, Path]:
    """``tagseg.x.y`` -> file, for every module and package of the source tree."""
    names = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = ("tagseg", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every tagseg module or ``module.name`` imported by module ``name``, outside ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return {item for item in found if item.split(".")[0] == "tagseg"}


def imported_module(item: str, known: set[str]) -> str:
    """The module an imported item names: itself if a module, else the module it comes from."""
    return item if item in known else item.rpartition(".")[0]


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The tagseg modules that module ``name`` imports anywhere in its body."""
    return {module for module in (imported_module(item, known) for item in imports(name, path, known)) if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {name: imported_modules(name, path, known) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_sees_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    graph = {"tagseg.a": {"tagseg.b"}, "tagseg.b": {"tagseg.c"}, "tagseg.c": {"tagseg.a"}, "tagseg.d": {"tagseg.a"}}
    assert cycles(graph) == [["tagseg.a", "tagseg.b", "tagseg.c"]]
    source = tmp_path / "b.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tagseg.c import C\n"
        "def later():\n    from tagseg import a\n    from . import d\n"
    )
    known = {"tagseg", "tagseg.a", "tagseg.b", "tagseg.c", "tagseg.d"}
    assert imported_modules("tagseg.b", source, known) == {"tagseg.a", "tagseg.d"}


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["tagseg.output_layout"] >= {"tagseg.exports", "tagseg.result"}
    assert cycles(graph) == [], "import cycles (each list imports itself back): " + "; ".join(
        " <-> ".join(component) for component in cycles(graph)
    )
