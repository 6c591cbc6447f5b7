"""The import graph of the project's own packages, read from the source (every import
statement, those inside functions and under ``TYPE_CHECKING`` included): no module imports
one that imports it back, and the layers of the README's architecture hold."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("onboard", "firmware_bridge", "ground", "calibration", "export", "hil")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import statement in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    known = _modules()
    return {n: dict(_imports(p, n, known)) for n, p in known.items()}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_init_edge(a: str, b: str) -> bool:
    """``import pkg.mod`` runs ``pkg/__init__``; a package's ``__init__`` re-exporting from its
    own modules is the same package, not a cycle between layers."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    pruned = {a: {b: ln for b, ln in e.items() if not _package_init_edge(a, b)} for a, e in graph.items()}
    assert _cycles(pruned) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_layers() -> None:
    """firmware_bridge imports no other package of ours; onboard imports no ground package
    except through the command line's hand-off (``onboard.cli``, inside the subcommand)."""
    graph = _graph()
    bad = []
    for a, edges in graph.items():
        top = a.split(".")[0]
        for b, line in edges.items():
            other = b.split(".")[0]
            if top == "firmware_bridge" and other != "firmware_bridge":
                bad.append(f"{a}:{line} imports {b}")
            if top == "onboard" and other not in ("onboard", "firmware_bridge") and a != "onboard.cli":
                bad.append(f"{a}:{line} imports {b}")
    assert bad == []


#: The modules that are command lines: only they may use click (library code raises the
#: project's errors, which the CLI says in one line, and logs instead of echoing). The
#: scripts in bench/ are command lines too, outside the packages (see below).
COMMAND_LINES = {"onboard.cli", "onboard.downlink", "onboard.doctor", "onboard.runtime.run", "onboard.info", "onboard.bench", "ground.cli",
                 "calibration.cli", "export.cli", "export.build", "hil.cli", "firmware_bridge.linkemu", "firmware_bridge.keytool",
                 "firmware_bridge.cfdp.__main__"}


def _imports_module(path: Path, module: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == module for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == module:
            return True
    return False


def test_only_command_lines_use_click() -> None:
    users = {name for name, path in _modules().items() if _imports_module(path, "click")}
    assert users - COMMAND_LINES == set()


def test_one_command_line_framework() -> None:
    """Every command line, the benchmark scripts in ``bench/`` included (command lines too,
    outside the packages), is written with click: none parses its arguments with argparse."""
    benches = sorted((ROOT / "bench").glob("*.py"))
    assert benches
    files = [*_modules().values(), *benches]
    assert [str(p.relative_to(ROOT)) for p in files if _imports_module(p, "argparse")] == []
    assert all(_imports_module(p, "click") for p in benches)

