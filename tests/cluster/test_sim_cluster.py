"""Rollouts on a simulated cluster: real agents as processes in network namespaces.

Each node (sim_node.py) is a process in a namespace of its own (its own MAC and address on
a bridge); the `hostos serve` under test listens on the bridge, and its controller does the
rollouts.  A "reboot" is the agent's reboot command: the process exits and the harness starts
it again, and the new process asks the boot endpoint which image it boots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import netns
import pytest
from fake_fleet import wait_for
from netns import Lab
from server_fixtures import ROOT, Server, hostos, serving, start_server, stop_server
from sim_cluster import IDS, all_steady, cluster

pytestmark = pytest.mark.integration
lab = netns.lab  # the fixture, by the name the tests ask for


@pytest.fixture
def server(lab: Lab, tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "server").mkdir()
    with serving(tmp_path / "server", host=lab.address) as running:
        yield running


def start(server: Server, **spec: Any) -> dict[str, Any]:
    with server.client() as admin:
        reply = admin.post("/v1/rollouts", json={"role": "compute", "image": "img-2", **spec})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def state_is(server: Server, *wanted: str) -> dict[str, Any] | None:
    try:
        with server.client() as admin:
            found = dict(admin.get("/v1/rollouts/compute").json())
    except httpx.HTTPError:
        return None
    return found if found.get("state") in wanted else None


def node_states(found: dict[str, Any]) -> dict[str, str]:
    return {node: p["state"] for node, p in found["nodes"].items()}


def assignments(server: Server) -> dict[str, str | None]:
    with server.client() as admin:
        return {n["id"]: n["assigned_image"] for n in admin.get("/v1/nodes").json()}


def test_eight_nodes_two_at_a_time_through_the_cli(
    lab: Lab, server: Server, tmp_path: Path
) -> None:
    sim = cluster(lab, server, tmp_path, 8)
    with sim.running():
        wait_for(lambda: all_steady(sim, server), 30)
        env = {**os.environ, "HOSTOS_ADMIN_TOKEN_FILE": str(server.token_file)}
        done = hostos(
            "rollout",
            "start",
            "compute",
            "--image",
            "img-2",
            "--server",
            server.url,
            "--max-unavailable",
            "2",
            "--health-timeout",
            "60s",
            env=env,
        )
        assert done.returncode == 0, done.stderr
        ended = wait_for(lambda: state_is(server, "done", "paused"), 120, every=0.5)
        wait_for(lambda: all_steady(sim, server), 20)
    assert isinstance(ended, dict) and ended["state"] == "done", ended
    assert sim.max_out() <= 2
    assert sorted(sim.order()) == IDS  # each node rebooted once
    assert set(sim.booted().values()) == {"img-2"}
    assert set(node_states(ended).values()) == {"done"}
    assert set(assignments(server).values()) == {"img-2"}
    with server.client() as admin:
        records = {r["id"]: r for r in admin.get("/v1/nodes").json()}
    assert {r["booted_image"] for r in records.values()} == {"img-2"}
    assert {r["units"]["app"] for r in records.values()} == {"healthy"}
    assert {r["generation"] for r in records.values()} == {1}  # the spec each applied
    assert server.process.poll() is None


def test_a_failing_canary_pauses_and_nothing_else_is_touched(
    lab: Lab, server: Server, tmp_path: Path
) -> None:
    sim = cluster(lab, server, tmp_path, 4, n1={"bad": frozenset({"img-2"})})
    with sim.running():
        wait_for(lambda: all_steady(sim, server), 30)
        started = start(server, max_unavailable=2, canary=1, health_timeout=8)
        assert started["canaries"] == ["n1"]
        paused = wait_for(lambda: state_is(server, "paused", "done"), 60, every=0.5)
        booted = sim.booted()
    assert isinstance(paused, dict) and paused["state"] == "paused", paused
    assert node_states(paused) == {
        "n1": "failed",
        "n2": "pending",
        "n3": "pending",
        "n4": "pending",
    }
    assert "units not healthy" in paused["nodes"]["n1"]["reason"]
    assert sim.order() == ["n1"]
    assert booted == {"n1": "img-2", "n2": "img-1", "n3": "img-1", "n4": "img-1"}
    assert assignments(server) == {"n1": "img-2", "n2": None, "n3": None, "n4": None}


def test_auto_rollback_puts_the_canary_back(lab: Lab, server: Server, tmp_path: Path) -> None:
    sim = cluster(lab, server, tmp_path, 4, n1={"bad": frozenset({"img-2"})})
    with sim.running():
        wait_for(lambda: all_steady(sim, server), 30)
        start(server, max_unavailable=2, canary=1, health_timeout=8, auto_rollback=True)
        ended = wait_for(lambda: state_is(server, "rolled-back", "paused", "done"), 90, every=0.5)
        wait_for(lambda: "n1" in sim.steady(), 20)
    assert isinstance(ended, dict) and ended["state"] == "rolled-back", ended
    assert node_states(ended)["n1"] == "reverted"
    assert {node_states(ended)[n] for n in ("n2", "n3", "n4")} == {"pending"}
    assert sim.order() == ["n1", "n1"]  # onto img-2, and back
    assert [e["image"] for e in sim.events("boot") if e["node"] == "n1"] == [
        "img-1",
        "img-2",
        "img-1",
    ]
    assert assignments(server)["n1"] == "img-1"


def test_a_restarted_server_resumes_the_rollout(lab: Lab, tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'cluster.db'}"
    (tmp_path / "server").mkdir()
    first = start_server(tmp_path / "server", store, host=lab.address)
    second = None
    try:
        sim = cluster(lab, first, tmp_path, 8)
        with sim.running():
            wait_for(lambda: all_steady(sim, first), 30)
            start(first, max_unavailable=2, health_timeout=60)
            wait_for(lambda: len(sim.order()) >= 3, 60)
            stop_server(first)
            port = int(first.url.rsplit(":", 1)[1])
            second = start_server(tmp_path / "server", store, host=lab.address, port=port)
            done = wait_for(lambda: state_is(second, "done", "paused"), 120, every=0.5)
            wait_for(lambda: all_steady(sim, second), 20)
    finally:
        stop_server(first)
        if second is not None:
            stop_server(second)
    assert isinstance(done, dict) and done["state"] == "done", done
    assert sim.max_out() <= 2
    assert sorted(sim.order()) == IDS
    assert set(sim.booted().values()) == {"img-2"}


def test_a_node_that_never_returns_pauses_after_its_deadline(
    lab: Lab, server: Server, tmp_path: Path
) -> None:
    sim = cluster(lab, server, tmp_path, 4, n3={"gone": True})
    with sim.running():
        wait_for(lambda: all_steady(sim, server), 30)
        start(server, max_unavailable=2, health_timeout=8)
        paused = wait_for(lambda: state_is(server, "paused", "done"), 60, every=0.5)
    assert isinstance(paused, dict) and paused["state"] == "paused", paused
    states = node_states(paused)
    assert states["n3"] == "failed" and states["n1"] == states["n2"] == "done", states
    assert (
        "no heartbeat" in paused["nodes"]["n3"]["reason"]
        or "runs img-1" in paused["nodes"]["n3"]["reason"]
    )
    assert sim.max_out() <= 2
    assert "n3" not in sim.booted() or sim.booted()["n3"] == "img-1"  # never came back


def test_a_node_token_against_another_nodes_config_is_forbidden(
    lab: Lab, server: Server, tmp_path: Path
) -> None:
    sim = cluster(lab, server, tmp_path, 2)
    other = sim.nodes["n2"].token_file.read_text().strip()
    own = sim.nodes["n1"].token_file.read_text().strip()
    code = (
        "import json, sys\n"
        "from hostos.cluster.client import Client\n"
        "answers = [Client(sys.argv[1], t).request('GET', '/v1/nodes/n1/config').status\n"
        "           for t in sys.argv[2:]]\n"
        "print(json.dumps(answers))\n"
    )
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.nodes["n2"].name,
            sys.executable,
            "-c",
            code,
            server.url,
            other,
            own,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [403, 200]  # from n2's own address, n2's token
    log = server.log_text()
    assert "status=403" in log and other not in log and own not in log
