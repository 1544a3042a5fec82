"""A rolling reboot with `rollout.drain: slurm`, end to end: a real `hostos serve` whose
drainer runs scontrol/sinfo/squeue against a real slurmctld, and sim nodes each with a real
slurmd that their reboots kill with everything in the namespace (slurm_lab.py).

What is checked is what an HPC admin asks of a rolling update: the idle nodes go first, the
busy node only after its job; the job ends COMPLETED (not NODE_FAIL, not requeued); no job
starts on a node while hostos has it drained; a drain that times out pauses the rollout
and leaves the job alone; a node an admin drained stays drained, with the admin's reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
import slurm_lab
from fake_fleet import wait_for
from netns import Lab
from server_fixtures import Server, serving
from sim_cluster import SimCluster, all_steady, cluster
from slurm_lab import SlurmLab

from hostos.site.drain import Drain
from hostos.site.rollout import RolloutPolicy

pytestmark = pytest.mark.integration
lab = netns.lab  # the fixtures, by the names the tests ask for
slurm = slurm_lab.slurm
ENDED = ("COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED", "TIMEOUT")


@pytest.fixture
def server(lab: Lab, slurm: SlurmLab, tmp_path: Path) -> Iterator[Server]:
    """A `hostos serve` on the bridge, in the Slurm lab's environment (SLURM_CONF), counting
    jobs every half second."""
    (tmp_path / "server").mkdir()
    options = ["--drain-interval", "0.5"]
    with serving(tmp_path / "server", host=lab.address, env=slurm.env(), options=options) as s:
        yield s


def drained_cluster(
    lab: Lab, server: Server, slurm: SlurmLab, tmp: Path, count: int, drain_timeout: float
) -> SimCluster:
    policy = RolloutPolicy(
        max_unavailable=1, health_timeout=60.0, drain=Drain("slurm", timeout=drain_timeout)
    )
    return cluster(lab, server, tmp, count, slurm=slurm, role={"rollout": policy.to_json()})


def job_on_n1(sim: SimCluster, server: Server, slurm: SlurmLab, seconds: int) -> str:
    """Once every node is steady and idle: a job of seconds on n1 (never requeued), running;
    its id."""
    wait_for(lambda: all_steady(sim, server), 30)
    slurm.wait_states({node: "idle" for node in sim.nodes})
    job = slurm.sbatch("-w", "n1", "--no-requeue", wrap=f"sleep {seconds}")
    slurm.wait_job(job, "RUNNING")
    return job


def start(server: Server) -> dict[str, Any]:
    with server.client() as admin:
        reply = admin.post("/v1/rollouts", json={"role": "compute", "image": "img-2"})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def status(server: Server) -> dict[str, Any]:
    with server.client() as admin:
        return dict(admin.get("/v1/rollouts/compute").json())


def ended(server: Server) -> dict[str, Any] | None:
    found = status(server)
    return found if found["state"] in ("done", "paused", "aborted") else None


class Stream:
    """Short jobs submitted one after another while the rollout runs, wherever Slurm puts
    them: each must end COMPLETED and none may start on a node hostos has drained."""

    def __init__(self, slurm: SlurmLab) -> None:
        self.slurm, self.jobs = slurm, list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(1.5):
            self.jobs.append(self.slurm.sbatch("--no-requeue", wrap="sleep 1"))


def drained_windows(found: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per node, from the rollout's log: when hostos asked its drain, and when the node was
    recorded done (after its resume)."""
    asked = {e["node"]: e["at"] for e in found["log"] if e["kind"] == "drain"}
    done = {e["node"]: e["at"] for e in found["log"] if e["kind"] == "done"}
    return {node: (asked[node], done.get(node, time.time())) for node in asked}


def slurm_time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def test_a_rolling_reboot_waits_for_the_job_and_kills_none(
    lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path
) -> None:
    sim = drained_cluster(lab, server, slurm, tmp_path, 4, drain_timeout=300.0)
    with sim.running():
        job = job_on_n1(sim, server, slurm, seconds=30)
        slurm.command("scontrol", "update", "nodename=n3", "state=drain", "reason=bad DIMM")
        assert start(server)["spec"]["drain"]["kind"] == "slurm"
        draining = wait_for(lambda: _draining_under_the_job(server), 60)
        # from here on, while n1 drains, reboots and comes back, more work keeps coming
        with Stream(slurm) as stream:
            done = wait_for(lambda: ended(server), 120)
        assert isinstance(done, dict) and done["state"] == "done", done
        finished = slurm.wait_job(job, *ENDED)
        streamed = {j: slurm.wait_job(j, *ENDED) for j in stream.jobs}
        # a node just resumed shows `*` until it answers slurmctld's next ping
        wait_for(lambda: all("*" not in state for state, _ in slurm.sinfo().values()), 30)
        sinfo = slurm.sinfo()
    assert isinstance(draining, dict) and draining["nodes"]["n1"]["jobs"] == 1
    order = sim.order()
    assert sorted(order[:3]) == ["n2", "n3", "n4"] and order[3:] == ["n1"], order
    # the busy node rebooted only after its job, which ended on its own
    assert (finished["JobState"], finished["ExitCode"], finished["Restarts"]) == (
        "COMPLETED",
        "0:0",
        "0",
    ), finished
    reboot_n1 = next(e["t"] for e in sim.events("reboot") if e["node"] == "n1")
    assert reboot_n1 >= slurm_time(finished["EndTime"])
    # the jobs submitted meanwhile all completed, none started on a node hostos had drained
    # (n1, from its drain until it was back)
    assert len(streamed) >= 5 and {j["JobState"] for j in streamed.values()} == {"COMPLETED"}
    windows = drained_windows(done)
    for job_id, found in streamed.items():
        begin, end = windows[found["NodeList"]]
        started = slurm_time(found["StartTime"])
        assert not begin + 1 < started < end - 1, (job_id, found["NodeList"], started, begin)
    # everyone back in service but the node an admin drained, which keeps the admin's reason
    assert sinfo["n3"] == ("drained", "bad DIMM"), sinfo
    assert {sinfo[n][0] for n in ("n1", "n2", "n4")} <= {"idle", "allocated", "mixed"}, sinfo
    assert done["nodes"]["n3"]["held"] == "bad DIMM"
    assert {p["state"] for p in done["nodes"].values()} == {"done"}


def _draining_under_the_job(server: Server) -> dict[str, Any] | None:
    found = status(server)
    n1 = found["nodes"]["n1"]
    return found if n1["state"] == "draining" and n1["jobs"] == 1 else None


def test_a_drain_that_times_out_pauses_and_leaves_the_job_running(
    lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path
) -> None:
    sim = drained_cluster(lab, server, slurm, tmp_path, 2, drain_timeout=4.0)
    with sim.running():
        job = job_on_n1(sim, server, slurm, seconds=120)
        start(server)
        paused = wait_for(lambda: ended(server), 60)
        running = slurm.job(job)
        slurm.command("scancel", job)
    assert isinstance(paused, dict) and paused["state"] == "paused", paused
    assert paused["nodes"]["n1"]["state"] == "failed"
    assert paused["nodes"]["n1"]["reason"].startswith("still draining 4s after it was asked")
    assert paused["nodes"]["n2"]["state"] == "done"
    assert sim.order() == ["n2"]  # n1 never rebooted under its job
    assert running["JobState"] == "RUNNING"
