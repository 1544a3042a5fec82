"""A user-space NFS server for qemu guests (the image bench's and the e2e tests'):
nfs-ganesha (VFS backend) exporting a directory of the host as /export, on a port of its
own, with rpcbind started first (without it ganesha exits silently after 10 s).  The host
kernel has no NFS client: a guest mounts the export as 10.0.2.2:/export/... with `port=N`,
and the host reads the files straight from the exported directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.processes import free_port

PACKAGES = ("nfs-ganesha", "nfs-ganesha-vfs", "rpcbind")
RPCBIND_SOCKET = "/run/rpcbind.sock"

CONFIG = """\
NFS_CORE_PARAM {{
    Protocols = 3, 4;
    NFS_Port = {port};
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    RecoveryBackend = fs;
    RecoveryRoot = "{state}";
    Graceless = true;
    Allow_Numeric_Owners = true;
    Only_Numeric_Owners = true;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = /export;
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    SecType = sys;
    FSAL {{ Name = VFS; }}
    CLIENT {{ Clients = *; Access_Type = RW; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def missing_programs() -> list[str]:
    return [
        p
        for p in ("ganesha.nfsd", "rpcbind")
        if shutil.which(p) is None and not Path("/usr/sbin", p).exists()
    ]


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class NfsServer:
    export: Path  # the exported directory: 10.0.2.2:/export/... in the guest
    port: int
    log: Path

    def mount_options(self) -> str:
        return f"vers=4.1,port={self.port}"


def _rpcbind_running() -> bool:
    return answers(111)


@contextlib.contextmanager
def rpcbind() -> Iterator[None]:
    """rpcbind on port 111: the one running is used as is; one started here is stopped."""
    if _rpcbind_running():
        yield
        return
    Path("/run/rpcbind").mkdir(exist_ok=True)
    process = subprocess.Popen(
        [shutil.which("rpcbind") or "/usr/sbin/rpcbind", "-f", "-w"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _rpcbind_running():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rpcbind did not start (exit {process.poll()})")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def ganesha(workdir: Path) -> Iterator[NfsServer]:
    """nfs-ganesha exporting workdir/export as /export until the block ends."""
    export = workdir / "export"
    state = workdir / "state"
    for path in (export, state):
        path.mkdir(parents=True, exist_ok=True)
    os.chmod(export, 0o777)
    port = free_port()
    config = workdir / "ganesha.conf"
    config.write_text(CONFIG.format(port=port, state=state, export=export))
    log = workdir / "ganesha.log"
    with rpcbind():
        process = subprocess.Popen(
            [
                shutil.which("ganesha.nfsd") or "/usr/bin/ganesha.nfsd",
                "-F",
                "-f",
                str(config),
                "-L",
                str(log),
                "-p",
                str(workdir / "ganesha.pid"),
                "-N",
                "NIV_EVENT",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not answers(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(
                        f"ganesha did not answer on port {port} (exit {process.poll()}):\n{tail}"
                    )
                time.sleep(0.05)
            yield NfsServer(export, port, log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
