"""What the benchmarks' reports share: the marked sections of docs/benchmarks.md, the commit
and machine lines, the command that reproduces a run, number formats and percentiles."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMES = "\u00d7"  # the multiplication sign, for ratios


def write_section(path: Path, name: str, section: str, intro: str = "") -> None:
    """Replace the section between `<!-- NAME:start -->` and `<!-- NAME:end -->` of path;
    append it when absent (a new file starts with intro)."""
    start, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section}\n{end_mark}"
    if not path.exists():
        path.write_text(intro + block + "\n")
        return
    text = path.read_text()
    begin, end = text.find(start), text.find(end_mark)
    if begin == -1 or end == -1 or end < begin:
        path.write_text(text.rstrip("\n") + "\n\n" + block + "\n")
        return
    path.write_text(text[:begin] + block + text[end + len(end_mark) :])


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip() or "?"


def commit_line() -> str:
    dirty = " with uncommitted changes" if git("status", "--porcelain") != "?" else ""
    return f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}"


def machine() -> str:
    """`Debian GNU/Linux 12 (bookworm), kernel 6.18…, 2 CPUs (AMD EPYC), 23.5 GiB memory`"""
    mem = "?"
    with suppress(OSError, StopIteration):
        line = next(
            x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:")
        )
        mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with suppress(OSError):
        cpu = next(
            (
                x.split(":", 1)[1].strip()
                for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")
            ),
            "?",
        )
    os_name = "?"
    with suppress(OSError):
        found = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        os_name = found.group(1) if found else "?"
    return f"{os_name}, kernel {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem} memory"


def now() -> str:
    """`2026-12-04 14:34 UTC`: when a section was measured."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command(module: str, *args: str) -> str:
    """The command line, from the repository's root, that runs bench module with args."""
    return " ".join([f".venv/bin/python -m {module}", *args])


def seconds(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f} s"


def met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank: the smallest value with at least p % of the values
    at or below it); nan when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
