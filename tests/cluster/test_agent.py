"""The node agent: its decisions as a table, what it reads of the machine and the supervisor,
the spec it hands over, and one agent in this process against a real `hostos serve`."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_fleet import wait_for
from server_fixtures import ADMIN_TOKEN, Server, serving

from hostos.backoff import Backoff
from hostos.cluster import agent
from hostos.cluster.agent import Agent, Facts, Step, decide
from hostos.errors import SiteError
from hostos.node.events import SpecArrived
from hostos.node.status import MountStatus, NodeStatus, UnitStatus
from hostos.site.load import load_site
from hostos.site.resolve import RoleSpec, resolve_role, spec_document, spec_from_document

from conftest import EXAMPLE_SITE

# -- decide ----------------------------------------------------------------------------------

DECISIONS = [
    # booted, assigned, healthy, steady_sent, rebooting → step
    ("img-1", None, True, False, False, Step.STEADY),  # first boot, nothing assigned
    ("img-1", "img-1", True, False, False, Step.STEADY),
    ("img-1", "img-1", False, False, False, Step.NOTHING),  # units not healthy yet
    ("img-1", "img-1", True, True, False, Step.NOTHING),  # steady once per boot
    ("img-1", "img-2", True, True, False, Step.REBOOT),
    ("img-1", "img-2", True, False, False, Step.REBOOT),  # never steady before a reboot
    ("img-2", "img-1", False, False, False, Step.REBOOT),  # a rollback reaches a sick node
    ("img-1", "img-2", True, True, True, Step.NOTHING),  # the reboot command ran already
    (None, "img-2", True, False, False, Step.STEADY),  # booted image unknown: no reboot
    (None, None, False, False, False, Step.NOTHING),
]


@pytest.mark.parametrize(
    ("booted", "assigned", "healthy", "steady", "rebooting", "step"), DECISIONS
)
def test_decide(
    booted: str | None,
    assigned: str | None,
    healthy: bool,
    steady: bool,
    rebooting: bool,
    step: Step,
) -> None:
    decision = decide(Facts(booted, assigned, healthy, steady, rebooting))
    assert decision.step is step, decision
    assert decision.reason


def _snapshot(
    *units: tuple[str, str, str | None], generation: int = 1, reconciled: int = 1
) -> NodeStatus:
    return NodeStatus(
        generation=generation,
        reconciled=reconciled,
        units=tuple(UnitStatus(n, state=s, health=h) for n, s, h in units),
        mounts=(MountStatus("apps", "mounted", source="/apps"),),
    )


HEALTH = [
    (
        _snapshot(("a", "running", "healthy"), ("b", "running", None)),
        {"a": "healthy", "b": "running"},
        True,
    ),
    (_snapshot(("a", "running", "unhealthy")), {"a": "unhealthy"}, False),
    (_snapshot(("a", "running", "starting")), {"a": "starting"}, False),
    (_snapshot(("a", "absent", None)), {"a": "absent"}, False),
    (_snapshot(("a", "exited", None)), {"a": "exited"}, False),
    (_snapshot(), {}, True),  # a role without units is healthy once applied
    (_snapshot(generation=0, reconciled=0), {}, False),  # no spec yet
    (_snapshot(("a", "running", None), generation=2, reconciled=1), {"a": "running"}, False),
]


@pytest.mark.parametrize(("snapshot", "units", "healthy"), HEALTH)
def test_unit_health(snapshot: NodeStatus, units: dict[str, str], healthy: bool) -> None:
    assert agent.unit_health(snapshot) == (units, {"apps": "mounted"}, healthy)
    # what the agent reads is the status as the status API serves it, too
    assert agent.unit_health(NodeStatus.from_json(snapshot.to_json())) == (
        units,
        {"apps": "mounted"},
        healthy,
    )


def test_the_token_file_is_read_and_never_shown(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("hn1.cn001.secret\n")
    assert agent.read_token(str(token)) == "hn1.cn001.secret"
    token.write_text("two words\n")
    with pytest.raises(ValueError, match="one token") as refused:
        agent.read_token(str(token))
    assert "words" not in str(refused.value)
    with pytest.raises(ValueError, match="missing"):
        agent.read_token(str(tmp_path / "missing"))
    settings = agent.Settings("http://127.0.0.1:1", "cn001", "hn1.cn001.secret")
    assert "secret" not in repr(settings)


# -- the spec handed to the supervisor ---------------------------------------------------------


@pytest.mark.parametrize("role", ["compute", "demo", "login"])
def test_a_spec_document_resolves_back_to_the_spec(role: str) -> None:
    spec = resolve_role(load_site(str(EXAMPLE_SITE)), role)
    back = spec_from_document(spec_document(spec))
    assert back.units == spec.units  # the same units, order, mounts and hashes
    assert back.role.mounts == spec.role.mounts and back.role.image == spec.role.image


BAD_SPECS = [
    (None, "spec"),
    ({"role": "r", "units": "web"}, "spec"),
    ({"role": "r", "units": [{"name": "web"}]}, "spec.units[0]"),  # no image or build
    ({"role": "R!", "units": []}, "spec.role"),
    (
        {"role": "r", "units": [{"name": "web", "image": "busybox", "requires": ["db"]}]},
        "spec.units",
    ),
]


@pytest.mark.parametrize(("document", "key"), BAD_SPECS)
def test_a_bad_spec_document_is_a_site_error(document: Any, key: str) -> None:
    with pytest.raises(SiteError) as refused:
        spec_from_document(document, "server generation 3")
    problem = refused.value.problems[0]
    assert problem.where.file == "server generation 3" and problem.key.startswith(key), problem


# -- one agent, in process, against a real server ----------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("agent")) as running:
        yield running


FAST = agent.Timing(heartbeat=0.2, wait=5, retry=Backoff(0.1, max=0.5, jitter=0.1))
UNIT = {"name": "web", "image": "busybox", "stop_timeout": 3.0}


def _publish(server: Server, node: str, units: list[dict[str, Any]]) -> int:
    site = {
        "roles": {"r": {"role": "r", "image": "img-1", "mounts": [], "units": units}},
        "nodes": {node: {"role": "r", "mac": "52:54:00:aa:00:01"}},
    }
    with server.client() as admin:
        reply = admin.post("/v1/site", json=site)
        assert reply.status_code == 200, reply.text
        for image in ("img-1", "img-2"):
            assert admin.post(f"/v1/images/{image}").status_code == 200
        return int(reply.json()["generation"])


def _token(server: Server, node: str) -> str:
    with server.client() as admin:
        return str(admin.post(f"/v1/tokens/nodes/{node}").json()["token"])


class Node:
    """An agent with a supervisor's snapshot that says healthy once a spec came."""

    def __init__(self, server: Server, node: str, token: str, booted: str = "img-1") -> None:
        self.specs: list[RoleSpec | SiteError] = []
        self.reboots: list[str] = []
        self.lock = threading.Lock()
        settings = agent.Settings(
            server.url, node, token, booted, boot_id="boot-1", reboot_command="true", timing=FAST
        )
        self.agent = Agent(settings, self.snapshot, self.specs.append, self.reboot)

    def snapshot(self) -> NodeStatus:
        good = [s for s in self.specs if isinstance(s, RoleSpec)]
        units = tuple(UnitStatus(u.name, state="running") for u in good[-1].units) if good else ()
        return NodeStatus(generation=len(good), reconciled=len(good), units=units)

    def reboot(self, command: str) -> int:
        self.reboots.append(command)
        return 0


@pytest.mark.integration
def test_an_agent_reports_takes_its_spec_and_reboots_for_an_assignment(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hostos.agent")
    generation = _publish(server, "ag1", [UNIT])
    token = _token(server, "ag1")
    node = Node(server, "ag1", token)
    node.agent.start()
    try:
        wait_for(lambda: node.specs, 10)
        spec = node.specs[0]
        assert isinstance(spec, RoleSpec) and [u.name for u in spec.units] == ["web"]
        with server.client() as admin:
            record = wait_for(lambda: _steady(admin.get("/v1/nodes/ag1").json()), 10)
        assert isinstance(record, dict)
        assert record["booted_image"] == "img-1" and record["units"] == {"web": "running"}
        assert record["generation"] == generation
        # a new generation reaches the supervisor through the long-poll
        _publish(server, "ag1", [UNIT, {**UNIT, "name": "db"}])
        wait_for(lambda: len(node.specs) == 2, 10)
        assert node.reboots == []
        with server.client() as admin:
            assert admin.put("/v1/nodes/ag1/assignment", json={"image": "img-2"}).status_code == 200
            wait_for(lambda: node.reboots, 10)
            slots = admin.get("/v1/nodes/ag1").json()
        assert node.reboots == ["true"]  # once: the boot goes on, the reboot is under way
        assert slots["assigned_image"] == "img-2"
    finally:
        node.agent.stop()
    text = caplog.text
    assert "rebooting" in text and "steady-state" in text
    assert token not in text and token.split(".")[-1] not in text


def _steady(record: dict[str, Any]) -> dict[str, Any] | None:
    return record if record.get("steady_boot_id") == "boot-1" else None


@pytest.mark.integration
def test_an_agent_beats_at_the_pace_its_server_asks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One node record at 2 heartbeats a second: the server asks 0.5 s, longer than the
    agent's own 0.2 s, and the agent waits that long between heartbeats."""
    caplog.set_level(logging.INFO, "hostos.agent")
    with serving(tmp_path, options=["--heartbeat-rate", "2"]) as server:
        _publish(server, "ag5", [UNIT])
        node = Node(server, "ag5", _token(server, "ag5"))
        beats: list[float] = []
        beat = node.agent.beat
        node.agent.beat = lambda: (beats.append(time.monotonic()), beat())[1]  # type: ignore[method-assign]
        node.agent.start()
        try:
            wait_for(lambda: len(beats) >= 6, 10)
        finally:
            node.agent.stop()
        with server.client() as admin:
            record = admin.get("/v1/nodes/ag5").json()
    assert record["heartbeat_seconds"] == 0.5 and node.agent.interval() == 0.5
    gaps = [b - a for a, b in itertools.pairwise(beats[2:])]
    assert gaps and min(gaps) >= 0.45, gaps
    assert "heartbeat-paced seconds=0.5" in caplog.text


@pytest.mark.integration
def test_a_bad_spec_is_handed_over_as_its_problems(server: Server) -> None:
    _publish(server, "ag2", [{"name": "web"}])  # no image: the server keeps specs as given
    node = Node(server, "ag2", _token(server, "ag2"))
    node.agent.start()
    try:
        wait_for(lambda: node.specs, 10)
    finally:
        node.agent.stop()
    assert isinstance(node.specs[0], SiteError)
    assert "spec.units[0]" in str(node.specs[0])


@pytest.mark.integration
def test_another_nodes_token_is_refused_and_said_once(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    _publish(server, "ag3", [UNIT])
    other = _token(server, "ag4")
    node = Node(server, "ag3", other)
    node.agent.start()
    try:
        wait_for(lambda: "forbidden" in caplog.text, 10)
    finally:
        node.agent.stop()
    assert node.specs == []
    assert caplog.text.count("agent-heartbeat") == 1  # not at every retry
    assert other not in caplog.text and ADMIN_TOKEN not in caplog.text


def test_the_supervisor_takes_a_served_spec_and_keeps_it_over_a_bad_one() -> None:
    from hostos.cli.supervise import _feed
    from hostos.node.supervisor import Settings, Supervisor

    settings = Settings(
        "units", node="cn001", feed=_feed(agent.Settings("http://127.0.0.1:1", "cn001", "t"))
    )
    supervisor = Supervisor(settings)
    spec = resolve_role(load_site(str(EXAMPLE_SITE)), "demo")
    supervisor._handle(SpecArrived(spec_from_document(spec_document(spec))))
    assert supervisor.dirty and supervisor.spec is not None
    assert [u.name for u in supervisor.spec.units] == [u.name for u in spec.units]
    assert supervisor.spec.node == "cn001"  # a role's spec, on this node: HOSTOS_NODE is set
    assert supervisor.snapshot().generation == 1 and supervisor.snapshot().reconciled == 0
    supervisor.dirty = False
    with pytest.raises(SiteError) as bad:
        spec_from_document({"role": "demo", "units": [{"name": "web"}]}, "server generation 2")
    supervisor._handle(SpecArrived(bad.value))
    assert not supervisor.dirty and supervisor.generation == 1  # the last good spec stays
    assert "server generation 2" in supervisor.snapshot().site_error
    supervisor._handle(SpecArrived(spec_from_document(spec_document(spec))))
    assert not supervisor.dirty and supervisor.generation == 1  # the same spec again: no news
    assert supervisor.snapshot().site_error == ""
