"""A booted node runs the example site's compute role and takes a Slurm job.

The host image boots under qemu (TCG) as `cn001` of the example inventory, with 1 GiB of
RAM: the slurm image (about 170 MB unpacked) lives in the node's RAM-backed container
storage, beside the root, which a 256 MiB node cannot hold.  nfs-ganesha on the host
exports the node's site, the admin share (slurm/slurm.conf and cgroup.conf, munge/munge.key)
and an empty
apps share; the site is the example one with two changes a registry-less lab needs: the
roles' shares are this server's, and munge and slurmd run the image from a docker-archive
on the site (built once with Docker from containers/slurm) instead of building it on the
node.  The unit files are the example's, as on Docker and Podman.

The head role (munge + slurmctld) runs on the host with Docker, from a copy of the site
whose admin share is the same exported directory: one slurm.conf, one munge key.  Slurm
addresses both ways through qemu's user network:
- slurmd → slurmctld: SlurmctldHost=localhost(ADDRESS) with a global address of this
  machine, which the guest reaches through qemu (10.0.2.2 would not be this machine for
  the head's own client commands);
- slurmctld and srun → slurmd: NodeAddr=127.0.0.1 on a port qemu forwards into the guest,
  where slurmd listens on the same port; the guest sees these connections coming from
  10.0.2.2 and answers srun's I/O there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import slurm
from bench.nfs import NfsServer
from bench.processes import HOSTOS, free_port
from hostos.engine.base import container_name, volume_name
from hostos.engine.connect import connect
from hostos.engine.kind import EngineKind
from hostos.image.boot import Image
from hostos.node.converge import down
from hostos.process import run

pytestmark = pytest.mark.e2e

HEAD, NODE = "head01", "cn001"
MEM = "1G"  # the slurm image unpacked in RAM (tmpfs container storage), beside the root
BOOT_TIMEOUT = 240  # TCG on a busy 2-core machine: generous
ARCHIVE = "images/slurm.tar"  # in the node's site
HEAD_VOLUMES = ("munge-socket", "slurmctld-state")


@pytest.fixture(scope="session")
def slurm_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units' image as a docker-archive, for the node to load from its site."""
    if os.geteuid() != 0:
        pytest.skip("`hostos image base` needs root")
    ref, _ = slurm.build_image()
    out = tmp_path_factory.mktemp("slurm-image") / "slurm.tar"
    run(["docker", "save", "--output", str(out), ref])
    return out


def host_address() -> str:
    """A global IPv4 address of this machine: the guest reaches it through qemu's network,
    and this machine's own processes reach it too."""
    shown = run(["ip", "-4", "-o", "addr", "show", "scope", "global"]).stdout.split()
    addresses = [shown[i + 1].split("/")[0] for i, word in enumerate(shown) if word == "inet"]
    assert addresses, "this machine has no global IPv4 address for the guest to reach"
    return addresses[0]


def node_site(site: Path, nfs: NfsServer, archive: Path) -> Path:
    """The example site as the node reads it over NFS: the shares of this NFS server, and
    the slurm image from a docker-archive on the site."""
    options = f"vers=4.1, port={nfs.port}"
    shutil.copytree(slurm.EXAMPLE_SITE, site)
    (site / "roles" / "base.yaml").write_text(
        "role: base\nmounts:\n"
        f'  - {{name: admin, type: nfs4, source: "10.0.2.2:/export/admin", target: /mnt/admin,'
        f" options: [{options}, ro, soft, timeo=50]}}\n"
        f'  - {{name: apps, type: nfs4, source: "10.0.2.2:/export/apps", target: /apps,'
        f" options: [{options}, ro]}}\n"
    )
    (site / "images").mkdir()
    os.link(archive, site / ARCHIVE)  # same filesystem: no 170 MB copy
    image = f"docker-archive:/run/hostos/site/{ARCHIVE}"
    for unit in ("munge", "slurmd"):
        slurm.override(site, "compute", unit, image=image, build=None)
    return site


@dataclass(frozen=True)
class Head:
    namespace: str

    def ctl(self, *argv: str, check: bool = True) -> str:
        """A Slurm client command, run in the head's slurmctld container."""
        name = container_name("slurmctld", self.namespace)
        done = run(["docker", "exec", name, *argv], check=False)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
        return done.stdout.strip() if done.returncode == 0 else ""

    def state(self) -> str:
        return self.ctl("sinfo", "--noheader", "-N", "-n", NODE, "-o", "%T", check=False)

    def logs(self) -> str:
        out = []
        for unit in ("munge", "slurmctld"):
            name = container_name(unit, self.namespace)
            shown = run(["docker", "logs", "--tail", "30", name], check=False)
            out.append(f"--- {name}\n{shown.stdout}{shown.stderr}")
        return "\n".join(out)


@contextlib.contextmanager
def head_role(export: Path, tmp_path: Path) -> Iterator[Head]:
    """munge and slurmctld of the example's head role, on this machine with Docker."""
    site = tmp_path / "head-site"
    shutil.copytree(slurm.EXAMPLE_SITE, site)
    slurm.bind_shares(site, export / "admin", export / "apps")
    made = Head("e2e" + os.urandom(3).hex())
    try:
        applied = subprocess.run(
            [
                *HOSTOS,
                "apply",
                str(site),
                "--node",
                HEAD,
                "--engine",
                "docker",
                "--namespace",
                made.namespace,
            ],
            cwd=slurm.ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield made
    finally:
        print(made.logs())
        engine = connect(EngineKind.docker)
        try:
            down(engine, namespace=made.namespace)
        finally:
            engine.close()
        names = [volume_name(v, made.namespace) for v in HEAD_VOLUMES]
        run(["docker", "volume", "rm", "--force", *names], check=False)


def test_booted_compute_node_runs_a_slurm_job(
    boot: Any,
    host_image: Image,
    nfs_server: NfsServer,
    slurm_archive: Path,
    tmp_path: Path,
) -> None:
    export = nfs_server.export
    slurmd_port, ctld_port = free_port(), free_port()
    conf = slurm.conf(f"localhost({host_address()})", ctld_port, NODE, "127.0.0.1", slurmd_port)
    slurm.admin_share(export / "admin", conf)
    (export / "apps").mkdir()
    node_site(export / "site", nfs_server, slurm_archive)
    append = (
        f"hostos.node={NODE} hostos.site=10.0.2.2:/export/site "
        f"hostos.site_opts={nfs_server.mount_options()},soft"
    )
    forwards = (str(slurmd_port),)
    with (
        head_role(export, tmp_path) as head,
        boot(host_image, append, mem=MEM, forwards=forwards) as node,
    ):
        started = node.wait_for(r"event=unit-started unit=slurmd ", BOOT_TIMEOUT)[0]
        node.poll(f"{NODE} idle in sinfo", lambda: head.state() == "idle", 120)
        idle = time.monotonic() - node.console.started
        out = head.ctl("srun", "-w", NODE, "--chdir=/tmp", "hostname")
        assert out.splitlines() == [NODE], out
        ran = time.monotonic() - node.console.started
        assert node.power_off(180) == 0
    print(
        f"\nTIMINGS (s since qemu start): slurmd started {started:.1f}, "
        f"{NODE} idle {idle:.1f}, srun done {ran:.1f}"
    )
