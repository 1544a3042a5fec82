"""The node agent inside `hostos supervise --server URL`: heartbeats, config, reboot slots.

Two threads talk to the cluster server through hostos.cluster.client (the standard library's
`http.client`: the node image carries nothing more, and the supervisor starts at every boot):

- the heartbeat loop sends `PUT /v1/nodes/<id>/status` (booted image, unit health, mount
  state, boot id, the site generation applied) every `Timing.heartbeat` seconds, or at the
  longer interval a large fleet's server asks in the answer's `heartbeat_seconds` (pacing.py),
  and acts on the answer's `assigned_image` as `decide` says: once the units are healthy in
  this boot, `POST /v1/steady-state`; when the assigned image is not the booted one, `POST
  /v1/pre-reboot` and, with the slot, the reboot command;
- the config loop long-polls `GET /v1/nodes/<id>/config?after=<gen>&wait=…&image=<assigned>`
  and hands each new generation's spec, checked by `hostos.site.resolve.spec_from_document`, to
  the supervisor; a new assignment wakes the heartbeat loop at once.

Server errors and an unreachable server back off exponentially (capped); the token goes
only into the `Authorization` header, never into a log line or an exception's text.
`decide` holds the agent's choices and nothing that waits.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from hostos.backoff import Backoff
from hostos.cluster import pacing
from hostos.cluster.client import CallFailed, Client, ServerError
from hostos.image import netboot
from hostos.logfmt import kv
from hostos.node.status import NodeStatus

log = logging.getLogger("hostos.agent")

HEALTHY = frozenset({"healthy", "running"})  # as the controller counts a unit healthy
FLEETLOCK = {"fleet-lock-protocol": "true"}
BOOT_ID = "/proc/sys/kernel/random/boot_id"
RETRY = Backoff(initial=1.0, factor=2.0, max=30.0, jitter=0.1)


# -- the decisions (pure) --------------------------------------------------------------------


class Step(StrEnum):
    NOTHING = "nothing"
    STEADY = "steady-state"  # tell the server this boot is up (gives back a slot held)
    REBOOT = "reboot"  # take a reboot slot, then run the reboot command


@dataclass(frozen=True)
class Facts:
    booted: str | None  # the image this boot came from; None: not known
    assigned: str | None  # the image the server wants booted; None: none assigned
    healthy: bool  # the spec is applied and every unit is healthy
    steady_sent: bool  # steady-state was sent (and taken) in this boot
    rebooting: bool  # the reboot command ran and this boot goes on meanwhile


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str


def decide(facts: Facts) -> Decision:
    """What the agent does after a heartbeat. A different assigned image comes first, healthy
    or not: a rollback must reach a node whose units fail on the image it booted."""
    if facts.rebooting:
        return Decision(Step.NOTHING, "the reboot command ran: waiting for the reboot")
    if facts.assigned and facts.booted and facts.assigned != facts.booted:
        return Decision(Step.REBOOT, f"assigned {facts.assigned}, booted {facts.booted}")
    if not facts.healthy:
        return Decision(Step.NOTHING, "units not healthy yet")
    if not facts.steady_sent:
        return Decision(Step.STEADY, "units healthy in this boot")
    return Decision(Step.NOTHING, "steady")


def unit_health(status: NodeStatus) -> tuple[dict[str, str], dict[str, str], bool]:
    """The heartbeat's units {name: health} and mounts {name: state} from the supervisor's
    status, and whether the node counts as healthy: a spec applied by the last reconcile
    and every unit `healthy` (or `running`, without a check)."""
    units = {u.unit: u.health or u.state or "unknown" for u in status.units}
    mounts = {m.name: m.state for m in status.mounts}
    applied = bool(status.generation) and status.reconciled == status.generation
    return units, mounts, applied and all(h in HEALTHY for h in units.values())


# -- the machine's facts ---------------------------------------------------------------------


def read_token(path: str) -> str:
    """The node token in path (one word); ValueError naming the file, never the token."""
    try:
        with open(path) as file:
            token = file.read().strip()
    except OSError as exc:
        raise ValueError(f"token file {path}: {exc.strerror or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"token file {path}: expected one token on one line")
    return token


def current_boot_id(path: str = BOOT_ID) -> str:
    try:
        with open(path) as file:
            return file.read().strip() or uuid.uuid4().hex
    except OSError:
        return uuid.uuid4().hex


# -- HTTP ------------------------------------------------------------------------------------


def boot_endpoint_image(server: str, mac: str, timeout: float = 10.0) -> str | None:
    """The image `GET /boot/<mac>.ipxe` would boot this node into (its `hostos.image=`):
    what a node booted by that script runs."""
    reply = Client(server).request("GET", f"/boot/{quote(mac, safe='')}.ipxe", timeout=timeout)
    if reply.status != 200:
        return None
    return netboot.script_args(reply.text).get(netboot.Arg.IMAGE)


# -- the agent -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    heartbeat: float = 10.0  # seconds between heartbeats, at least (the server may ask more)
    wait: float = 60.0  # seconds a config long-poll waits on the server
    retry: Backoff = RETRY  # after a failure: 1 s doubling to 30 s, with 10 % jitter
    reboot_retry: float = 300.0  # run the reboot command again when still up after this


@dataclass(frozen=True)
class Settings:
    server: str
    node: str
    token: str = field(repr=False)
    booted_image: str | None = None
    boot_id: str = field(default_factory=current_boot_id)
    reboot_command: str = "reboot"
    group: str = "default"  # FleetLock's default group: the node's role, on the server
    timing: Timing = Timing()


Snapshot = Callable[[], NodeStatus]
Deliver = Callable[[Any], None]  # a RoleSpec, or the SiteError of a spec that is not one


class Agent:
    def __init__(
        self,
        settings: Settings,
        snapshot: Snapshot,
        deliver: Deliver | None = None,
        run: Callable[[str], int] | None = None,
    ) -> None:
        """snapshot: the supervisor's status (units, mounts, generation, reconciled);
        deliver: where a new spec goes; run: runs the reboot command, its exit status."""
        self.settings = settings
        self.snapshot = snapshot
        self.deliver = deliver or (lambda spec: None)
        self.run = run or shell
        self.http = Client(settings.server, settings.token)
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.assigned: str | None = None
        self.after = 0  # the last site generation the config loop saw
        self.applied = 0  # the last one whose spec was handed over (a valid one)
        self.steady_sent = False
        self.rebooting_since: float | None = None
        self.paced = 0.0  # the least heartbeat interval the server asked (0: none)
        self.said: dict[str, str] = {}  # loop → the last problem logged (each said once)
        self.threads: list[threading.Thread] = []
        self.node_path = f"/v1/nodes/{quote(settings.node, safe='')}"

    def start(self) -> None:
        log.info(
            kv(
                "agent-started",
                server=self.settings.server,
                node=self.settings.node,
                booted_image=self.settings.booted_image,
                boot_id=self.settings.boot_id,
            )
        )
        for name, loop in (("heartbeat", self._heartbeats), ("config", self._configs)):
            thread = threading.Thread(target=loop, name=f"agent-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both loops: the heartbeat's within timeout (a request under way ends), the
        config loop's long-poll with the process (a daemon thread), not holding up a stop."""
        self.stop_event.set()
        self.wake.set()
        for thread in self.threads:
            if thread.name != "agent-config":
                thread.join(timeout)

    # -- heartbeats and what follows them --------------------------------------------------

    def _loop(
        self,
        name: str,
        once: Callable[[], object],
        idle: Callable[[], float],
        pause: threading.Event,
    ) -> None:
        """once() until stopped: idle() seconds after a success (unless pause is set), a
        growing backoff after a failure; each problem logged once, and the way back."""
        failures = 0  # in a row
        while not self.stop_event.is_set():
            try:
                once()
            except CallFailed as exc:
                self._say(name, exc.problem)
                failures += 1
                delay = self.settings.timing.retry.delay(failures, random.random())
            else:
                if failures:
                    log.info(kv("agent-reconnected", loop=name, server=self.settings.server))
                failures = 0
                self.said.pop(name, None)
                delay = idle()
            if delay > 0:
                pause.wait(delay)
            if pause is self.wake:
                self.wake.clear()

    def _heartbeats(self) -> None:
        self._loop("heartbeat", self.beat, self.interval, self.wake)

    def interval(self) -> float:
        """Seconds to the next heartbeat: the agent's own, or the server's pace when longer."""
        return max(self.settings.timing.heartbeat, self.paced)

    def _follow_pace(self, record: Any) -> None:
        before = self.interval()
        self.paced = pacing.asked(record)
        if self.interval() != before:
            log.info(kv("heartbeat-paced", seconds=self.interval()))

    def beat(self) -> Decision:
        """One heartbeat and the step it calls for. CallFailed (Unreachable, ServerError)."""
        units, mounts, healthy = unit_health(self.snapshot())
        body = {
            "booted_image": self.settings.booted_image,
            "units": units,
            "mounts": mounts,
            "boot_id": self.settings.boot_id,
            "generation": self.applied,
        }
        record = self._call("PUT", f"{self.node_path}/status", body)
        self._follow_pace(record)
        with self.lock:
            self.assigned = record.get("assigned_image") if isinstance(record, dict) else None
        decision = decide(self._facts(healthy))
        if decision.step is Step.STEADY:
            self._fleetlock("/v1/steady-state")
            self.steady_sent = True
            log.info(kv("steady-state", node=self.settings.node, image=self.settings.booted_image))
        elif decision.step is Step.REBOOT:
            self._reboot(decision)
        return decision

    def _facts(self, healthy: bool) -> Facts:
        since = self.rebooting_since
        if since is not None and time.monotonic() - since > self.settings.timing.reboot_retry:
            log.warning(
                kv(
                    "reboot-overdue",
                    node=self.settings.node,
                    waited=round(time.monotonic() - since),
                )
            )
            self.rebooting_since = since = None
        with self.lock:
            assigned = self.assigned
        return Facts(
            self.settings.booted_image, assigned, healthy, self.steady_sent, since is not None
        )

    def _reboot(self, decision: Decision) -> None:
        try:
            self._fleetlock("/v1/pre-reboot")
        except ServerError as exc:
            if exc.status != 409:
                raise
            self._say("reboot-slot", f"waiting for a reboot slot: {exc}")
            return
        self.said.pop("reboot-slot", None)
        log.info(
            kv(
                "rebooting",
                node=self.settings.node,
                reason=decision.reason,
                command=self.settings.reboot_command,
            )
        )
        self.rebooting_since = time.monotonic()
        status = self.run(self.settings.reboot_command)
        if status != 0:
            log.error(kv("reboot-failed", command=self.settings.reboot_command, status=status))
            self.rebooting_since = None

    def _fleetlock(self, path: str) -> None:
        self._call(
            "POST",
            path,
            {"client_params": {"id": self.settings.node, "group": self.settings.group}},
            FLEETLOCK,
        )

    # -- the config long-poll --------------------------------------------------------------

    def _configs(self) -> None:
        self._loop("config", self.poll, lambda: 0.0, self.stop_event)  # the server waits

    def poll(self) -> bool:
        """One long-poll; True when it brought news (a generation or an assignment)."""
        wait = self.settings.timing.wait
        query = f"?after={self.after}&wait={wait:g}"
        with self.lock:
            assigned = self.assigned
        if assigned is not None:  # also answer when the assignment moves off it
            query += f"&image={quote(assigned, safe='')}"
        reply = self.http.request("GET", f"{self.node_path}/config{query}", timeout=wait + 15)
        if reply.status == 304:
            return False
        config = self.http.answer(reply)
        if not isinstance(config, dict):
            raise CallFailed(self.settings.server, "the config is not a JSON object")
        with self.lock:
            moved = config.get("assigned_image") != self.assigned
            self.assigned = config.get("assigned_image")
        generation = config.get("generation")
        if isinstance(generation, int) and generation > self.after:
            self._hand_over(generation, config)
        if moved:
            self.wake.set()  # act on the new assignment now, not at the next heartbeat
        return True

    def _hand_over(self, generation: int, config: Mapping[str, Any]) -> None:
        from hostos.errors import SiteError
        from hostos.site.resolve import spec_from_document

        where = f"{self.settings.server} generation {generation}"
        try:
            spec: Any = spec_from_document(config.get("spec"), where)
        except SiteError as exc:
            for problem in exc.problems:
                log.error(kv("config-invalid", problem=str(problem)))
            spec = exc
        else:
            log.info(
                kv("config", generation=generation, role=config.get("role"), units=len(spec.units))
            )
            self.applied = generation
        self.after = generation
        self.deliver(spec)

    # -- requests --------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        return self.http.call(method, path, body, headers)

    def _say(self, loop: str, problem: str) -> None:
        """Log a loop's problem once, not at every retry."""
        if self.said.get(loop) != problem:
            self.said[loop] = problem
            log.warning(kv("agent-" + loop, server=self.settings.server, problem=problem))


def shell(command: str) -> int:
    """Run the reboot command; its exit status (127 when it cannot be run)."""
    try:
        return subprocess.run(["/bin/sh", "-c", command], check=False).returncode
    except OSError:
        return 127
