"""What the benchmarks share: their marked sections of docs/benchmarks.md, machine facts."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
