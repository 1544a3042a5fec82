"""The simulated cluster: sim_node.py processes in network namespaces, "rebooted" by restart.

`SimCluster` starts each node's process in its namespace (netns.Lab) and watches them: a
process that exits 75 ran its reboot command, and is started again `delay` seconds later
(never, for a node that is `gone`); any other exit is a crash, recorded as an error.  What
happened is read back from the nodes' event files: the order of reboots, the image each
booted, and how many nodes were out at once (from a reboot until the steady-state of the
boot that follows it).

With a Slurm lab (`slurm=`, see slurm_lab.py) each boot starts the node's slurmd too, and
each reboot first kills everything in the node's namespace (slurmd, slurmstepd, the jobs),
as a real reboot does; `cluster(..., slurm=slurm)` writes and starts it for the nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from netns import Lab
from server_fixtures import ROOT, Server
from slurm_lab import SlurmLab

RUNNER = Path(__file__).with_name("sim_node.py")
REBOOTED = 75
IDS = [f"n{i}" for i in range(1, 9)]


@dataclass
class SimNode:
    id: str
    mac: str
    token_file: Path
    bad: frozenset[str] = frozenset()  # images on which its units never get healthy
    gone: bool = False  # never comes back from its next reboot
    delay: float = 0.5  # seconds a reboot takes
    process: subprocess.Popen[bytes] | None = None
    up_at: float | None = None  # when the harness starts it again
    log: IO[bytes] | None = None


@dataclass
class SimCluster:
    lab: Lab
    server: str
    tmp: Path
    nodes: dict[str, SimNode]
    slurm: SlurmLab | None = None  # started: each boot starts the node's slurmd
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _start(self, node: SimNode) -> None:
        if self.slurm is not None:
            self.slurm.boot(node.id)
        if node.log is None:
            node.log = (self.tmp / f"{node.id}.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        argv = [
            sys.executable,
            str(RUNNER),
            "--server",
            self.server,
            "--node",
            node.id,
            "--mac",
            node.mac,
            "--token-file",
            str(node.token_file),
            "--events",
            str(self.events_file(node.id)),
            "--bad",
            ",".join(node.bad),
        ]
        node.process = self.lab.run(node.id, argv, env=env, out=node.log, cwd=self.tmp)
        node.up_at = None

    def events_file(self, node: str) -> Path:
        return self.tmp / f"{node}.events"

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for node in self.nodes.values():
                if node.up_at is not None and now >= node.up_at:
                    self._start(node)
                process = node.process
                if process is None or process.poll() is None:
                    continue
                node.process = None
                if process.returncode == REBOOTED:
                    self._power_off(node)
                    if not node.gone:
                        node.up_at = now + node.delay
                else:
                    self.errors.append(
                        f"{node.id} exited {process.returncode}: {self.log_text(node.id)[-2000:]}"
                    )

    def _power_off(self, node: SimNode) -> None:
        """Everything left in node's namespace dies, as on a real machine's reboot."""
        if self.slurm is not None:
            self.slurm.halt(node.id)  # its slurmd reaped too
        else:
            self.lab.kill_all(node.id)

    def reboot(self, node: str) -> None:
        """Reboot node now, as its reboot command does (SIGUSR1 to its process; no reboot
        event, which records the agent's reboots only).  The node must be up."""
        process = self.nodes[node].process
        assert process is not None and process.poll() is None, f"{node} is not up"
        process.send_signal(signal.SIGUSR1)

    @contextmanager
    def running(self) -> Iterator[SimCluster]:
        for node in self.nodes.values():
            self._start(node)
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        try:
            yield self
        finally:
            self._stop.set()
            watcher.join(timeout=10)
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is None:
                    node.process.terminate()
            for node in self.nodes.values():
                if node.process is not None:
                    try:
                        node.process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        node.process.kill()
                        node.process.wait()
                self._power_off(node)
                if node.log is not None:
                    node.log.close()
        assert not self.errors, self.errors

    # -- what happened -------------------------------------------------------------------

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every node's events in time order (of one kind)."""
        found = []
        for node in self.nodes:
            path = self.events_file(node)
            if path.exists():
                found += [json.loads(line) for line in path.read_text().splitlines() if line]
        return sorted(
            (e for e in found if kind is None or e["event"] == kind), key=lambda e: float(e["t"])
        )

    def order(self) -> list[str]:
        """Node ids in the order their reboots began."""
        return [e["node"] for e in self.events("reboot")]

    def booted(self) -> dict[str, str]:
        """Each node's image in its last boot."""
        return {e["node"]: e["image"] for e in self.events("boot")}

    def steady(self) -> set[str]:
        """The nodes that sent steady-state in their current boot."""
        last: dict[str, str] = {}
        for e in self.events():
            if e["event"] in ("boot", "steady"):
                last[e["node"]] = e["event"]
        return {n for n, kind in last.items() if kind == "steady"}

    def max_out(self) -> int:
        """The most nodes out at once: each from a reboot to the next steady-state."""
        out: set[str] = set()
        most = 0
        for e in self.events():
            if e["event"] == "reboot":
                out.add(e["node"])
                most = max(most, len(out))
            elif e["event"] == "steady":
                out.discard(e["node"])
        return most

    def log_text(self, node: str) -> str:
        path = self.tmp / f"{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def mac(index: int) -> str:
    return f"52:54:00:5e:00:{index:02x}"


def cluster(
    lab: Lab,
    server: Server,
    tmp: Path,
    count: int,
    slurm: SlurmLab | None = None,
    role: Mapping[str, Any] | None = None,
    **special: dict[str, Any],
) -> SimCluster:
    """Publish a site of count nodes n1… of role compute on img-1 (each with its MAC; role
    adds to the role's entry), register both images, give each node a namespace and a token
    file, and start slurm (if given) for these nodes; special: SimNode fields per node."""
    ids = IDS[:count] if count <= len(IDS) else [f"n{i}" for i in range(1, count + 1)]
    site = {
        "roles": {
            "compute": {
                "role": "compute",
                "image": "img-1",
                "mounts": [],
                "units": [{"name": "app", "image": "busybox"}],
                **(role or {}),
            }
        },
        "nodes": {n: {"role": "compute", "mac": mac(i)} for i, n in enumerate(ids, 1)},
    }
    nodes_dir = tmp / "nodes"
    nodes_dir.mkdir()
    with server.client() as admin:
        reply = admin.post("/v1/site", json=site)
        assert reply.status_code == 200, reply.text
        for image in ("img-1", "img-2"):
            assert admin.post(f"/v1/images/{image}").status_code == 200
        nodes = {}
        for i, node in enumerate(ids, 1):
            token = nodes_dir / f"{node}.token"
            token.write_text(admin.post(f"/v1/tokens/nodes/{node}").json()["token"] + "\n")
            lab.add(node, mac(i))
            nodes[node] = SimNode(node, mac(i).replace(":", "-"), token, **special.get(node, {}))
    if slurm is not None:
        slurm.start(ids)
    return SimCluster(lab, server.url, nodes_dir, nodes, slurm)


def all_steady(sim: SimCluster, server: Server) -> bool:
    """Every node steady in its boot, as the server's records say."""
    with server.client() as admin:
        records = admin.get("/v1/nodes").json()
    return len(records) == len(sim.nodes) and all(
        r["boot_id"] and r["steady_boot_id"] == r["boot_id"] for r in records
    )
