"""The package is laid out by role, in layers: a module imports only from its own layer
or lower ones, and no set of modules imports itself in a circle. Imports are read with
the standard library's ``ast``, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_kgin"

# Lowest first. A top-level module not named here is an entry point (the highest layer).
LAYERS = [
    ("common",),
    ("data", "model"),
    ("runtime",),
    ("compat",),
    ("utils", "config", "quick_start", "launch"),
    ("experiments", "inference", "bench"),
]
ENTRY = len(LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, source: str) -> Set[str]:
    """The package's modules that module ``name`` imports (``from recbole_kgin.x import
    y`` names ``recbole_kgin.x.y`` where that is a module, else ``recbole_kgin.x``)."""
    found: Set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


GRAPH: Dict[str, Set[str]] = {name: imports_of(name, path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:  # the package's own __init__: it installs the fixes and re-exports
        return ENTRY
    for rank, roles in enumerate(LAYERS):
        if parts[1] in roles:
            return rank
    return ENTRY


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circle():
    assert circles(GRAPH) == []


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
              if layer(target) > layer(name) and not name.startswith(target + ".")]  # fmt: skip
    assert upward == []


def test_every_role_folder_is_a_layer():
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert folders == {role for roles in LAYERS for role in roles if (PACKAGE / role).is_dir()}


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(graph, expected):
    assert circles(graph) == expected


def test_the_import_reader_sees_lazy_and_relative_imports():
    source = "def f():\n    from recbole_kgin.config import Config\nfrom . import utils\nimport recbole_kgin.data.location\n"
    assert imports_of("recbole_kgin.quick_start", source) == {
        "recbole_kgin.config", "recbole_kgin.utils", "recbole_kgin.data.location",
    }  # fmt: skip
