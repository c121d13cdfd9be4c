"""The package's shape: imports only point down the layers, no import cycle, no module name used twice.

Every module under ``src/spurlab`` is parsed with ``ast``; every import counts, top-level or inside a function
(a function-local import hides a cycle from Python, not from this test). Imports under ``if TYPE_CHECKING:``
are not run and do not count.
"""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spurlab"

# The one layer table: a module may import from its own layer or any layer below, never above.
LAYERS: dict[str, int] = {
    "errors": 0, "_version": 0, "lazy_exports": 0,
    "utils": 1, "registry": 1, "runs": 1, "params": 1,
    "data": 2, "models": 2, "report": 2, "metrics": 2,
    "probes": 3,
    "train": 4,
    "studies": 5,
    "audit": 6, "sweep": 6,
    "cli": 7,
}
TOP = max(LAYERS.values()) + 1  # the package's own __init__: the public face, may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The spurlab modules ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import spurlab.data.grouped as g` -> the module itself
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    top = parts[1]
    if top not in LAYERS:
        raise AssertionError(f"{module}: '{top}' is not in the layer table of tests/test_architecture.py; add it")
    return LAYERS[top]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


GRAPH = import_graph()


def test_the_graph_sees_the_package():
    assert "spurlab.audit.core" in GRAPH and "spurlab.errors" in GRAPH["spurlab.utils"] | {"spurlab.errors"}
    assert "spurlab.audit.findings" in GRAPH["spurlab.audit.render"]


def test_every_folder_is_in_the_layer_table():
    for module in GRAPH:
        layer_of(module)


def test_no_import_cycle():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_only_point_down():
    upward = [f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
              for source, targets in sorted(GRAPH.items()) for target in sorted(targets)
              if layer_of(target) > layer_of(source)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_module_names_are_unique_across_the_package():
    names = Counter(p.name for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not [n for n, c in names.items() if c > 1], f"module names used twice: {names.most_common(5)}"


def test_test_file_names_are_unique():
    names = Counter(p.name for p in (ROOT / "tests").rglob("*.py") if p.name not in ("__init__.py", "conftest.py"))
    assert not [n for n, c in names.items() if c > 1], f"test file names used twice: {names.most_common(5)}"


@pytest.mark.parametrize("source, expected", [
    ("from spurlab.data import grouped\n", {"spurlab.data.grouped"}),
    ("from spurlab.data import load_splits\n", {"spurlab.data"}),
    ("import spurlab.data.grouped as g\n", {"spurlab.data.grouped"}),
    ("def f():\n    from . import grouped\n", {"spurlab.data.grouped"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spurlab.cli import app\n", set()),
])
def test_the_import_parser(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"spurlab", "spurlab.data", "spurlab.data.grouped", "spurlab.data.probe", "spurlab.cli"}
    assert imported_modules("spurlab.data.probe", path, known) == expected


def test_the_cycle_finder():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_public_face_resolves_and_loads_lazily():
    import subprocess
    import sys

    code = ("import sys, spurlab, spurlab.probes\n"
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'import spurlab pulled in heavy deps'\n"
            "for face in (spurlab, spurlab.probes):\n"
            "    for name in face.__all__:\n"
            "        getattr(face, name)\n"
            "assert spurlab.Audit.__module__ == 'spurlab.audit.core'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
