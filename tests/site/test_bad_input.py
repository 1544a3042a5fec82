"""The bad-input corpus: every site in tests/data/bad/ fails `hostos validate` as expected.

Each case is a directory `tests/data/bad/<NN-short-name>/` holding a tiny site with one
mistake (a few hold several, to show that every problem is reported at once) and a file
`expected` with the problem lines the command prints on stderr.  The command runs inside
the case directory as `python -m hostos validate .`, so the paths in `expected` are
relative to the case directory and start with `./`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hostos.site.source import MAX_FILE_BYTES

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if p.is_dir())
MIN_CASES = 45


def validate(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `hostos validate .` in cwd.  (How fast is measured by benchmarks, not asserted
    here: a bound on wall time fails on a busy machine for no fault of the code.)"""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "hostos", "validate", "."],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def assert_problems(result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    count = len(expected)
    assert lines[-1] == f"{count} problem{'s' if count != 1 else ''}", output
    assert lines[:-1] == expected


@pytest.mark.parametrize("case", CASES)
def test_bad_site(case: str) -> None:
    directory = BAD / case
    expected_file = directory / "expected"
    assert expected_file.is_file(), f"{case} has no 'expected' file"
    expected = expected_file.read_text(encoding="utf-8").splitlines()
    assert expected, f"{case}: 'expected' is empty"
    assert_problems(validate(directory), expected)


def test_oversized_file(tmp_path: Path) -> None:
    """A file over 1 MiB is refused before parsing (made here, not kept in the corpus)."""
    unit = tmp_path / "web.yaml"
    padding = "# " + "x" * 97 + "\n"
    unit.write_text("image: docker.io/library/nginx:1.27\n" + padding * (MAX_FILE_BYTES // 100 + 1))
    size = unit.stat().st_size
    assert size > MAX_FILE_BYTES
    result = validate(tmp_path)
    assert_problems(
        result,
        [
            f"./web.yaml: file is {size} bytes, larger than the {MAX_FILE_BYTES} bytes hostos "
            "reads (a unit, role or inventory file is a few kilobytes)"
        ],
    )


def test_corpus_size() -> None:
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} bad-input cases"


def test_case_names() -> None:
    """Cases are named <NN-short-name>, each number used once."""
    for name in CASES:
        assert re.fullmatch(r"\d{2,}-[a-z0-9]+(-[a-z0-9]+)*", name), name
    numbers = [name.split("-", 1)[0] for name in CASES]
    assert len(set(numbers)) == len(numbers)
