"""The package's layout promises: no private name crosses a module, no import cycle,
small functions in the near-duplicate search path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcsi"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path):
    """(imported module, names) of every import in a file, lazy ones included (those
    under ``if TYPE_CHECKING:`` are for type checkers only and never run)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            if not module.startswith("dcsi") or module == name:
                continue
            bad += [
                f"{name}: from {module} import {n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert not bad, bad


def _resolve(module: str, names: list[str]) -> set[str]:
    """The dcsi modules an import statement loads (a submodule named in the list
    counts as that submodule)."""
    out = set()
    if module in MODULES:
        out.add(module)
    for n in names:
        if f"{module}.{n}" in MODULES:
            out.add(f"{module}.{n}")
    return out


def test_no_import_cycle():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(path):
            graph[name] |= _resolve(module, names) - {name}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


SEARCH_PATH = ["neighbors", "redundancy", "leakage", "aligned", "similarity/wavelet", "rrqr"]


@pytest.mark.parametrize("module", SEARCH_PATH)
def test_functions_of_the_search_path_stay_small(module):
    """No function over 80 lines of code, docstrings and comments aside."""
    path = PACKAGE / f"{module}.py"
    source = path.read_text().splitlines()
    tree = ast.parse("\n".join(source))
    long = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        skip = set()
        doc = ast.get_docstring(node, clean=False)
        if doc is not None:
            d = node.body[0]
            skip |= set(range(d.lineno, d.end_lineno + 1))
        lines = [
            i
            for i in range(node.lineno, node.end_lineno + 1)
            if i not in skip and source[i - 1].strip() and not source[i - 1].strip().startswith("#")
        ]
        if len(lines) > 80:
            long.append(f"{node.name}: {len(lines)} lines")
    assert not long, long
