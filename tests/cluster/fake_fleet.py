"""Simulated nodes that talk real HTTP to a `hostos serve`: what the node agent will do.

Each `FakeNode` heartbeats its booted image and unit health, sends steady-state once its
units are healthy after a boot, and when the server assigns an image it has not booted takes
its FleetLock slot (pre-reboot) and "reboots": silent for `delay` seconds, then up on the
assigned image with a new boot id.  A `Fleet` ticks every node from one thread and records
what an observer would measure: which nodes were out (from a granted pre-reboot until
steady-state) at once, and in which order they rebooted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from server_fixtures import Server

FLEETLOCK = {"fleet-lock-protocol": "true"}
TICK = 0.25  # seconds between two heartbeats of a node


@dataclass
class FakeNode:
    id: str
    token: str
    booted: str = "img-1"
    delay: float = 0.5  # seconds a reboot takes
    bad: frozenset[str] = frozenset()  # images on which its units never get healthy
    gone: bool = False  # never comes back from its next reboot
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    down_until: float | None = None
    target: str | None = None
    steady_sent: bool = False
    out: bool = False  # holds a slot it took for a reboot, until steady-state

    def tick(self, client: httpx.Client, now: float, fleet: Fleet) -> None:
        if self.down_until is not None:
            if now < self.down_until or self.gone:
                return
            self.booted, self.boot_id = str(self.target), uuid.uuid4().hex
            self.down_until, self.steady_sent = None, False
        healthy = self.booted not in self.bad
        beat = {
            "booted_image": self.booted,
            "boot_id": self.boot_id,
            "units": {"app": "healthy" if healthy else "unhealthy"},
        }
        reply = client.put(f"/v1/nodes/{self.id}/status", json=beat)
        reply.raise_for_status()
        assigned = reply.json().get("assigned_image")
        lock = {"client_params": {"id": self.id, "group": "default"}}
        if healthy and not self.steady_sent:
            client.post("/v1/steady-state", json=lock, headers=FLEETLOCK).raise_for_status()
            self.steady_sent = True
            fleet.back(self)
        if assigned and assigned != self.booted:
            taken = client.post("/v1/pre-reboot", json=lock, headers=FLEETLOCK)
            if taken.status_code == 200:
                self.target, self.down_until = assigned, now + self.delay
                fleet.rebooting(self)


class Fleet:
    def __init__(self, server: Server, nodes: list[FakeNode]) -> None:
        self.server = server
        self.nodes = {n.id: n for n in nodes}
        self.order: list[str] = []  # node ids in the order they started rebooting
        self.max_out = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: dict[str, httpx.Client] = {}

    def switch(self, server: Server) -> None:
        """Talk to another server (a restarted one, another replica) from the next tick."""
        with self._lock:
            self.server = server
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def rebooting(self, node: FakeNode) -> None:
        self.order.append(node.id)
        node.out = True
        self.max_out = max(self.max_out, sum(1 for n in self.nodes.values() if n.out))

    def back(self, node: FakeNode) -> None:
        node.out = False

    def _client(self, node: FakeNode) -> httpx.Client:
        if node.id not in self._clients:
            self._clients[node.id] = self.server.client(node.token)
        return self._clients[node.id]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for node in self.nodes.values():
                    try:
                        node.tick(self._client(node), time.time(), self)
                    except httpx.HTTPError:
                        pass  # the server restarting: the agent tries again next tick
                    except BaseException as exc:  # a test failure: report it
                        self.errors.append(exc)
            self._stop.wait(TICK)

    @contextmanager
    def running(self) -> Iterator[Fleet]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)
            for client in self._clients.values():
                client.close()
        assert not self.errors, self.errors


def setup_fleet(
    server: Server,
    count: int,
    role: str = "compute",
    rollout: dict[str, object] | None = None,
    **special: dict[str, object],
) -> Fleet:
    """Publish a site of count nodes n1… of role (on img-1, with the role's rollout policy
    when given), register img-1 and img-2, and make a fake node of each with its own token;
    special maps ids to FakeNode fields."""
    ids = [f"n{i}" for i in range(1, count + 1)]
    policy = {"rollout": rollout} if rollout is not None else {}
    with server.client() as admin:
        site = {
            "roles": {role: {"role": role, "image": "img-1", "units": [], **policy}},
            "nodes": {i: {"role": role} for i in ids},
        }
        assert admin.post("/v1/site", json=site).status_code == 200
        for image in ("img-1", "img-2"):
            assert admin.post(f"/v1/images/{image}").status_code == 200
        tokens = {i: admin.post(f"/v1/tokens/nodes/{i}").json()["token"] for i in ids}
    return Fleet(
        server,
        [
            FakeNode(i, tokens[i], **special.get(i, {}))  # type: ignore[arg-type]
            for i in ids
        ],
    )


def wait_for(what: Callable[[], object], timeout: float, every: float = 0.25) -> object:
    """what() once it is truthy; AssertionError with its last value after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: last {value!r}")
        time.sleep(every)
