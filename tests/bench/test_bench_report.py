"""bench.report: percentiles, the reproduce command, the marked sections of a document."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report import command, percentile, seconds, write_section


@pytest.mark.parametrize(
    ("values", "p", "want"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # nearest rank: the 2nd of 4, not the mean 2.5
        ([float(x) for x in range(1, 21)], 95, 19.0),  # 95 % of 20 = the 19th
        ([float(x) for x in range(1, 21)], 99, 20.0),
        ([3.0, 1.0, 2.0], 100, 3.0),  # unsorted input
        ([1.0, 2.0], 0, 1.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], p: float, want: float) -> None:
    assert percentile(values, p) == want


def test_percentile_of_nothing_is_nan_and_shown_as_na() -> None:
    assert math.isnan(percentile([], 99))
    assert seconds(percentile([], 99)) == "n/a"
    assert seconds(0.0123) == "0.012 s"


def test_command_runs_the_bench_as_a_module_from_the_root() -> None:
    assert command("bench.cluster", "--stores", "sqlite:40") == (
        ".venv/bin/python -m bench.cluster --stores sqlite:40"
    )


def test_write_section_creates_replaces_and_appends(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section(doc, "a", "first", intro="# Benchmarks\n\n")
    assert doc.read_text() == "# Benchmarks\n\n<!-- a:start -->\nfirst\n<!-- a:end -->\n"
    write_section(doc, "b", "other")
    write_section(doc, "a", "second")
    text = doc.read_text()
    assert "first" not in text
    assert text.index("second") < text.index("other")  # replaced in place, b appended after
    assert text.count("<!-- a:start -->") == 1
