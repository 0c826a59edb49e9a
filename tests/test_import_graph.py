"""No import loops within trackcheck: every import statement of every module (top-level,
inside functions and under ``if TYPE_CHECKING:`` alike) is an edge, and the graph over the
package's modules has no cycle. A loop works only as long as nobody reorders the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import trackcheck


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` (the package directory) by its dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``path``) imports. ``from a import b``
    imports the module a.b when there is one, else a; a relative import resolves against
    the module's package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                sub = f"{source}.{a.name}"
                out.add(sub if sub in modules else source)
    return {m for m in out if m in modules and m != name}


def cycles(modules: dict[str, Path]) -> list[list[str]]:
    """The import loops: strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted(imported(m, p, modules)) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                loops.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return loops


def test_trackcheck_has_no_import_loops():
    root = Path(trackcheck.__file__).parent
    modules = module_files(root, "trackcheck")
    assert "trackcheck.checks.contract._contract_findings" in modules  # the walk sees packages
    assert cycles(modules) == []


def test_the_walk_finds_a_loop_through_a_package_face(tmp_path):
    # the shape of the loop that checks/contract had: the package imports its helper,
    # the helper imports a name back from the package (here under TYPE_CHECKING)
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub._helper import f\nclass P: ...\n")
    (pkg / "sub" / "_helper.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import P\n"
    )
    (pkg / "other.py").write_text("from . import sub\n")
    assert cycles(module_files(pkg, "pkg")) == [["pkg.sub", "pkg.sub._helper"]]
