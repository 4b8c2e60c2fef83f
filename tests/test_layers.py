"""The house rules on imports, checked from the source: no two dse modules import each other (directly or
round a loop), no module imports an entry point except another entry point, the trial record sits on
the ground floor (it imports nothing of dse), and the floor table of docs/design.md lists every module and
holds: no module imports one on a later floor.

Every import counts, the ones inside functions too: dse imports heavy libraries lazily, and a lazy import
is still a dependency.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dse"
DESIGN = PACKAGE.parent / "docs" / "design.md"
GROUND = ("dse.record",)  # plain data types: nothing of dse below them
# Modules with a `python -m` command that are libraries first: other modules read through them, and their
# command calls only their own functions. dse.train.imagenet loads ImageFolder trees and litdata shards for
# dse.train.datasets; `python -m dse.train.imagenet to-litdata` converts a tree. dse.storage opens every storage;
# `python -m dse.storage serve` runs the gRPC proxy in front of one.
TOOLS = {"dse.train.imagenet", "dse.storage"}


def module_files() -> dict[str, Path]:
    """{dotted module name: file} for every module under dse/ (packages by their __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _owner(name: str, modules) -> str | None:
    """The module that `name` (a module or a name inside one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, modules) -> set[str]:
    """The dse modules that module `name` imports anywhere in its file (the package `dse` itself left out)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(_owner(a.name, modules) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else _owner(base, modules))
    return {m for m in out if m and m != name and m != "dse" and m.startswith("dse.")}


def is_entry_point(path: Path) -> bool:
    """Does the file run as a command (`if __name__ == "__main__":`)?"""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


def graph() -> dict[str, set[str]]:
    """{module: the dse modules it imports}."""
    modules = module_files()
    return {name: imports(name, path, modules) for name, path in modules.items()}


def entry_points() -> set[str]:
    """The modules run with `python -m` whose job is the command (TOOLS left out)."""
    return {name for name, path in module_files().items() if is_entry_point(path)} - TOOLS


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import loops: each strongly connected group of two or more modules (Tarjan), sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser itself: imports inside functions, `from dse import x`, `import dse.x.y` and relative ones."""
    pkg = tmp_path / "dse"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text("def f():\n    from dse import b\n    import dse.sub.c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import f\nfrom . import d\nfrom dse.sub import c\n")
    modules = {"dse": 0, "dse.a": 0, "dse.b": 0, "dse.sub": 0, "dse.sub.c": 0}
    assert imports("dse.a", pkg / "a.py", modules) == {"dse.b", "dse.sub.c"}
    assert imports("dse.sub.c", pkg / "sub" / "c.py", modules) == {"dse.a", "dse.sub"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_entry_points_are_found():
    """The commands of the README are entry points; the ground floor and the run loop's helpers are not."""
    found = entry_points()
    assert {"dse.search", "dse.report", "dse.table", "dse.analyze", "dse.calibrate", "dse.inspect",
            "dse.match"} <= found
    assert not found & {"dse.study", "dse.trials.objective", "dse.results.wandb_log", "dse.point", "dse.train.imagenet"}


def test_no_import_loops():
    """No two dse modules import each other, directly or round a loop."""
    loops = cycles(graph())
    assert not loops, "import loops: " + "; ".join(" <-> ".join(group) for group in loops)


def test_no_lower_module_imports_an_entry_point():
    """Entry points sit at the top: only another entry point may import one."""
    edges, tops = graph(), entry_points()
    bad = sorted(f"{m} imports {e}" for m, targets in edges.items() if m not in tops for e in targets & tops)
    assert not bad, "; ".join(bad)


def test_tools_import_no_entry_point():
    """A library with a command of its own (TOOLS) still imports no entry point."""
    edges, tops = graph(), entry_points()
    assert all(not edges[t] & tops for t in TOOLS)


@pytest.mark.parametrize("module", GROUND)
def test_ground_floor_imports_nothing_of_dse(module):
    """The plain data types (the trial record) import nothing of dse."""
    modules = module_files()
    assert module in modules, f"{module} is missing"
    assert imports(module, modules[module], modules) == set()


def floor_table(text: str) -> list[list[str]]:
    """The module entries of each row of the design doc's floor table ("## Who owns what"), in floor order."""
    section = text.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")]
    return [re.findall(r"`(dse(?:\.\w+)*(?:\.\*)?)`", cells[2]) for cells in rows[2:]]


def floors(table: list[list[str]], modules) -> tuple[dict[str, int], list[str], list[str]]:
    """({module: floor index}, modules the table leaves out, entries that name no module)."""
    exact = {name: i for i, row in enumerate(table) for name in row if not name.endswith(".*")}
    wild = {name[:-2]: i for i, row in enumerate(table) for name in row if name.endswith(".*")}
    out, missing = {}, []
    for m in modules:
        package = m.rpartition(".")[0]
        if m in exact:
            out[m] = exact[m]
        elif package in wild:
            out[m] = wild[package]
        else:
            missing.append(m)
    stale = [e for e in exact if e not in modules] + [w + ".*" for w in wild if w not in modules]
    return out, sorted(missing), sorted(stale)


def test_the_floor_checker_reads_a_table():
    """The table parser and the floor lookup on a small made-up table (a package's `.*` covers its modules)."""
    text = ("## Who owns what\n\n| floor | modules | what |\n|---|---|---|\n| 1 | `dse.a`, `dse.p.*` | x `y` |\n"
            "| 2 | `dse.b` (the b), `dse.gone` | z |\n\n## Next\n| 3 | `dse.c` | |\n")
    table = floor_table(text)
    assert table == [["dse.a", "dse.p.*"], ["dse.b", "dse.gone"]]
    found, missing, stale = floors(table, {"dse.a", "dse.p", "dse.p.q", "dse.b", "dse.c"})
    assert found == {"dse.a": 0, "dse.p.q": 0, "dse.b": 1}
    assert missing == ["dse.c", "dse.p"] and stale == ["dse.gone"]


def test_design_doc_floor_table_lists_every_module():
    """Every module under dse/ is in docs/design.md's floor table, and every entry there is a module."""
    found, missing, stale = floors(floor_table(DESIGN.read_text()), module_files())
    assert not missing, "modules missing from docs/design.md's floor table: " + ", ".join(missing)
    assert not stale, "entries of docs/design.md's floor table that are no module: " + ", ".join(stale)


def test_no_module_imports_a_later_floor():
    """An import goes to the module's own floor or an earlier one (the order of docs/design.md's table)."""
    found = floors(floor_table(DESIGN.read_text()), module_files())[0]
    bad = sorted(f"{m} (floor {found[m] + 1}) imports {t} (floor {found[t] + 1})"
                 for m, targets in graph().items() if m in found for t in targets if t in found and found[t] > found[m])
    assert not bad, "upward imports: " + "; ".join(bad)
