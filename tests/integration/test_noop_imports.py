"""A no-op `hostos apply` reads the engine over plain HTTP: no docker-py, podman-py, requests.

Importing an SDK costs about 0.15 s, a large share of the no-op budget; docker's
adapter imports docker-py only for calls that change or stream something, podman's
only to build.  Nor does it import what only other commands need: their modules, the
argparse parser of supervise's boot path, the status types when no supervisor runs here.
The subprocess runs with `-X importtime`, which names every module the process imported,
whenever it did.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostos.engine.base import Engine
from hostos.node.converge import down
from hostos.site.load import load_site
from hostos.site.resolve import resolve_role

from conftest import ROOT, converge, write

SDK_MODULES = ("docker", "podman", "requests", "urllib3")
OTHER_COMMANDS = (
    "argparse",
    "hostos.cli.cluster",
    "hostos.cli.image",
    "hostos.cli.supervise",
    "hostos.node.status",
)
SLEEPER = "image: hostos/busybox:latest\ncommand: [sleep, '3600']\nstop_timeout: 1s\n"


def imported(stderr: str) -> set[str]:
    """Top-level names of the modules that `-X importtime` reported."""
    return {name.split(".")[0] for name in modules(stderr)}


def modules(stderr: str) -> set[str]:
    """The full names of the modules that `-X importtime` reported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return names


def run_hostos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hostos", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_adapters_import_no_sdk() -> None:
    code = (
        "import sys, hostos.engine.docker, hostos.engine.podman, hostos.engine.connect;"
        f"print(sorted(m for m in {SDK_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A converged two-unit site in a namespace of its own."""
    root, namespace = tmp_path / "site", "i" + uuid.uuid4().hex[:8]
    for unit in ("a", "b"):
        write(root / f"{unit}.yaml", SLEEPER)
    write(root / "roles" / "r.yaml", "role: r\nunits: [a, b]\n")
    try:
        result = converge(
            engine, resolve_role(load_site(str(root)), "r"), str(root), namespace=namespace
        )
        assert result.failed == 0 and result.changes == 2
        yield root, namespace
    finally:
        down(engine, namespace=namespace)


@pytest.mark.integration
def test_noop_apply_imports_no_sdk(engine: Engine, site: tuple[Path, str]) -> None:
    root, namespace = site
    result = run_hostos(
        "apply", str(root), "--role", "r", "--namespace", namespace, "--engine", engine.name
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0 changes"
    top = imported(result.stderr)
    assert "hostos" in top and "json" in top  # the parse works
    assert not top & set(SDK_MODULES), sorted(top & set(SDK_MODULES))
    every = modules(result.stderr)
    assert "hostos.cli.main" in every and "hostos.node.converge" in every
    assert not every & set(OTHER_COMMANDS), sorted(every & set(OTHER_COMMANDS))


@pytest.mark.integration
def test_a_change_goes_through_the_sdk_only_on_docker(
    engine: Engine, site: tuple[Path, str]
) -> None:
    """docker's adapter creates and starts through docker-py; podman's speaks plain HTTP
    for everything but builds (a node's first containers must not wait for requests)."""
    root, namespace = site
    write(root / "a.yaml", SLEEPER + "env: {MODE: two}\n")
    result = run_hostos(
        "apply", str(root), "--role", "r", "--namespace", namespace, "--engine", engine.name
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 changes, 0 failed" in result.stdout
    top = imported(result.stderr)
    if engine.name == "docker":
        assert {"docker", "requests"} <= top
    else:
        assert not top & set(SDK_MODULES), sorted(top & set(SDK_MODULES))
