"""The example site's Slurm stack on real engines: its head role and one compute node on this
machine, converged by `hostos apply`, run a job.

The slurm image is built once a session with Docker, from containers/slurm (FROM the
debian:bookworm-slim that `hostos image base` makes), and loaded into Podman, so both
engines run the same image and only one build fetches Debian packages.  Each engine's run
works on a copy of the example site changed only where one machine differs from a cluster:
the roles' admin and apps mounts are temporary directories (the admin share with a fresh
munge key and the example slurm.conf, pointed at this machine on free ports), and slurmd
keeps the engine's ulimits, since this sandbox cannot raise them (shared/LAB.md).  Each
node is a namespace of its own, volumes included, so nothing touches another instance.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import slurm
from bench.processes import free_port
from hostos.cli.main import app
from hostos.engine.base import Engine, container_name, volume_name
from hostos.node.converge import down
from hostos.process import run

from conftest import wait_for

pytestmark = pytest.mark.integration

HEAD, NODE = "head01", "cn001"
VOLUMES = ("munge-socket", "slurmctld-state")  # what the head and compute units create
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


@pytest.fixture(scope="session")
def slurm_image() -> str:
    """The units' image, built from its context with Docker and loaded into Podman."""
    if os.geteuid() != 0:
        pytest.skip("`hostos image base` needs root")
    started = time.monotonic()
    ref, image = slurm.build_image()
    built = time.monotonic()
    loaded = run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    if loaded.returncode != 0 or f"sha256:{loaded.stdout.strip()}" != image:
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        load = subprocess.run(["podman", "load", "--quiet"], stdin=save.stdout, check=False)
        assert save.wait() == 0 and load.returncode == 0, "docker save | podman load failed"
    print(
        f"slurm image {image[:19]}: built in {built - started:.1f}s, "
        f"in podman {time.monotonic() - built:.1f}s later"
    )
    return ref


def lab_site(site: Path, top: Path) -> Path:
    """The example site with this machine's admin share and the sandbox's ulimits."""
    admin, apps = top / "admin", top / "apps"
    slurm.admin_share(admin, slurm.conf("localhost", free_port(), NODE, "127.0.0.1", free_port()))
    apps.mkdir()
    slurm.bind_shares(site, admin, apps)
    slurm.override(site, "compute", "slurmd", ulimits=None)
    return site


@dataclass(frozen=True)
class Cluster:
    engine: Engine
    site: Path
    head: str  # the namespaces of the two nodes
    node: str

    def apply(self, node: str, namespace: str) -> None:
        args = ["apply", str(self.site), "--node", node, "--engine", self.engine.name]
        result = CliRunner().invoke(app, [*args, "--namespace", namespace])
        print(result.output)
        assert result.exit_code == 0, result.output

    def exec(self, namespace: str, unit: str, *argv: str) -> str:
        name = container_name(unit, namespace)
        done = run([self.engine.name, "exec", name, *argv], check=False)
        assert done.returncode == 0, f"{' '.join(argv)} in {name}: {done.stdout}{done.stderr}"
        return done.stdout.strip()

    def ctl(self, *argv: str) -> str:
        """A Slurm client command, run where slurmctld runs."""
        return self.exec(self.head, "slurmctld", *argv)

    def state(self) -> str:
        return self.ctl("sinfo", "--noheader", "--Node", "--nodes", NODE, "--format", "%T")

    def ended(self, job: str) -> dict[str, str] | None:
        """The job's fields once it has ended."""
        shown = self.ctl("scontrol", "show", "job", job, "--oneliner")
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        return fields if fields["JobState"] in ENDED else None

    def logs(self) -> None:
        for namespace, units in ((self.head, ("munge", "slurmctld")), (self.node, ("slurmd",))):
            for unit in units:
                name = container_name(unit, namespace)
                shown = run([self.engine.name, "logs", "--tail", "20", name], check=False)
                print(f"--- {name}\n{shown.stdout}{shown.stderr}")


@pytest.fixture
def cluster(engine: Engine, slurm_image: str, site: Path, tmp_path: Path) -> Iterator[Cluster]:
    tag = os.urandom(4).hex()
    made = Cluster(engine, lab_site(site, tmp_path), f"sh{tag}", f"sc{tag}")
    try:
        yield made
    finally:
        made.logs()  # shown when the test failed
        for namespace in (made.node, made.head):
            down(engine, namespace=namespace)
            names = [volume_name(v, namespace) for v in VOLUMES]
            run([engine.name, "volume", "rm", "--force", *names], check=False)


def test_head_and_compute_node_run_a_job(cluster: Cluster) -> None:
    started = time.monotonic()
    cluster.apply(HEAD, cluster.head)
    cluster.apply(NODE, cluster.node)
    applied = time.monotonic()
    wait_for(f"{NODE} idle in sinfo", lambda: cluster.state() == "idle", timeout=60)
    idle = time.monotonic()

    # srun: the job step runs in the node's slurmd container, which knows its inventory name
    here = cluster.exec(cluster.node, "slurmd", "hostname")
    out = cluster.ctl(
        "srun", "-w", NODE, "--chdir=/tmp", "sh", "-c", "echo $SLURMD_NODENAME; hostname"
    )
    assert out.splitlines() == [NODE, here]

    # sbatch: a batch job that ends COMPLETED, its output written on the node
    job = cluster.ctl(
        "sbatch",
        "--parsable",
        "-w",
        NODE,
        "--chdir=/tmp",
        "--output=/tmp/job-%j.out",
        "--wrap",
        "echo ran on $SLURMD_NODENAME",
    )
    done = wait_for(f"job {job} to end", lambda: cluster.ended(job), timeout=30)
    assert (done["JobState"], done["ExitCode"]) == ("COMPLETED", "0:0")
    assert cluster.exec(cluster.node, "slurmd", "cat", f"/tmp/job-{job}.out") == f"ran on {NODE}"
    print(
        f"{cluster.engine.name}: applied in {applied - started:.1f}s, {NODE} idle "
        f"{idle - applied:.1f}s later, jobs done {time.monotonic() - idle:.1f}s later"
    )
