"""Network namespaces for the simulated cluster: one bridge, one namespace per node.

`Lab` makes a Linux bridge with the first address of a private /24 (the cluster server
listens there, in the root namespace) and, per node, a namespace holding one end of a veth
pair, renamed `eth0`, with the node's MAC and its own address; the other end is a port of
the bridge.  `lab.run(node, argv)` starts a process inside the node's namespace
(`ip netns exec`).  Everything made is removed by `close()` (the `lab` fixture calls it),
and names carry a per-lab tag, so labs of parallel test runs never meet.

Traffic stays between the namespaces and the bridge: no route out, no NAT.  Note for a
server run *inside* a namespace: `http.server.HTTPServer.server_bind` asks reverse DNS for
the address (`socket.getfqdn`), which waits 10 s there with no resolver; bind a plain
`socketserver.TCPServer` (or set `server_name` yourself) instead.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"


def ip(*args: str) -> None:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def available() -> str:
    """Why namespaces cannot be made here, or "" when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "no ip(8) (iproute2)"
    return ""


@dataclass(frozen=True)
class Namespace:
    node: str
    name: str  # the namespace's name (ip netns)
    address: str  # eth0's address inside it
    mac: str


class Lab:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.subnet = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
        self.bridge = f"hbr{self.tag}"
        self.address = f"{self.subnet}.1"  # the bridge's: the server listens here
        self.nodes: dict[str, Namespace] = {}
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, node: str, mac: str) -> Namespace:
        """A namespace for node: eth0 with mac and the next address, lo up."""
        index = len(self.nodes) + 10
        name, host_end = f"hn{self.tag}{index}", f"hv{self.tag}{index}"
        ip("netns", "add", name)
        namespace = Namespace(node, name, f"{self.subnet}.{index}", mac)
        self.nodes[node] = namespace  # from here on close() removes it
        ip("link", "add", host_end, "type", "veth", "peer", "name", f"hp{self.tag}{index}")
        ip("link", "set", f"hp{self.tag}{index}", "netns", name)
        ip("link", "set", host_end, "master", self.bridge)
        ip("link", "set", host_end, "up")
        inside = ("netns", "exec", name, IP)
        ip(*inside, "link", "set", f"hp{self.tag}{index}", "name", "eth0")
        ip(*inside, "link", "set", "eth0", "address", mac)
        ip(*inside, "addr", "add", f"{namespace.address}/24", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        return namespace

    def run(
        self,
        node: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        out: IO[Any] | int | None = None,
        sysfs: bool = True,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """argv started inside node's namespace; its output (both streams) to out.

        `ip netns exec` mounts a /sys of the namespace (its own network devices), which hides
        the machine's cgroup mounts under /sys/fs/cgroup; with sysfs=False argv only enters
        the network namespace (nsenter) and sees the machine's /sys, as slurmd needs."""
        name = self.nodes[node].name
        enter = [IP, "netns", "exec", name] if sysfs else [NSENTER, f"--net=/run/netns/{name}"]
        return subprocess.Popen(
            [*enter, *argv],
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            **kwargs,
        )

    def pids(self, node: str) -> list[int]:
        """The live processes whose network namespace is node's (what `ip netns pids` lists,
        without the zombies, which no signal can end)."""
        want = os.stat(f"/run/netns/{self.nodes[node].name}").st_ino
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino != want:
                    continue
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        continue
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            found.append(int(entry))
        return found

    def kill_all(self, node: str, timeout: float = 10.0) -> None:
        """SIGKILL every process in node's namespace, as a machine's power-off ends them,
        until none is left (a process may fork while its siblings die)."""
        deadline = time.monotonic() + timeout
        while pids := self.pids(node):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node}: processes {pids} outlive SIGKILL")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def close(self) -> None:
        for namespace in self.nodes.values():  # the veth pair goes with its namespace
            subprocess.run(
                [IP, "netns", "del", namespace.name], capture_output=True, timeout=30, check=False
            )
        subprocess.run(
            [IP, "link", "del", self.bridge], capture_output=True, timeout=30, check=False
        )
        self.nodes.clear()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A bridge with namespaces added by the test, all removed afterwards."""
    why = available()
    if why:
        pytest.skip(why)
    made = Lab()
    try:
        yield made
    finally:
        made.close()
