"""The house has no import circles and no overgrown modules.

Every import in src/domtok is read with `ast` (lazy, function-level ones included: a circle
closed inside a function still ties two modules into one); relative imports are resolved, and
`from X import name` where X.name is a module counts as an import of X.name. Imports under
`if TYPE_CHECKING:` never run and are left out (a module may name another's type without
importing it). A circle between modules fails with the circle spelled out. (That no module
imports `domtok.pipeline` is test_rundir's `test_no_module_imports_the_pipeline`.) No module
may be longer than MAX_LINES.
"""

from __future__ import annotations

import ast
from pathlib import Path

import domtok

SRC = Path(domtok.__file__).parent
MAX_LINES = 650
# Modules still over MAX_LINES, each with why: remove an entry when its module is split (the
# test fails while an entry is no longer needed, so the list cannot go stale).
OVER_MAX_LINES: dict[str, str] = {}


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package] + parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` (their `else:` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """{module: the modules of `package` it imports} for every .py under `root` (the package dir)."""
    files = {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package, one level up per extra dot
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    targets.add(sub if sub in files else source)
        graph[mod] = {t for t in targets if t in files and t != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One shortest import circle ([a, b, ..., a]) if the graph has any, else None."""
    best = None
    for start in sorted(graph):
        # breadth-first from `start` back to `start`: the shortest circle through it
        prev, frontier, seen = {}, [start], {start}
        while frontier and start not in prev:
            nxt = []
            for m in frontier:
                for t in sorted(graph[m]):
                    if t == start:
                        prev.setdefault(start, m)
                    elif t not in seen:
                        seen.add(t)
                        prev[t] = m
                        nxt.append(t)
            frontier = nxt
        if start in prev:
            path, m = [start], prev[start]
            while m != start:
                path.append(m)
                m = prev[m]
            path.append(start)
            cycle = path[::-1]
            if best is None or len(cycle) < len(best):
                best = cycle
    return best


def test_no_import_circle():
    cycle = find_cycle(import_graph(SRC, "domtok"))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_finds_a_lazy_relative_circle_and_resolves_module_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")                  # X.name is a module: pkg.sub.b
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")  # lazy and relative: pkg.sub.c
    (pkg / "sub" / "c.py").write_text("from ..a import thing\nimport os\n")  # two dots: pkg.a
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("from .. import sub\n")  # the package itself: no circle through a
    assert find_cycle(import_graph(pkg, "pkg")) is None
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import T\n"
                                      "else:\n    import pkg.sub\n")  # type-only: never runs
    assert import_graph(pkg, "pkg")["pkg.sub.c"] == {"pkg.sub"} and find_cycle(import_graph(pkg, "pkg")) is None


def test_no_module_is_over_max_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    over = {name for name, n in sizes.items() if n > MAX_LINES}
    assert over - set(OVER_MAX_LINES) == set(), {name: sizes[name] for name in over - set(OVER_MAX_LINES)}
    assert set(OVER_MAX_LINES) - over == set(), "split already: remove from OVER_MAX_LINES"
