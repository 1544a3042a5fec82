"""Every bench starts as `python -m bench.NAME` from the repository's root: its help, and a
bad option refused with exit 2 before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", ["apply", "supervise", "cluster", "image"])
def test_every_bench_shows_its_help(name: str) -> None:
    done = bench(f"bench.{name}", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m bench.{name} "), done.stdout
    assert "--write FILE" in done.stdout


def test_a_bad_option_exits_2_with_the_reason() -> None:
    done = bench("bench.cluster", "--stores", "mysql")
    assert done.returncode == 2
    assert "--stores 'mysql': expected sqlite or etcd" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--drain-jobs", "1.5"],
        ["--drain-jobs", "nan"],
        ["--drain-jobs", "0.3", "--drain-interval", "0"],
        ["--drain-jobs", "0.3", "--drain-reboot", "-1"],
    ],
)
def test_a_bad_drain_option_exits_2(args: list[str]) -> None:
    done = bench("bench.cluster", *args)
    assert done.returncode == 2, done.stderr
    assert "--drain-" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_the_load_generator_ends_with_its_input() -> None:
    """`python -m bench.cluster.load` is what the cluster bench starts per generator: it
    reads its agents from stdin and answers commands until stop."""
    config = '{"heartbeat": 1, "wait": 1, "reboot": 1, "servers": [], "agents": []}\n'
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster.load"],
        cwd=ROOT,
        input=config + '{"op": "status"}\n{"op": "stop"}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    status, stopped = done.stdout.splitlines()
    assert '"agents": 0' in status
    assert stopped == '{"ok": true}'
