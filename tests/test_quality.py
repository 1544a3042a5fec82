"""mypy --strict and ruff over the package and the tests, from the suite."""

from __future__ import annotations

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
