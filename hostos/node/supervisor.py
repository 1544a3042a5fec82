"""The node supervisor: one reconcile loop fed by events.

Events come from the site files (watchdog, debounced), the engine's event
stream (a container died, went unhealthy), the role mounts (up, down, back),
crash backoff timers and a slow periodic resync.  Each reconcile reuses the
apply path: it notes the exits it finds, computes the holds (mounts not ready,
crash backoff), then `prepare` plans under them (units that must wait, and
their dependents, get WAIT actions; their images are not fetched) and
`execute` runs the rest.  The supervisor, not the engine's restart policy,
restarts units, so order and health gates hold after every crash and every
engine restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hostos.backoff import Backoff
from hostos.engine.base import Engine, EngineError, Observed, container_name
from hostos.engine.connect import StartingService
from hostos.engine.kind import EngineKind
from hostos.errors import SiteError
from hostos.logfmt import kv
from hostos.mounts import state as mount_state
from hostos.node import crashes as crash_rules
from hostos.node.converge import current, owned, prepare, stop_batches
from hostos.node.events import (
    ContainerChanged,
    EngineLost,
    Event,
    Events,
    MountsChanged,
    Reap,
    SiteChanged,
    SpecArrived,
    Stop,
    watch_engine,
    watch_site,
)
from hostos.node.execute import Options, Outcome, execute, stop_timeout
from hostos.node.holds import Holds
from hostos.node.plan import Action, Kind
from hostos.node.render import image_ref, image_ref_of
from hostos.node.status import MountStatus, NodeStatus, UnitStatus
from hostos.node.status_server import StatusServer
from hostos.node.status_socket import socket_path
from hostos.site.load import load_site
from hostos.site.resolve import ResolvedUnit, RoleSpec, resolve_node, resolve_role

log = logging.getLogger("hostos.node.supervisor")

RESYNC = 60.0  # seconds between full resyncs when nothing happens
DEBOUNCE = 0.1  # quiet time after a site file change before reloading
RECONNECT = Backoff(initial=1.0, factor=2.0, max=30.0)  # reconnecting to the engine


class Feeder(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Feed:
    """Where specs come from instead of the site directory: hostos.cli.supervise makes one
    that starts the cluster agent, which heartbeats the supervisor's snapshot and delivers
    each spec the server sends (a RoleSpec, or the SiteError of one that is not)."""

    source: str  # what the log names as the source (the server's URL)
    make: Callable[[Callable[[], NodeStatus], Callable[[RoleSpec | SiteError], None]], Feeder]


@dataclass(frozen=True)
class Settings:
    site: str
    node: str | None = None
    role: str | None = None
    engine: EngineKind = EngineKind.auto
    namespace: str = ""
    socket: str | None = None  # status API; default from the namespace
    resync: float = RESYNC
    debounce: float = DEBOUNCE
    concurrency: int = 8
    podman_socket: str | None = None  # where to start a private podman service if need be
    feed: Feed | None = None  # the spec comes from there (a cluster server), not the site


@dataclass
class UnitState:
    """What the status API says of a unit beyond what the engine knows."""

    held: str = ""  # why the unit waits (mount down, crash backoff, dependency)
    last_error: str = ""
    crashes: crash_rules.Crashes = field(default_factory=crash_rules.Crashes)


Connect = Callable[[EngineKind], Engine]


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        connect: Connect | None = None,
        spec: RoleSpec | None = None,
        starting: StartingService | None = None,
    ) -> None:
        """spec: the site as the caller just loaded and resolved it (else run() loads it);
        starting: the podman service the caller started meanwhile (start_podman_early)."""
        self.settings = settings
        self.preloaded = spec
        self.starting = starting
        self.connect_engine = connect or self._default_connect
        self.events: Events = queue.Queue()
        self.stop_event = threading.Event()
        self.spec: RoleSpec | None = None
        self.generation = 0
        self.reconciled = 0  # the generation the last reconcile that went through applied
        self.last_site_error = ""
        self.units: dict[str, UnitState] = {}
        self.engine: Engine | None = None
        self.engine_error = ""
        self.reconnect_at = 0.0
        self.reconnect_failures = 0  # failed connects in a row
        self.site_dirty_at: float | None = None
        self.resync_at = 0.0
        self.health_at = 0.0
        self.dirty = True
        self.observed: list[Observed] = []
        self.refresh: set[str] = set()  # containers with events since the last reconcile
        self.mounts: Any = None  # hostos.mounts.manager.MountManager once the role has mounts
        self.lock = threading.Lock()

    # -- the loop --------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; then stop units in reverse order. Exit code."""
        self._signals()
        served = self.settings.feed is not None
        watcher = None if served else watch_site(self.settings.site, self.events)
        server = StatusServer(
            self.settings.socket or socket_path(self.settings.namespace), self.snapshot
        )
        server.start()
        if self.preloaded is not None or not served:
            self._load(self.preloaded)
        self.preloaded = None
        agent = self._start_agent()
        log.info(
            kv(
                "started",
                site=None if served else self.settings.site,
                server=self.settings.feed.source if self.settings.feed else None,
                role=self._role_name(),
                pid=os.getpid(),
            )
        )
        try:
            while not self.stop_event.is_set():
                self._wait_and_handle()
                self._due_work()
        finally:
            if agent is not None:
                agent.stop()
            self._shutdown()
            if watcher is not None:
                watcher.stop()
            server.stop()
        return 0

    def _start_agent(self) -> Feeder | None:
        """The feed's agent when specs come from a server; it posts SpecArrived events."""
        if self.settings.feed is None:
            return None
        agent = self.settings.feed.make(
            self.snapshot, lambda spec: self.events.put(SpecArrived(spec))
        )
        agent.start()
        return agent

    def _wait_and_handle(self) -> None:
        timeout = max(0.0, self._next_wake() - time.monotonic())
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(event)
        while True:  # drain what piled up, so a burst costs one reconcile
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: Event) -> None:
        match event:
            case SiteChanged():
                self.site_dirty_at = time.monotonic() + self.settings.debounce
            case SpecArrived(spec):  # from the cluster server, checked by the agent
                self.dirty = self._load(spec) or self.dirty
            case ContainerChanged(container):
                if container:
                    self.refresh.add(container)
                self.dirty = True
            case MountsChanged():
                self.dirty = True
            case EngineLost(why):
                self._lose_engine(why)
            case Reap():
                _reap_children()
            case Stop(name):
                log.info(kv("stopping", signal=name))
                self.stop_event.set()

    def _next_wake(self) -> float:
        now = time.monotonic()
        if self.dirty:
            return now
        times = [self.resync_at, self.health_at]
        if self.site_dirty_at is not None:
            times.append(self.site_dirty_at)
        if self.engine is None:
            times.append(self.reconnect_at)
        times += [
            _to_monotonic(u.crashes.next_retry, now)
            for u in self.units.values()
            if u.crashes.next_retry is not None
        ]
        return min(times)

    def _due_work(self) -> None:
        if self.stop_event.is_set():
            return
        now = time.monotonic()
        if self.site_dirty_at is not None and now >= self.site_dirty_at:
            self.site_dirty_at = None
            self.dirty = self._load() or self.dirty
        if now >= self.resync_at:
            self.dirty = True
        if any(crash_rules.due(u.crashes, time.time()) for u in self.units.values()):
            self.dirty = True
        if self.engine is None and now >= self.reconnect_at:
            self._connect()
        if self.engine is not None and now >= self.health_at:
            self._run_health_checks()
        if self.dirty and self.engine is not None and self.spec is not None:
            self.dirty = False
            self.resync_at = time.monotonic() + self.settings.resync
            self._reconcile()

    # -- site ------------------------------------------------------------------------

    def _load(self, spec: RoleSpec | SiteError | None = None) -> bool:
        """Reload the site (or take spec, loaded just before or sent by the server); a bad
        edit is logged and the last good spec stays in force."""
        try:
            if isinstance(spec, SiteError):
                raise spec
            if spec is None:
                spec = self._read_site()
        except SiteError as exc:
            self.last_site_error = "; ".join(str(p) for p in exc.problems)
            for problem in exc.problems:
                log.error(
                    kv(
                        "site-invalid",
                        problem=str(problem),
                        kept="last good spec" if self.spec else "nothing to run yet",
                    )
                )
            return False
        self.last_site_error = ""
        if spec.node is None and self.settings.node:  # a role's spec, from the server
            spec = replace(spec, node=self.settings.node)
        if self.spec is not None and self.spec == spec:
            return False
        self.spec = spec
        self.generation += 1
        self._update_mounts(spec)
        log.info(
            kv(
                "spec-loaded",
                role=spec.role.role,
                generation=self.generation,
                units=len(spec.units),
            )
        )
        return True

    def _read_site(self) -> RoleSpec:
        site = load_site(self.settings.site)
        if self.settings.node:
            return resolve_node(site, self.settings.node)
        return resolve_role(site, str(self.settings.role))

    def _update_mounts(self, spec: RoleSpec) -> None:
        if not spec.role.mounts and self.mounts is None:
            return
        from hostos.mounts.manager import MountManager

        if self.mounts is None:
            self.mounts = MountManager(
                spec.role.mounts, on_change=lambda: self.events.put(MountsChanged())
            )
            self.mounts.start()
        else:
            self.mounts.update(spec.role.mounts)

    # -- engine ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self.engine = self.connect_engine(self.settings.engine)
        except EngineError as exc:
            self._lose_engine(str(exc))
            return
        log.info(kv("engine-connected", engine=self.engine.name))
        self.engine_error = ""
        self.reconnect_failures = 0
        self.dirty = True
        watch_engine(self.engine, self.events, self.settings.namespace, self.stop_event)

    def _default_connect(self, kind: EngineKind) -> Engine:
        from hostos.engine.connect import connect

        starting, self.starting = self.starting, None  # waited for once, then ours to start
        return connect(
            kind,
            embedded_socket=self.settings.podman_socket,
            starting=starting,
        )

    def _lose_engine(self, why: str) -> None:
        self.reconnect_failures += 1
        delay = RECONNECT.delay(self.reconnect_failures)
        if self.engine is not None:
            log.warning(kv("engine-lost", engine=self.engine.name, error=why))
            with contextlib.suppress(Exception):  # it is gone; closing frees what is ours
                self.engine.close()
        elif why != self.engine_error:
            log.warning(kv("engine-unreachable", error=why, retry_in=delay))
        self.engine = None
        self.engine_error = why
        self.reconnect_at = time.monotonic() + delay

    def _run_health_checks(self) -> None:
        """Podman runs no checks without systemd: run those of running units here."""
        assert self.engine is not None
        units = self.spec.units if self.spec else ()
        interval = min(
            (u.unit.health.interval for u in units if u.unit.health is not None),
            default=self.settings.resync,
        )
        self.health_at = time.monotonic() + interval
        if self.engine.name != "podman" or self.spec is None:
            return
        checked = {u.name for u in self.spec.units if u.unit.health is not None}
        for container in self.observed:
            if container.unit in checked and container.running:
                try:
                    self.engine.health(container.id)
                except EngineError as exc:
                    log.warning(kv("health-check-failed", unit=container.unit, error=str(exc)))

    # -- reconcile -------------------------------------------------------------------

    def _reconcile(self) -> None:
        assert self.engine is not None and self.spec is not None
        started, generation = time.monotonic(), self.generation
        try:
            sources = self.mounts.sources() if self.mounts is not None else None
            refresh, self.refresh = self.refresh, set()
            listed = current(self.engine, self.settings.namespace, refresh)
            self._note_exits(listed)
            prepared = prepare(
                self.engine,
                self.spec,
                self.settings.site,
                fetch=True,
                progress=_log_image_progress,
                mount_sources=sources,
                namespace=self.settings.namespace,
                listed=listed,
                holds=self._holds(sources),
            )
            self._note_waits(prepared.actions)
            outcomes = execute(
                self.engine, prepared.actions, Options(self.settings.concurrency), _log_outcome
            )
            self.observed = owned(self.engine, self.settings.namespace)
        except EngineError as exc:
            self._lose_engine(str(exc))
            return
        self._record(outcomes)
        self.reconciled = generation
        changed = [o for o in outcomes if o.kind is not Kind.NOOP]
        if changed:
            log.info(
                kv(
                    "reconciled",
                    generation=self.generation,
                    changes=sum(o.ok for o in changed),
                    failed=sum(not o.ok for o in changed),
                    took=round(time.monotonic() - started, 3),
                )
            )

    def _note_exits(self, containers: Sequence[Observed]) -> None:
        """Count each exit of a unit's container once, so its crash backoff holds it."""
        assert self.spec is not None
        now = time.time()
        for unit, container in stopped(self.spec, containers, self.settings.namespace):
            state = self.units.setdefault(unit.name, UnitState())
            if state.crashes.waiting:
                continue
            state.crashes = crash_rules.exited(
                state.crashes, unit.unit.restart, container.exit_code, now
            )
            log.info(
                kv(
                    "unit-exited",
                    unit=unit.name,
                    exit_code=container.exit_code,
                    restarts=state.crashes.restarts,
                )
            )

    def _holds(self, sources: Mapping[str, str] | None) -> Holds:
        """What the plan must hold back now.  sources: the mount sources the units are
        rendered with; a mount ready since they were taken still holds its units back, or
        they would start on its bare target."""
        assert self.spec is not None
        unready: set[str] = set()
        if self.mounts is not None:
            unready = {
                m.name
                for m in self.spec.role.mounts
                if sources is None or m.name not in sources or not self.mounts.ready(m.name)
            }
        crashes = {name: state.crashes for name, state in self.units.items()}
        return holds(self.spec, unready, crashes, time.time())

    def _note_waits(self, actions: Sequence[Action]) -> None:
        """Keep why each unit waits, for the status API; log each new reason."""
        waits = {a.unit: a.reason for a in actions if a.kind is Kind.WAIT}
        for name in waits:
            self.units.setdefault(name, UnitState())
        for name, state in self.units.items():
            reason = waits.get(name, "")
            if reason and reason != state.held:
                log.info(kv("unit-waiting", unit=name, reason=reason))
            state.held = reason

    def _record(self, outcomes: Sequence[Outcome]) -> None:
        now = time.time()
        for outcome in outcomes:
            state = self.units.setdefault(outcome.unit, UnitState())
            if outcome.kind in (Kind.CREATE, Kind.RECREATE, Kind.START):
                if outcome.ok:
                    state.crashes = crash_rules.started(state.crashes, now)
                    state.last_error = ""
                else:
                    state.last_error = outcome.message
                    policy = self._restart_policy(outcome.unit)
                    if policy is not None:
                        state.crashes = crash_rules.exited(state.crashes, policy, None, now)
                    log.warning(kv("unit-failed", unit=outcome.unit, error=outcome.message))
            elif outcome.kind is Kind.REMOVE and outcome.ok:
                self.units.pop(outcome.unit, None)

    def _restart_policy(self, name: str) -> Any:
        if self.spec is None:
            return None
        found = [u.unit.restart for u in self.spec.units if u.name == name]
        return found[0] if found else None

    # -- shutdown --------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop units in reverse dependency order, each within its stop timeout."""
        if self.mounts is not None:
            self.mounts.stop()
        if self.starting is not None:  # stopped before it ever connected
            self.starting.stop()
        if self.engine is None:
            return
        try:
            for batch in stop_batches(owned(self.engine, self.settings.namespace)):
                running = [c for c in batch if c.running]
                _stop_all(self.engine, running)
                for container in running:
                    log.info(kv("unit-stopped", unit=container.unit))
        except EngineError as exc:
            log.warning(kv("shutdown-failed", error=str(exc)))
        finally:
            self.engine.close()

    def _signals(self) -> None:
        def post(signum: int, frame: object) -> None:
            self.events.put(Stop(signal.Signals(signum).name))

        signal.signal(signal.SIGTERM, post)
        signal.signal(signal.SIGINT, post)
        if os.getpid() == 1:  # PID 1 inherits orphans: reap them
            signal.signal(signal.SIGCHLD, lambda signum, frame: self.events.put(Reap()))

    # -- status ----------------------------------------------------------------------

    def snapshot(self) -> NodeStatus:
        """The status API's answer: per unit state, health, restarts, mounts, errors."""
        observed = {c.unit: c for c in self.observed if c.unit}
        now = time.time()
        units = tuple(
            unit_status(u, observed.get(u.name), self.units.get(u.name, UnitState()), now)
            for u in (self.spec.units if self.spec else ())
        )
        return NodeStatus(
            role=self._role_name(),
            node=self.settings.node,
            generation=self.generation,
            reconciled=self.reconciled,
            engine=self.engine.name if self.engine else None,
            engine_error=self.engine_error,
            site_error=self.last_site_error,
            units=units,
            mounts=self._mount_statuses(),
        )

    def _mount_statuses(self) -> tuple[MountStatus, ...]:
        if self.mounts is None:
            return ()
        sources = self.mounts.sources()
        return tuple(mount_status(m, sources.get(m.name)) for m in self.mounts.status().values())

    def _role_name(self) -> str | None:
        return self.spec.role.role if self.spec else self.settings.role


# -- the decisions (pure) ----------------------------------------------------------------


def holds(
    spec: RoleSpec, unready: Collection[str], crashes: Mapping[str, crash_rules.Crashes], now: float
) -> Holds:
    """The planner's holds: the role mounts not ready, and the units whose crash backoff or
    restart policy keeps their stopped container stopped (hostos.node.crashes.hold)."""
    stopped = {
        u.name: reason
        for u in spec.units
        if u.name in crashes and (reason := crash_rules.hold(crashes[u.name], u.unit.restart, now))
    }
    return Holds(frozenset(unready), stopped)


def stopped(
    spec: RoleSpec, containers: Sequence[Observed], namespace: str
) -> Iterator[tuple[ResolvedUnit, Observed]]:
    """Each unit of spec whose container (by its name) is there but not running."""
    found = {c.name: c for c in containers}
    for unit in spec.units:
        container = found.get(container_name(unit.name, namespace))
        if container is not None and not container.running:
            yield unit, container


def unit_status(
    unit: ResolvedUnit, container: Observed | None, state: UnitState, now: float
) -> UnitStatus:
    """A unit as the status API shows it: its container, and what the supervisor knows."""
    base = (
        UnitStatus.of(container, image_ref_of(container.labels))
        if container
        else UnitStatus(unit.name)
    )
    crashes, retry = state.crashes, state.crashes.next_retry
    kept = container is not None and not container.running
    return dataclasses.replace(
        base,
        unit=unit.name,
        role=unit.role,
        restarts=crashes.restarts,
        image_ref=base.image_ref or image_ref(unit.unit),
        last_exit=crashes.last_exit,
        next_retry=round(max(0.0, retry - now), 1) if retry is not None else None,
        waiting=state.held or None,
        stopped=(crash_rules.hold(crashes, unit.unit.restart, now) or None) if kept else None,
        last_error=state.last_error or None,
    )


def mount_status(status: mount_state.MountStatus, source: str | None) -> MountStatus:
    """A role mount as the status API shows it; source: where units bind it (ready only)."""
    return MountStatus(
        name=status.name,
        state=str(status.state),
        source=source,
        attempts=status.attempts,
        last_error=status.last_error,
        since=status.since,
        next_retry=status.next_retry,
        owned=status.owned,
    )


def _stop_all(engine: Engine, containers: Sequence[Observed]) -> None:
    threads = [threading.Thread(target=_stop_one, args=(engine, c)) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _stop_one(engine: Engine, container: Observed) -> None:
    try:
        engine.stop(container.id, stop_timeout(container))
    except EngineError as exc:
        log.warning(kv("stop-failed", unit=container.unit, error=str(exc)))


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _to_monotonic(wall: float, now_monotonic: float) -> float:
    return now_monotonic + (wall - time.time())


def _log_image_progress(line: str) -> None:
    log.info(kv("image", step=line))


def _log_outcome(outcome: Outcome) -> None:
    """Each unit's action as it finishes (the reconcile line sums them up at the end)."""
    event = _OUTCOME_EVENTS.get(outcome.kind)
    if event and outcome.ok:  # failures are logged by _record, with the restart policy
        log.info(kv(event, unit=outcome.unit, action=outcome.kind.value, took=outcome.seconds))


_OUTCOME_EVENTS = {
    Kind.CREATE: "unit-started",
    Kind.RECREATE: "unit-started",
    Kind.START: "unit-started",
    Kind.STOP: "unit-stopped",
    Kind.REMOVE: "unit-removed",
}
