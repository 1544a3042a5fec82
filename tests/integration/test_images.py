"""Where images come from: a real registry on loopback, an archive, a build context."""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostos.engine.base import Engine
from hostos.node.converge import down
from hostos.site.load import load_site
from hostos.site.resolve import resolve_role

from conftest import ROOT, converge, write

pytestmark = pytest.mark.integration

REGISTRY = "127.0.0.1:5959"  # scripts/setup marks it insecure for podman


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8) serving from a temp dir."""
    root = tmp_path_factory.mktemp("registry")
    config = write(
        root / "config.yml",
        f"""\
version: 0.1
storage:
  filesystem: {{rootdirectory: {root / "data"}}}
  delete: {{enabled: true}}
http: {{addr: "{REGISTRY}"}}
""",
    )
    log = open(root / "registry.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for(f"http://{REGISTRY}/v2/", proc)
        yield REGISTRY
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("docker-registry exited")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _push(registry: str, tag: str) -> str:
    """Push the base image under a fresh name; return the reference."""
    ref = f"{registry}/hostos-test/busybox:{tag}"
    subprocess.run(["docker", "tag", "hostos/busybox:latest", ref], check=True)
    subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
    return ref


def _apply(engine: Engine, root: Path, unit: str, namespace: str):  # type: ignore[no-untyped-def]
    write(root / "u.yaml", unit)
    write(root / "roles" / "r.yaml", "role: r\nunits: [u]\n")
    spec = resolve_role(load_site(str(root)), "r")
    return converge(engine, spec, str(root), namespace=namespace)


@pytest.fixture
def namespace(engine: Engine) -> Iterator[str]:
    name = "i" + uuid.uuid4().hex[:8]
    yield name
    down(engine, namespace=name)


def test_pull_from_a_loopback_registry(
    engine: Engine, registry: str, tmp_path: Path, namespace: str
) -> None:
    ref = _push(registry, uuid.uuid4().hex[:8])
    assert engine.image_id(ref) is None
    result = _apply(
        engine, tmp_path, f"image: {ref}\ncommand: [sleep, '60']\nstop_timeout: 1s\n", namespace
    )
    assert result.failed == 0, result.outcomes
    assert engine.image_id(ref) is not None
    again = _apply(
        engine, tmp_path, f"image: {ref}\ncommand: [sleep, '60']\nstop_timeout: 1s\n", namespace
    )
    assert again.changes == 0


def test_missing_tag_in_the_registry_fails_that_unit(
    engine: Engine, registry: str, tmp_path: Path, namespace: str
) -> None:
    ref = f"{registry}/hostos-test/never-pushed:1"
    result = _apply(engine, tmp_path, f"image: {ref}\n", namespace)
    [outcome] = result.outcomes
    assert not outcome.ok and ref in outcome.message


def test_load_from_an_archive_once(engine: Engine, tmp_path: Path, namespace: str) -> None:
    archive = tmp_path / "busybox.tar"
    subprocess.run(["docker", "save", "-o", str(archive), "hostos/busybox:latest"], check=True)
    unit = f"image: docker-archive:{archive}\ncommand: [sleep, '60']\nstop_timeout: 1s\n"
    first = _apply(engine, tmp_path / "site", unit, namespace)
    assert first.failed == 0, first.outcomes
    started = time.monotonic()
    second = _apply(engine, tmp_path / "site", unit, namespace)
    assert second.changes == 0
    assert time.monotonic() - started < 2  # found by its config digest, not loaded again


def test_build_context_is_built_when_missing(
    engine: Engine, tmp_path: Path, namespace: str
) -> None:
    tag = f"localhost/hostos-test/web:{uuid.uuid4().hex[:8]}"
    unit = f"image: {tag}\nbuild: {ROOT / 'containers' / 'web'}\nstop_timeout: 2s\n"
    try:
        result = _apply(engine, tmp_path, unit, namespace)
        assert result.failed == 0, result.outcomes
        assert engine.image_id(tag) is not None
    finally:
        down(engine, namespace=namespace)
        subprocess.run([engine.name, "rmi", "-f", tag], capture_output=True)
