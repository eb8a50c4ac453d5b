"""The import graph of the host (``onnxopt/``) and the built-in plugins (``plugins/``), read from the source.

Every executed ``import`` statement counts, function-level ones included: a loop that only closes at run time is
still a loop a reader has to untangle. Imports under ``if TYPE_CHECKING:`` (annotations only) do not.
``python tests/import_graph.py`` prints the edges, the loops and the host modules the plugins import;
tests/host/test_architecture.py asserts the layering DESIGN.md section 5c states.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "onnxopt"
PLUGINS = "onnxopt_plugins"  # plugins/ is installed under this name (setuptools package-dir)


def module_name(path: Path) -> str:
    """``plugins/fold/chains.py`` -> ``onnxopt_plugins.fold.chains``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "plugins":
        parts[0] = PLUGINS
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for folder in ("onnxopt", "plugins"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` blocks: imports for annotations only, never executed."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, name: str) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [alias.name for alias in node.names]


def edges() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    files = {module_name(path): path for path in source_files()}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for target, names in _imports(path, name):
            if target.split(".")[0] not in (HOST, PLUGINS):
                continue
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            for dep in submodules or [target]:
                if dep != name:
                    graph[name].add(dep)
    return graph


def plugin_imports_of_host(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """plugin module -> the host modules it imports."""
    return {
        name: {dep for dep in deps if dep.split(".")[0] == HOST}
        for name, deps in graph.items()
        if name.split(".")[0] == PLUGINS
    }


def loops(graph: dict[str, set[str]], prefix: str = HOST) -> list[list[str]]:
    """Strongly connected groups of more than one module among the modules under ``prefix`` (Tarjan)."""
    nodes = [n for n in graph if n.split(".")[0] == prefix]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in graph or dep.split(".")[0] != prefix:
                continue
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in nodes:
        if node not in index:
            visit(node)
    return found


def main() -> None:
    graph = edges()
    for name in sorted(graph):
        if graph[name]:
            print(f"{name} -> {', '.join(sorted(graph[name]))}")
    print("\nloops in onnxopt/:")
    for group in loops(graph) or [["none"]]:
        print("  " + " <-> ".join(group))
    used = sorted({dep for deps in plugin_imports_of_host(graph).values() for dep in deps})
    print(f"\nhost modules the plugins import: {', '.join(used)}")
    into_plugins = sorted(n for n, deps in graph.items() if n.startswith(HOST + ".") or n == HOST
                          if any(d.split(".")[0] == PLUGINS for d in deps))  # fmt: skip
    print(f"host modules importing a plugin: {', '.join(into_plugins) or 'none'}")


if __name__ == "__main__":
    main()
