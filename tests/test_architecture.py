"""The package's layers as docs/architecture.md draws them: every import goes down or sideways, never up a
floor, no two modules import each other (directly or around a circle), and no file is over 600 lines.

The layer table is read from docs/architecture.md itself (the rows between its ``layers:begin`` and
``layers:end`` markers), so the document and the code cannot drift apart: a module that the table does
not place, or an import that climbs, fails here with the file and line.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedml_heterofl"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 600


def layer_table() -> Dict[str, int]:
    """``{module prefix: floor}`` from the document's table (floor 1 is the ground)."""
    text = DOC.read_text()
    block = text[text.index("<!-- layers:begin -->"):text.index("<!-- layers:end -->")]
    table: Dict[str, int] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for prefix in re.findall(r"`([\w.]+)`", cells[1]):
                table[prefix] = int(cells[0])
    return table


def modules() -> Dict[str, Path]:
    """``{dotted name: file}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def floor_of(module: str, table: Dict[str, int]) -> int:
    """The floor of the longest prefix of ``module`` in ``table``."""
    best = max((p for p in table if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module}: no row of docs/architecture.md's layer table places it"
    return table[best]


def imports(name: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """``(imported module of the package, line)`` for every import in ``path`` (function bodies and
    ``TYPE_CHECKING`` blocks included); ``from a import b`` counts as ``a.b`` where that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.append((f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node.lineno))
    return [(m, line) for m, line in found if m in known and m != name]


def graph() -> Dict[str, List[Tuple[str, int]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_floor_and_no_import_climbs():
    table, climbs = layer_table(), []
    assert table, "docs/architecture.md has no layer table between its layers:begin/end markers"
    for name, edges in graph().items():
        for target, line in edges:
            if floor_of(target, table) > floor_of(name, table):
                climbs.append(f"{modules()[name].relative_to(ROOT)}:{line} imports {target} "
                              f"(floor {floor_of(name, table)} -> {floor_of(target, table)})")
    assert not climbs, "imports that run up a floor:\n" + "\n".join(climbs)


def circles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle():
    found = circles({name: {t for t, _ in targets} for name, targets in graph().items()})
    assert not found, f"modules that import each other: {found}"


def test_no_package_file_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_checks_catch_a_climb_and_a_circle(tmp_path):
    """The import reader sees absolute, relative, aliased and function-level imports; a planted climb
    and a planted circle would be found."""
    pkg = tmp_path / "fedml_heterofl"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from fedml_heterofl import top as t\n")
    (pkg / "low" / "b.py").write_text("from . import a\n")
    (pkg / "top.py").write_text("import fedml_heterofl.low.b\n")
    known = {"fedml_heterofl", "fedml_heterofl.low", "fedml_heterofl.low.a", "fedml_heterofl.low.b",
             "fedml_heterofl.top"}
    assert imports("fedml_heterofl.low.a", pkg / "low" / "a.py", known) == [("fedml_heterofl.top", 2)]
    assert imports("fedml_heterofl.low.b", pkg / "low" / "b.py", known) == [("fedml_heterofl.low.a", 1)]
    assert imports("fedml_heterofl.top", pkg / "top.py", known) == [("fedml_heterofl.low.b", 1)]
    table = {"fedml_heterofl.low": 1, "fedml_heterofl.top": 2}
    assert floor_of("fedml_heterofl.top", table) > floor_of("fedml_heterofl.low.a", table)  # a climb
    edges = {m: {t for t, _ in imports(m, pkg / Path(*m.split(".")[1:]).with_suffix(".py"), known)}
             for m in ("fedml_heterofl.low.a", "fedml_heterofl.low.b", "fedml_heterofl.top")}
    assert circles(edges) == [["fedml_heterofl.low.a", "fedml_heterofl.low.b", "fedml_heterofl.top"]]
    assert circles({"x": {"y"}, "y": set()}) == []
