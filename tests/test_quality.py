"""mypy --strict over the package, ruff over the package, the tests and the benchmarks,
the import contracts and no import cycle, from the suite."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


def test_mypy_strict() -> None:
    result = _run(sys.executable, "-m", "mypy", "--strict", "hostos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    beside = Path(sys.executable).parent / "ruff"  # the venv's, when PATH does not have it
    ruff = str(beside) if beside.is_file() else shutil.which("ruff") or "ruff"
    paths = [p for p in ("hostos", "tests", "bench") if (ROOT / p).is_dir()]
    result = _run(ruff, "check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.is_file() else shutil.which("ruff") or "ruff"
    paths = [p for p in ("hostos", "tests", "bench") if (ROOT / p).is_dir()]
    result = _run(ruff, "format", "--check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts() -> None:
    """The house plan in pyproject.toml's [tool.importlinter] holds."""
    beside = Path(sys.executable).parent / "lint-imports"
    result = _run(str(beside) if beside.is_file() else "lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def import_cycles(package: str) -> list[list[str]]:
    """Groups of modules that import each other, directly or in a ring (Tarjan's strongly
    connected components), counting imports inside functions and under TYPE_CHECKING."""
    import grimp

    graph = grimp.build_graph(package, exclude_type_checking_imports=False)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    assert import_cycles("hostos") == []
    assert import_cycles("bench") == []


def test_benches_import_as_a_package() -> None:
    """bench/ imports its helpers as the package it is (`python -m bench.NAME`): no module
    puts a folder on sys.path, so none reaches into tests/ or imports a file by its path."""
    edits = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert edits == []
