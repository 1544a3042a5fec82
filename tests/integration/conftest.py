"""Fixtures for tests on real engines: every test runs on Docker and on Podman.

Everything a test creates carries a label unique to that test (and one unique to
the session), and is removed by label with the engines' own CLIs afterwards, so
an aborted or parallel run cannot collide with this one or leave containers
behind.  Cleanup does not go through the adapters under test.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hostos.engine.base import ContainerSpec, Engine
from hostos.engine.connect import connect
from hostos.labels import OWNER, OWNER_LABEL
from hostos.node.converge import prepare
from hostos.node.execute import Outcome, execute
from hostos.node.plan import Action, Kind
from hostos.process import run
from hostos.site.resolve import RoleSpec

# Test modules in this directory `from conftest import …` and get this file, which
# pytest has loaded under that name: hand on the helpers of tests/conftest.py.
_spec = importlib.util.spec_from_file_location(
    "_hostos_tests_conftest", Path(__file__).parent.parent / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
ROOT: Path = _shared.ROOT
EXAMPLE_SITE: Path = _shared.EXAMPLE_SITE
write: Callable[[Path, str], Path] = _shared.write

ENGINES = ("docker", "podman")
BUSYBOX = "hostos/busybox:latest"  # podman finds it as localhost/hostos/busybox:latest
TEST_LABEL = "io.hostos.test"
SESSION_LABEL = "io.hostos.test-session"
SESSION = uuid.uuid4().hex[:10]

T = TypeVar("T")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A connected adapter for each engine in turn."""
    connected = connect(request.param)
    assert connected.name == request.param
    try:
        yield connected
    finally:
        connected.close()


class Lab:
    """Names, labels and specs for one test, and what to clean up after it."""

    def __init__(self, engine: Engine, id: str | None = None) -> None:
        self.engine = engine
        self.id = id or uuid.uuid4().hex[:8]
        self.prefix = f"hxt-{self.id}-"
        self.images: list[str] = []
        self.volumes: list[str] = []

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def labels(self, owned: bool = True, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        labels = {TEST_LABEL: self.id, SESSION_LABEL: SESSION, **(extra or {})}
        if owned:
            labels[OWNER_LABEL] = OWNER
        return labels

    def spec(self, suffix: str, owned: bool = True, **fields: Any) -> ContainerSpec:
        """A busybox container with no network, stopping at once on SIGTERM."""
        base: dict[str, Any] = {
            "name": self.name(suffix),
            "image": self.busybox(),
            "labels": self.labels(owned),
            "network": "none",
            "stop_timeout": 2,
            "command": ("sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"),
        }
        return ContainerSpec(**{**base, **fields})

    def busybox(self) -> str:
        image = self.engine.image_id(BUSYBOX)
        assert image is not None, f"{BUSYBOX} is missing on {self.engine.name}: run scripts/setup"
        return image

    def mine(self, observed: list[Any]) -> list[Any]:
        return [o for o in observed if o.labels.get(TEST_LABEL) == self.id]

    def cleanup(self) -> None:
        remove_labelled(self.engine.name, f"{TEST_LABEL}={self.id}")
        cli = self.engine.name
        if self.images:
            run([cli, "rmi", "--force", *self.images], check=False)
        if self.volumes:
            run([cli, "volume", "rm", "--force", *self.volumes], check=False)


@pytest.fixture
def lab(engine: Engine) -> Iterator[Lab]:
    made = Lab(engine)
    try:
        yield made
    finally:
        made.cleanup()


def remove_labelled(cli: str, label: str) -> list[str]:
    """Force-remove every container with this label; returns their names."""
    listed = run(
        [cli, "ps", "--all", "--filter", f"label={label}", "--format", "{{.ID}} {{.Names}}"]
    ).stdout.split("\n")
    rows = [line.split(maxsplit=1) for line in listed if line.strip()]
    if rows:
        run([cli, "rm", "--force", "--volumes", *(row[0] for row in rows)], check=False)
    return [row[-1] for row in rows]


@pytest.fixture(scope="session", autouse=True)
def no_containers_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the session, fail loudly if any test container survived its test."""
    yield
    if not any(item.get_closest_marker("integration") for item in request.session.items):
        return
    left = {cli: remove_labelled(cli, f"{SESSION_LABEL}={SESSION}") for cli in ENGINES}
    assert not any(left.values()), f"tests left containers behind: {json.dumps(left)}"


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.2
) -> T:
    """Poll until probe returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@dataclass(frozen=True)
class Converged:
    actions: list[Action]
    outcomes: list[Outcome]

    @property
    def changes(self) -> int:
        return sum(1 for o in self.outcomes if o.kind is not Kind.NOOP and o.ok)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)


def converge(engine: Engine, spec: RoleSpec, site_root: str, namespace: str = "") -> Converged:
    """What `hostos apply` does: prepare (fetching images), then execute the plan."""
    prepared = prepare(engine, spec, site_root, fetch=True, namespace=namespace)
    return Converged(prepared.actions, execute(engine, prepared.actions))
