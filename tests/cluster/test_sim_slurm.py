"""Real Slurm on the simulated cluster: a slurmd per sim node, killed by its reboots.

The harness the job-aware rollouts are tested on (slurm_lab.py, sim_cluster.py): Debian's
munged, slurmctld and slurmd, no mocks.  These tests show that it works (nodes register,
jobs complete) and that it can tell what a rollout must not do: a reboot under a running
job makes that job end other than COMPLETED, and a drained node takes no new job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import netns
import pytest
import slurm_lab
from fake_fleet import wait_for
from netns import Lab
from server_fixtures import Server, serving
from sim_cluster import SimCluster, all_steady, cluster
from slurm_lab import SlurmLab

pytestmark = pytest.mark.integration
lab = netns.lab  # the fixtures, by the names the tests ask for
slurm = slurm_lab.slurm
ENDED = ("COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED", "TIMEOUT")


@pytest.fixture
def server(lab: Lab, slurm: SlurmLab, tmp_path: Path) -> Iterator[Server]:
    """A `hostos serve` on the bridge, in the Slurm lab's environment (SLURM_CONF)."""
    (tmp_path / "server").mkdir()
    with serving(tmp_path / "server", host=lab.address, env=slurm.env()) as running:
        yield running


@contextmanager
def booted(
    lab: Lab, server: Server, slurm: SlurmLab, tmp: Path, count: int
) -> Iterator[SimCluster]:
    """A sim cluster of count nodes with Slurm, running, every node steady at the server and
    idle in Slurm."""
    sim = cluster(lab, server, tmp, count, slurm=slurm)
    with sim.running():
        wait_for(lambda: all_steady(sim, server), 30)
        slurm.wait_states({node: "idle" for node in sim.nodes})
        yield sim


def reboot_under_a_job(sim: SimCluster, slurm: SlurmLab, node: str, seconds: int) -> str:
    """Reboot node while a job of seconds (not to be requeued) runs on it; the job's id,
    once node's slurmd registered again."""
    before = slurm.node(node)["BootTime"]
    job = slurm.sbatch("-w", node, "--no-requeue", wrap=f"sleep {seconds}")
    slurm.wait_job(job, "RUNNING")
    sim.reboot(node)
    slurm.wait_rebooted(node, before)
    return job


def test_sim_nodes_register_and_run_a_job_to_completion(
    lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path
) -> None:
    with booted(lab, server, slurm, tmp_path, 3):
        assert slurm.sinfo() == {n: ("idle", "none") for n in ("n1", "n2", "n3")}
        job = slurm.sbatch("-w", "n1", wrap="sleep 2")
        ended = slurm.wait_job(job, *ENDED)
    assert ended["JobState"] == "COMPLETED", ended
    assert (ended["ExitCode"], ended["NodeList"], ended["Restarts"]) == ("0:0", "n1", "0")
    # the server runs in the lab's environment: its scontrol reaches this slurmctld
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    assert f"SLURM_CONF={slurm.conf}".encode() in environ


@pytest.mark.parametrize("slurm", [1], indirect=True)
def test_a_reboot_under_a_job_fails_it_at_once_with_return_to_service_1(
    lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path
) -> None:
    with booted(lab, server, slurm, tmp_path, 2) as sim:
        job = reboot_under_a_job(sim, slurm, "n1", 30)
        ended = slurm.wait_job(job, *ENDED, timeout=10)
        assert slurm.sinfo()["n1"] == ("down", "Node unexpectedly rebooted")
    assert ended["JobState"] == "NODE_FAIL", ended


def test_a_reboot_under_a_job_leaves_it_running_unseen_with_return_to_service_2(
    lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path
) -> None:
    """slurmctld 22.05 with ReturnToService=2 takes a rebooted node back without a look at
    its jobs: the killed job shows RUNNING well after it would have completed."""
    with booted(lab, server, slurm, tmp_path, 2) as sim:
        job = reboot_under_a_job(sim, slurm, "n1", 2)
        time.sleep(4)  # it started at least 2 s ago: 2 s past its natural end
        seen = slurm.job(job)
        assert slurm.states()["n1"] == "allocated"
    assert seen["JobState"] == "RUNNING", seen


def test_the_drain_cycle_by_hand(lab: Lab, slurm: SlurmLab, server: Server, tmp_path: Path) -> None:
    with booted(lab, server, slurm, tmp_path, 3) as sim:
        job = slurm.sbatch("-w", "n1", wrap="sleep 3")
        slurm.wait_job(job, "RUNNING")
        busy = [slurm.sbatch("-w", n, wrap="sleep 60") for n in ("n2", "n3")]
        slurm.command(
            "scontrol", "update", "nodename=n1", "state=drain", "reason=hostos rollout r1"
        )
        assert slurm.sinfo()["n1"] == ("draining", "hostos rollout r1")
        assert slurm.wait_job(job, *ENDED)["JobState"] == "COMPLETED"
        slurm.wait_states({"n1": "drained"})
        # every other node is busy: a new job waits rather than going to the drained node
        waiting = slurm.sbatch(wrap="sleep 1")
        time.sleep(4)  # twice the time a job takes here from submission (or resume) to start
        assert slurm.job(waiting)["JobState"] == "PENDING"
        slurm.command("scontrol", "update", "nodename=n1", "state=resume")
        assert slurm.wait_job(waiting, *ENDED)["NodeList"] == "n1"
        slurm.wait_states({"n1": "idle"})
        assert slurm.sinfo()["n1"] == ("idle", "none")
        # an admin's drain outlives a reboot of the node
        before = slurm.node("n1")["BootTime"]
        slurm.command("scontrol", "update", "nodename=n1", "state=drain", "reason=admin: bad dimm")
        sim.reboot("n1")
        slurm.wait_rebooted("n1", before)
        assert slurm.sinfo()["n1"] == ("drained", "admin: bad dimm")
        slurm.command("scancel", *busy)
