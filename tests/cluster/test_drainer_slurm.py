"""The drainer against a real Slurm: Debian's munged, slurmctld and two slurmd on this machine
(shared/LAB.md, "Slurm on one machine"), every daemon with its own key, socket, ports and
directories, so nothing of the machine's own Slurm or munge is touched.

A job that runs until the test lets it end holds node s1: the drainer counts it, drains s1
with the rollout's reason (the job goes on), sees it drained once the job has ended, and
resumes it; a node an admin drained is reported held and never drained or resumed by the
drainer, and neither is one an admin drained again while the rollout had it.  And the planner
rolls both nodes over what the drainer reports: the busy one only after its job."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import pytest
from server_fixtures import free_port

from hostos.cluster.rollout.plan import (
    NodeProgress,
    NodeState,
    NodeView,
    Rollout,
    RolloutSpec,
    State,
    Workload,
    plan,
    start,
)
from hostos.cluster.server.drainer import Drainer
from hostos.site.drain import Drain

pytestmark = pytest.mark.integration

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "squeue", "scontrol", "sbatch")
NODES = ("s1", "s2")
RID = "compute-1764870000-ab12cd"
T = TypeVar("T")


@dataclass
class Slurm:
    dir: Path  # config, state, logs
    run: Path  # sockets, spool, pid files: a short path (a socket's path is short)
    processes: list[subprocess.Popen[bytes]]
    logs: list[IO[bytes]]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.dir / "slurm.conf")}

    def __call__(self, *argv: str) -> str:
        done = subprocess.run(
            argv,
            env={**os.environ, **self.env},
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        return done.stdout

    def start(self, *argv: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.dir / log).open("ab")
        self.logs.append(out)
        process = subprocess.Popen(
            argv, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def nodes(self) -> dict[str, tuple[str, str]]:
        """sinfo's state and reason of each node."""
        lines = self("sinfo", "-h", "-N", "-o", "%N|%T|%E").splitlines()
        return {n: (s, r) for n, s, r in (line.split("|", 2) for line in lines)}


def conf(slurm: Slurm, ctld: int, ports: dict[str, int]) -> str:
    run = slurm.run
    lines = [
        "ClusterName=drainer",
        f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
        f"SlurmctldPort={ctld}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={run / 'munge.sock'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={slurm.dir / 'state'}",
        f"SlurmdSpoolDir={run}/spool/%n",
        f"SlurmctldPidFile={run}/slurmctld.pid",
        f"SlurmdPidFile={run}/slurmd-%n.pid",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "ReturnToService=2",
        "KillWait=2",
        "DefMemPerCPU=100",
        "InactiveLimit=0",
    ]
    lines += [  # s1 takes two jobs at once
        f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={p} "
        f"CPUs={2 if n == 's1' else 1} RealMemory=1000 State=UNKNOWN"
        for n, p in ports.items()
    ]
    lines.append(f"PartitionName=all Nodes={','.join(ports)} Default=YES MaxTime=INFINITE")
    return "\n".join(lines) + "\n"


def until(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[Slurm]:
    if os.geteuid() != 0:
        pytest.skip("slurmd runs as root here")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"no {', '.join(missing)} (apt install slurmctld slurmd slurm-client munge)")
    run = Path(tempfile.mkdtemp(prefix="hdrain."))
    run.chmod(0o755)  # munged: the directories above its socket searchable by all
    made = Slurm(tmp_path, run, [], [])
    try:
        (tmp_path / "state").mkdir()
        for node in NODES:
            (run / "spool" / node).mkdir(parents=True)
        ports = {n: free_port() for n in NODES}
        (tmp_path / "slurm.conf").write_text(conf(made, free_port(), ports))
        key = run / "munge.key"
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
        made.start(
            *("munged", "--foreground", "--socket", str(run / "munge.sock")),
            *("--key-file", str(key), "--pid-file", str(run / "munged.pid")),
            *("--log-file", str(tmp_path / "munged.log"), "--seed-file", str(run / "seed")),
            log="munged.out",
        )
        until((run / "munge.sock").exists, "munged made no socket")
        made.start("slurmctld", "-D", "-i", log="slurmctld.log")
        for node in NODES:
            made.start("slurmd", "-D", "-N", node, log=f"slurmd-{node}.log")
        until(lambda: all(s == "idle" for s, _ in made.nodes().values()), "nodes not idle")
        yield made
    finally:
        for process in reversed(made.processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for out in made.logs:
            out.close()
        shutil.rmtree(run, ignore_errors=True)


def rollout(**nodes: NodeProgress) -> Rollout:
    spec = RolloutSpec("compute", "img-2", "img-1", drain=Drain("slurm"))
    return Rollout(RID, spec, State.RUNNING, 1, (), nodes, 0.0)


def at(state: NodeState, granted_at: float | None = None, held: str = "") -> NodeProgress:
    return NodeProgress(state, None, granted_at, slot=state is not NodeState.PENDING, held=held)


def test_drain_count_hold_and_resume_against_a_real_slurmctld(slurm: Slurm) -> None:
    drainer = Drainer(None, slurm.env, interval=0.2, timeout=30.0)

    def look(**nodes: NodeProgress) -> dict[str, Workload]:
        current = rollout(**nodes)
        drainer.follow([current])
        drainer.run_once()
        return drainer.workloads(current)

    flags = [slurm.dir / "job-1", slurm.dir / "job-2"]
    for flag in flags:
        flag.touch()
        wait = f"while [ -e {flag} ]; do sleep 0.2; done"
        slurm("sbatch", "-o", "/dev/null", "-w", "s1", "--wrap", wait)
    until(lambda: slurm.nodes()["s1"][0] == "allocated", "the jobs are not running on s1")
    pending = at(NodeState.PENDING)
    assert look(s1=pending, s2=pending) == {"s1": Workload(jobs=2), "s2": Workload(jobs=0)}

    # drained while its jobs run: the drain is in place, jobs left, so no grant yet
    draining = at(NodeState.DRAINING, 10.0)
    assert look(s1=draining, s2=pending)["s1"] == Workload(jobs=2, drained=True)
    assert slurm.nodes()["s1"] == ("draining", f"hostos rollout {RID}")
    flags[0].unlink()
    until(lambda: look(s1=draining, s2=pending)["s1"].jobs == 1, "first job not over")
    assert slurm.nodes()["s1"] == ("draining", f"hostos rollout {RID}")
    flags[1].unlink()
    assert until(lambda: look(s1=draining, s2=pending)["s1"].jobs == 0, "job not over")
    assert look(s1=draining, s2=pending)["s1"] == Workload(jobs=0, drained=True)
    assert slurm.nodes()["s1"] == ("drained", f"hostos rollout {RID}")

    # an admin's drain: held, left as it is when the rollout drains and resumes the node
    slurm("scontrol", "update", "nodename=s2", "state=drain", "reason=bad DIMM")
    assert look(s1=draining, s2=pending)["s2"] == Workload(jobs=0, held="bad DIMM")
    work = look(s1=draining, s2=at(NodeState.DRAINING, 11.0, held="bad DIMM"))
    assert work["s2"] == Workload(jobs=0, drained=True, held="bad DIMM")
    assert slurm.nodes()["s2"] == ("drained", "bad DIMM")

    # s1 updated: given back
    resuming = at(NodeState.RESUMING, 20.0)
    assert look(s1=resuming, s2=pending)["s1"].resumed
    assert slurm.nodes()["s1"] in {("idle", "none"), ("idle*", "none")}  # * until pinged
    until(lambda: slurm.nodes()["s1"] == ("idle", "none"), "s1 not back")

    # drained again (a rollback), and drained by an admin meanwhile: not given back
    assert look(s1=at(NodeState.DRAINING, 30.0), s2=pending)["s1"].drained
    assert slurm.nodes()["s1"] == ("drained", f"hostos rollout {RID}")
    slurm("scontrol", "update", "nodename=s1", "state=drain", "reason=fan failure")
    assert look(s1=at(NodeState.RESUMING, 40.0), s2=pending)["s1"].resumed
    assert slurm.nodes() == {"s1": ("drained", "fan failure"), "s2": ("drained", "bad DIMM")}


def test_the_planner_and_the_drainer_roll_a_busy_node_after_its_job(slurm: Slurm) -> None:
    """The planner's rollout over the drainer's Workloads: the idle node first, the busy one
    once its job has ended; each granted only while Slurm shows it drained and jobless, and
    given back after (a reboot here is instant: the node boots what it was assigned)."""
    flag = slurm.dir / "job"
    flag.touch()
    slurm(
        "sbatch",
        "-o",
        "/dev/null",
        "-w",
        "s1",
        "--wrap",
        f"while [ -e {flag} ]; do sleep 0.2; done",
    )
    until(lambda: slurm.nodes()["s1"][0] in ("mixed", "allocated"), "the job is not running")
    booted = dict.fromkeys(NODES, "img-1")
    spec = RolloutSpec("compute", "img-2", "img-1", drain=Drain("slurm"))

    def views(work: dict[str, Workload], now: float) -> list[NodeView]:
        return [
            NodeView(n, booted[n], steady=True, healthy=True, last_seen=now, workload=work[n])
            for n in NODES
        ]

    now = time.time()
    current = start(spec, views(dict.fromkeys(NODES, Workload()), now), now, RID)
    drainer = Drainer(None, slurm.env, interval=0.1)
    granted: list[str] = []
    deadline = time.monotonic() + 60
    while current.state is not State.DONE:
        assert time.monotonic() < deadline, current
        drainer.follow([current])
        drainer.run_once()
        now = time.time()
        decision = plan(current, views(drainer.workloads(current), now), now)
        for action in decision.grants:
            assert action.node is not None and action.image is not None
            assert slurm.nodes()[action.node] == ("drained", f"hostos rollout {RID}")
            assert not slurm("squeue", "-h", "-w", action.node, "-o", "%i")
            booted[action.node] = action.image
            granted.append(action.node)
        current = decision.rollout
        if granted == ["s2"] and flag.exists():
            flag.unlink()  # the busy node's job ends once the idle one is through
        time.sleep(0.1)
    assert granted == ["s2", "s1"]
    until(lambda: slurm.nodes() == {n: ("idle", "none") for n in NODES}, "not given back")
