"""Rollouts end to end: a real `hostos serve`, its controller, and simulated nodes over HTTP.

The nodes (fake_fleet.py) heartbeat, take FleetLock slots and "reboot" onto the image the
boot endpoint would hand them; the tests start and steer rollouts through the API and check
what an observer of the fleet sees: how many nodes were out at once, in which order they went,
where each ended.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_fleet import setup_fleet, wait_for
from server_fixtures import Server, start_server, stop_server

pytestmark = pytest.mark.integration

IDS = [f"n{i}" for i in range(1, 9)]


def serve(tmp: Path, name: str, store: str) -> Server:
    """A `hostos serve` with its images and log under tmp/name."""
    (tmp / name).mkdir()
    return start_server(tmp / name, store)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = serve(tmp_path, "a", f"sqlite://{tmp_path / 'cluster.db'}")
    try:
        yield running
    finally:
        stop_server(running)


def start(server: Server, **spec: Any) -> dict[str, Any]:
    with server.client() as admin:
        reply = admin.post("/v1/rollouts", json={"role": "compute", "image": "img-2", **spec})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def status(server: Server) -> dict[str, Any]:
    with server.client() as admin:
        reply = admin.get("/v1/rollouts/compute")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def state_is(server: Server, *wanted: str) -> dict[str, Any] | None:
    try:
        found = status(server)
    except httpx.HTTPError:
        return None
    return found if found["state"] in wanted else None


def assignments(server: Server) -> dict[str, str | None]:
    with server.client() as admin:
        return {n["id"]: n["assigned_image"] for n in admin.get("/v1/nodes").json()}


def granted(found: dict[str, Any]) -> list[str]:
    """The nodes granted, in order, as the rollout's log tells."""
    return [e["node"] for e in found["log"] if e["kind"] == "grant"]


def node_states(found: dict[str, Any]) -> dict[str, str]:
    return {node: p["state"] for node, p in found["nodes"].items()}


def test_eight_nodes_two_at_a_time(server: Server) -> None:
    fleet = setup_fleet(server, 8)
    with fleet.running():
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        started = start(server, max_unavailable=2, health_timeout=60)
        assert started["state"] == "running" and started["max_unavailable"] == 2
        done = wait_for(lambda: state_is(server, "done", "paused"), 90)
    assert isinstance(done, dict) and done["state"] == "done", done
    assert fleet.max_out <= 2
    assert sorted(fleet.order) == IDS  # each node rebooted once
    assert granted(done) == IDS  # the grants went in node order
    assert set(node_states(done).values()) == {"done"}
    assert {n.booted for n in fleet.nodes.values()} == {"img-2"}
    assert set(assignments(server).values()) == {"img-2"}
    kinds = [e["kind"] for e in done["log"]]
    assert kinds.count("grant") == 8 and kinds[-1] == "complete"
    # the FleetLock limit follows the rollout only while it is active: back to 1 now
    with server.client() as admin:
        history = admin.get("/v1/rollouts").json()
    assert [r["id"] for r in history] == [started["id"]]


HOOKS = {
    "drain": 'echo "$1" >> "$STATE/drained"\n',
    "jobs": 'if [ -e "$STATE/job-$1" ]; then echo 1; exit 1; fi\n',
    "resume": 'echo "$1" >> "$STATE/resumed"\n',
}


def test_a_generic_drain_waits_for_the_busy_nodes_job(tmp_path: Path) -> None:
    """The role's generic drain, run by a real server from its hooks directory: the idle
    nodes reboot first, the busy one only once its job is over, every node is resumed."""
    hooks, state = tmp_path / "hooks", tmp_path / "state"
    hooks.mkdir()
    state.mkdir()
    for name, body in HOOKS.items():
        (hooks / name).write_text(f"#!/bin/sh\nSTATE={state}\n{body}")
        (hooks / name).chmod(0o755)
    (state / "job-n1").write_text("running\n")
    (tmp_path / "a").mkdir()
    drain = {"kind": "commands", "command": ["drain", "{node}"], "check": ["jobs", "{node}"]}
    drain["resume"] = ["resume", "{node}"]
    running = start_server(
        tmp_path / "a",
        f"sqlite://{tmp_path / 'cluster.db'}",
        options=["--drain-hooks", str(hooks), "--drain-interval", "0.2"],
    )
    try:
        fleet = setup_fleet(running, 4, rollout={"drain": drain, "max_unavailable": 1})
        with fleet.running():
            wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
            assert start(running, health_timeout=60)["spec"]["drain"]["kind"] == "commands"
            busy = wait_for(lambda: _only_busy_left(running), 60)
            assert fleet.order == ["n2", "n3", "n4"], fleet.order  # idle first; n1 waits
            assert isinstance(busy, dict) and busy["nodes"]["n1"]["jobs"] == 1
            (state / "job-n1").unlink()  # the job ends
            done = wait_for(lambda: state_is(running, "done", "paused"), 60)
    finally:
        stop_server(running)
    assert isinstance(done, dict) and done["state"] == "done", done
    assert fleet.order == ["n2", "n3", "n4", "n1"]
    assert sorted((state / "drained").read_text().split()) == ["n1", "n2", "n3", "n4"]
    assert sorted((state / "resumed").read_text().split()) == ["n1", "n2", "n3", "n4"]
    kinds = [(e["kind"], e["node"]) for e in done["log"] if e["node"] == "n1"]
    assert kinds.index(("drain", "n1")) < kinds.index(("grant", "n1"))
    assert kinds.index(("grant", "n1")) < kinds.index(("resume", "n1"))


def _only_busy_left(server: Server) -> dict[str, Any] | None:
    found = status(server)
    states = node_states(found)
    idle_done = all(states[n] == "done" for n in ("n2", "n3", "n4"))
    return found if idle_done and states["n1"] == "draining" else None


def test_a_failing_canary_pauses_and_nothing_else_is_touched(server: Server) -> None:
    fleet = setup_fleet(server, 4, n1={"bad": frozenset({"img-2"})})
    with fleet.running():
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        started = start(server, max_unavailable=2, canary=1, health_timeout=3)
        assert started["canaries"] == ["n1"]
        paused = wait_for(lambda: state_is(server, "paused", "done"), 30)
    assert isinstance(paused, dict) and paused["state"] == "paused", paused
    assert node_states(paused) == {
        "n1": "failed",
        "n2": "pending",
        "n3": "pending",
        "n4": "pending",
    }
    assert "n1" in paused["reason"] and "units not healthy" in paused["nodes"]["n1"]["reason"]
    assert fleet.order == ["n1"]
    assert assignments(server) == {"n1": "img-2", "n2": None, "n3": None, "n4": None}


def test_auto_rollback_puts_the_canary_back(server: Server) -> None:
    fleet = setup_fleet(server, 4, n1={"bad": frozenset({"img-2"})})
    with fleet.running():
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        start(server, max_unavailable=2, canary=1, health_timeout=3, auto_rollback=True)
        ended = wait_for(lambda: state_is(server, "rolled-back", "paused", "done"), 40)
    assert isinstance(ended, dict) and ended["state"] == "rolled-back", ended
    assert node_states(ended)["n1"] == "reverted"
    assert {node_states(ended)[n] for n in ("n2", "n3", "n4")} == {"pending"}
    assert fleet.order == ["n1", "n1"]  # onto img-2, and back
    assert fleet.nodes["n1"].booted == "img-1"
    assert assignments(server)["n1"] == "img-1"


def test_a_node_that_never_returns_pauses_after_its_deadline(server: Server) -> None:
    fleet = setup_fleet(server, 4, n3={"gone": True})
    with fleet.running():
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        start(server, max_unavailable=2, health_timeout=4)
        paused = wait_for(lambda: state_is(server, "paused", "done"), 40)
    assert isinstance(paused, dict) and paused["state"] == "paused", paused
    states = node_states(paused)
    assert states["n3"] == "failed" and states["n1"] == states["n2"] == "done"
    assert (
        "no heartbeat" in paused["nodes"]["n3"]["reason"]
        or "runs img-1" in paused["nodes"]["n3"]["reason"]
    )
    assert fleet.max_out <= 2


def test_pause_resume_abort_and_commands_refused(server: Server) -> None:
    fleet = setup_fleet(server, 4, n1={"delay": 2.0}, n2={"delay": 2.0})
    with fleet.running(), server.client() as admin:
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        start(server, max_unavailable=2, health_timeout=60)
        again = admin.post("/v1/rollouts", json={"role": "compute", "image": "img-2"})
        assert again.status_code == 409 and again.json()["kind"] == "conflict"
        wait_for(lambda: node_states(status(server))["n2"] != "pending", 10)
        assert admin.post("/v1/rollouts/compute/pause").json()["state"] == "paused"
        refused = admin.post("/v1/rollouts/compute/pause")
        assert refused.status_code == 409, refused.text
        # the two in flight still finish while paused, and nothing more is granted
        wait_for(lambda: node_states(status(server))["n2"] == "done", 20)
        assert node_states(status(server))["n3"] == "pending"
        assert admin.post("/v1/rollouts/compute/resume").json()["state"] == "running"
        wait_for(lambda: node_states(status(server))["n3"] != "pending", 10)
        assert admin.post("/v1/rollouts/compute/abort").json()["state"] == "aborted"
        missing = admin.post("/v1/rollouts/storage/pause")
        assert missing.status_code == 404
        unknown = admin.post("/v1/rollouts", json={"role": "compute", "image": "img-9"})
        assert unknown.status_code == 404 and "img-9" in unknown.json()["value"]
        with server.client(fleet.nodes["n1"].token) as node:
            assert node.get("/v1/rollouts").status_code == 403


def test_a_restarted_server_resumes_the_rollout(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'cluster.db'}"
    first = serve(tmp_path, "a", store)
    try:
        fleet = setup_fleet(first, 8)
        with fleet.running():
            wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
            start(first, max_unavailable=2, health_timeout=60)
            wait_for(lambda: len(fleet.order) >= 3, 30)
            stop_server(first)
            second = serve(tmp_path, "b", store)
            try:
                fleet.switch(second)
                done = wait_for(lambda: state_is(second, "done", "paused"), 90)
            finally:
                stop_server(second)
    finally:
        stop_server(first)
    assert isinstance(done, dict) and done["state"] == "done", done
    assert fleet.max_out <= 2
    assert sorted(fleet.order) == IDS
    assert granted(done) == IDS


def test_the_other_replica_takes_over_when_the_leader_dies(etcd_url: str, tmp_path: Path) -> None:
    store = etcd_url.replace("http://", "etcd://") + f"/takeover-{uuid.uuid4().hex[:12]}"
    a = serve(tmp_path, "a", store)
    b = serve(tmp_path, "b", store)
    try:
        leader, other = wait_for(lambda: _leader(a, b), 15)  # type: ignore[misc]
        fleet = setup_fleet(other, 8)
        with fleet.running():
            wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
            start(other, max_unavailable=2, health_timeout=60)
            wait_for(lambda: len(fleet.order) >= 3, 30)
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait(timeout=10)
            done = wait_for(lambda: state_is(other, "done", "paused"), 90)
        assert "controller-leading" in other.log_text()
    finally:
        stop_server(a)
        stop_server(b)
    assert isinstance(done, dict) and done["state"] == "done", done
    assert fleet.max_out <= 2
    assert sorted(fleet.order) == IDS
    assert granted(done) == IDS


def _leader(a: Server, b: Server) -> tuple[Server, Server] | None:
    leading = [s for s in (a, b) if "controller-leading" in s.log_text()]
    if len(leading) != 1:
        return None
    return (a, b) if leading[0] is a else (b, a)
