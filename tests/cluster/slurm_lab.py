"""A real Slurm cluster over the simulated one: Debian's munged, slurmctld and slurmd.

`SlurmLab(lab, tmp)` owns one Slurm cluster per test: its own munged (own key, own socket),
a slurmctld in the root namespace on the bridge address and a port of its own, and a
slurmd per node, started inside the node's namespace (`boot`) with its own spool directory.
Nothing of the machine's own Slurm or munge is used (no /etc/slurm, no /etc/munge), so
parallel runs never meet.  `env()` is the environment of the client tools (`SLURM_CONF`),
for the tests' sinfo/squeue/scontrol/sbatch and for a `hostos serve` that runs scontrol;
it is known before `start`, so a server can be started with it before the nodes exist.

A sim cluster (sim_cluster.SimCluster with `slurm=`) boots each node's slurmd with the node,
and its "reboot" kills everything in the namespace (`Lab.kill_all`): slurmd, slurmstepd and
the jobs' processes die as on a real power-off.

Paths: the munge socket, the slurmd spool directories (slurmstepd's sockets) and pid files
live in a short directory of their own under /tmp (a unix socket's path is at most 107
bytes, and munged wants every directory above its socket searchable by all); the config,
the controller's state and all logs live in `tmp/slurm`, kept by pytest for a look.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from fake_fleet import wait_for
from netns import Lab
from server_fixtures import free_port

from hostos.process import terminate

BINARIES = (
    *("munged", "mungekey", "slurmctld", "slurmd"),
    *("sinfo", "squeue", "scontrol", "sbatch", "scancel"),
    *("unshare", "nsenter"),
)
START_SECONDS = 20.0
COMMAND_SECONDS = 30.0
# Seconds without an answer after which slurmctld calls a slurmd's node DOWN; it pings every
# third of that (marking an unanswered node `*`, not responding).  A sim reboot (0.5 s by
# default) is over long before, as in the field a node is back before SlurmdTimeout (300 s).
SLURMD_TIMEOUT = 10
# The least time from a node's power-off to its slurmd's start: slurmctld knows boot times
# and last answers to the second, and tells a reboot only by a boot time after the last answer.
REBOOT_SECONDS = 2.0


def available() -> str:
    """Why a Slurm lab cannot run here, or "" when it can."""
    if os.geteuid() != 0:
        return "Slurm in network namespaces needs root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"no {', '.join(missing)} (Debian: apt install slurmctld slurmd slurm-client munge)"
    return ""


def slurm_conf(
    cluster: str,
    controller: str,
    port: int,
    nodes: Mapping[str, str],
    state: Path,
    run: Path,
    *,
    return_to_service: int = 2,
    slurmd_timeout: int = SLURMD_TIMEOUT,
    cpus: Mapping[str, int] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """slurm.conf for nodes (name → NodeAddr), one CPU each unless cpus says otherwise, the
    controller on address:port, one partition `all` of every node, and the extra lines."""
    lines = [
        f"ClusterName={cluster}",
        f"SlurmctldHost={socket.gethostname()}({controller})",
        f"SlurmctldPort={port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={run / 'munge.sock'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={state}",
        f"SlurmdSpoolDir={run}/spool/%n",
        f"SlurmctldPidFile={run}/slurmctld.pid",
        f"SlurmdPidFile={run}/slurmd-%n.pid",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        f"ReturnToService={return_to_service}",
        "MinJobAge=3600",  # finished jobs stay visible to `scontrol show job`
        f"SlurmdTimeout={slurmd_timeout}",
        "KillWait=2",
        "SchedulerParameters=batch_sched_delay=0",  # a job starts at once, not ~3 s later
        "InactiveLimit=0",
    ]
    lines += [
        f"NodeName={n} NodeAddr={a} CPUs={(cpus or {}).get(n, 1)} State=UNKNOWN"
        for n, a in nodes.items()
    ]
    lines.append(f"PartitionName=all Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join([*lines, *extra]) + "\n"


def boot_command(node: str, wait: float) -> list[str]:
    """slurmd -D -N node, started after wait seconds in a new time namespace whose clock says
    the machine has just booted: slurmd reports its uptime when it registers, and slurmctld
    sees a boot time later than the node's last answer, as after a real reboot."""
    fresh = 'exec unshare --time --fork --boottime "-$(cut -d. -f1 /proc/uptime)"'
    return ["sh", "-c", f"sleep {wait:.2f}; {fresh} slurmd -D -N {node}"]


def parse_pairs(text: str) -> dict[str, str]:
    """`scontrol show -o` output (Key=Value ...) as a dict; a value ends at the next space."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


class SlurmLab:
    def __init__(
        self,
        lab: Lab,
        tmp: Path,
        return_to_service: int = 2,
        slurmd_timeout: int = SLURMD_TIMEOUT,
        cpus: Mapping[str, int] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """cpus: the CPUs of nodes with more than one (at most the machine's); extra: more
        slurm.conf lines (a partition, say); return_to_service: slurm.conf's ReturnToService.

        With ReturnToService=2 a node back from a reboot is used again unless drained, and
        slurmctld (22.05) takes no notice of the reboot: a job it killed shows RUNNING until
        the node's next periodic registration (every 20th ping: 20 * SlurmdTimeout/3 s),
        then NODE_FAIL (or is requeued).  With 1 the rebooted node is `down` ("Node
        unexpectedly rebooted") as it registers, its jobs end NODE_FAIL at once (or are
        requeued), and it stays down until resumed."""
        self.lab = lab
        self.settings: dict[str, Any] = {
            "return_to_service": return_to_service,
            "slurmd_timeout": slurmd_timeout,
            "cpus": cpus,
            "extra": extra,
        }
        self.dir = tmp / "slurm"  # config, controller state, logs
        self.dir.mkdir()
        self.conf = self.dir / "slurm.conf"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"hslurm{lab.tag}."))
        self.run_dir.chmod(0o755)  # munged: the directories above its socket searchable by all
        self.port = 0
        self.nodes: list[str] = []
        self.munged: subprocess.Popen[bytes] | None = None
        self.slurmctld: subprocess.Popen[bytes] | None = None
        self.slurmd: dict[str, subprocess.Popen[bytes]] = {}
        self.halted: dict[str, float] = {}  # node → when it was last powered off (monotonic)
        self._logs: list[IO[bytes]] = []

    # -- the daemons -------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of a Slurm client of this cluster (the test's, plus SLURM_CONF)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, nodes: Sequence[str] | None = None) -> None:
        """Write slurm.conf for nodes (default: every namespace of the lab, which must exist:
        their addresses are the NodeAddrs), start munged and slurmctld, and wait until the
        controller answers.  The slurmds start with `boot`."""
        self.nodes = list(nodes if nodes is not None else self.lab.nodes)
        self.port = free_port()
        addresses = {n: self.lab.nodes[n].address for n in self.nodes}
        (self.dir / "state").mkdir()
        for node in self.nodes:
            (self.run_dir / "spool" / node).mkdir(parents=True)
        self.conf.write_text(
            slurm_conf(
                f"lab{self.lab.tag}",
                self.lab.address,
                self.port,
                addresses,
                self.dir / "state",
                self.run_dir,
                **self.settings,
            )
        )
        self._start_munged()
        self.slurmctld = subprocess.Popen(
            ["slurmctld", "-D", "-i"],
            env=self.env(),
            stdout=self._log("slurmctld.log"),
            stderr=subprocess.STDOUT,
        )
        self._wait(self._controller_up, "slurmctld did not answer", self.slurmctld, "slurmctld.log")

    def _start_munged(self) -> None:
        key = self.run_dir / "munge.key"
        done = subprocess.run(
            ["mungekey", "--create", "--keyfile", str(key)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"mungekey: {done.stderr.strip()}")
        self.munged = subprocess.Popen(
            [
                "munged",
                "--foreground",
                "--socket",
                str(self.run_dir / "munge.sock"),
                "--key-file",
                str(key),
                "--pid-file",
                str(self.run_dir / "munged.pid"),
                "--log-file",
                str(self.dir / "munged.log"),
                "--seed-file",
                str(self.run_dir / "munged.seed"),
            ],
            stdout=self._log("munged.out"),
            stderr=subprocess.STDOUT,
        )
        self._wait(
            (self.run_dir / "munge.sock").exists, "munged made no socket", self.munged, "munged.out"
        )

    def _controller_up(self) -> bool:
        done = self.command("scontrol", "ping", check=False)
        return "is UP" in done.stdout

    def _wait(
        self, ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: str
    ) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what}; {self.dir / log}:\n{self.log_text(log)[-3000:]}")
            time.sleep(0.1)

    def _log(self, name: str) -> IO[bytes]:
        out = (self.dir / name).open("ab")
        self._logs.append(out)
        return out

    def boot(self, node: str) -> None:
        """Start node's slurmd in its namespace (in the foreground, log in slurmd-NODE.log),
        at least REBOOT_SECONDS after its power-off; a slurmd of an earlier boot, killed by
        a reboot, is reaped first."""
        old = self.slurmd.pop(node, None)
        if old is not None:
            if old.poll() is None:
                raise RuntimeError(f"{node}: slurmd of the last boot still runs")
            old.wait()
        halted = self.halted.get(node)
        wait = 0.0 if halted is None else max(0.0, halted + REBOOT_SECONDS - time.monotonic())
        self.slurmd[node] = self.lab.run(
            node,
            boot_command(node, wait),
            env=self.env(),
            out=self._log(f"slurmd-{node}.log"),
            sysfs=False,  # slurmd's cgroup plugin wants the machine's /sys/fs/cgroup
        )

    def halt(self, node: str) -> None:
        """Power node off: everything in its namespace killed, its slurmd reaped."""
        self.lab.kill_all(node)
        self.halted[node] = time.monotonic()
        process = self.slurmd.pop(node, None)
        if process is not None:
            process.wait(timeout=10)

    def close(self) -> None:
        for node in list(self.slurmd):
            self.halt(node)
        if self.slurmctld is not None:  # its state dies with the lab; a shutdown with
            terminate(self.slurmctld, 0)  # nodes gone would wait seconds for their answers
        if self.munged is not None:
            terminate(self.munged, 10)
        for out in self._logs:
            out.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_text(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the client tools --------------------------------------------------------------

    def command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster (from the root namespace)."""
        done = subprocess.run(
            argv,
            env=self.env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def sinfo(self) -> dict[str, tuple[str, str]]:
        """Each node's state (%T, e.g. `idle`, `draining`, `down*`) and reason (%E)."""
        out = self.command("sinfo", "-h", "-N", "-o", "%N|%T|%E").stdout
        found = {}
        for line in out.splitlines():
            node, state, reason = line.split("|", 2)
            found[node] = (state, reason)
        return found

    def states(self) -> dict[str, str]:
        return {node: state for node, (state, _) in self.sinfo().items()}

    def sbatch(self, *options: str, wrap: str = "sleep 30") -> str:
        """Submit a batch job (output to /dev/null); its id."""
        out = self.command("sbatch", "--parsable", "-o", "/dev/null", *options, "--wrap", wrap)
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` of one job as Key → Value (JobState, NodeList, Reason, ...)."""
        return parse_pairs(self.command("scontrol", "-o", "show", "job", job_id).stdout)

    def node(self, node: str) -> dict[str, str]:
        """`scontrol show node` of one node as Key → Value (State, BootTime, Reason, ...)."""
        return parse_pairs(self.command("scontrol", "-o", "show", "node", node).stdout)

    def wait_states(self, wanted: Mapping[str, str], timeout: float = 20.0) -> None:
        """Until each node of wanted has its state (sinfo's %T, e.g. `drained`)."""

        def reached() -> bool:
            now = self.states()
            return all(now.get(n) == s for n, s in wanted.items())

        try:
            wait_for(reached, timeout, every=0.2)
        except AssertionError:
            raise AssertionError(f"not {dict(wanted)} within {timeout} s: {self.sinfo()}") from None

    def wait_rebooted(self, node: str, before: str, timeout: float = 20.0) -> None:
        """Until node's slurmd registered after a reboot: a BootTime (`node`) other than
        before, and not `None` (what scontrol shows for a node resumed while its slurmd was
        away), and a state without `*` (not responding)."""

        def registered() -> bool:
            now = self.node(node)
            return now.get("BootTime") not in (before, "None", None) and "NOT_RESPONDING" not in (
                now.get("State") or ""
            )

        try:
            wait_for(registered, timeout, every=0.2)
        except AssertionError:
            raise AssertionError(f"{node} not back within {timeout} s: {self.node(node)}") from None

    def wait_job(self, job_id: str, *states: str, timeout: float = 20.0) -> dict[str, str]:
        """The job (as `job` gives it) once its JobState is one of states."""
        found: dict[str, str] = {}

        def reached() -> bool:
            found.update(self.job(job_id))
            return found.get("JobState") in states

        try:
            wait_for(reached, timeout, every=0.2)
        except AssertionError:
            raise AssertionError(f"job {job_id} not {states} within {timeout} s: {found}") from None
        return found


@pytest.fixture
def slurm(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path) -> Iterator[SlurmLab]:
    """A Slurm cluster of the lab's nodes, not started (`start` it, or pass it to
    sim_cluster.cluster, once the namespaces exist), stopped with all it started afterwards.
    ReturnToService is 2 unless parametrized (`@pytest.mark.parametrize("slurm", [1],
    indirect=True)`)."""
    why = available()
    if why:
        pytest.skip(why)
    made = SlurmLab(lab, tmp_path, return_to_service=getattr(request, "param", 2))
    try:
        yield made
    finally:
        made.close()
