"""The node supervisor: one reconcile loop fed by events.

Events come from the site files (watchdog, debounced), the engine's event
stream (a container died, went unhealthy), the role mounts (up, down, back),
crash backoff timers and a slow periodic resync.  Each reconcile reuses the
apply path (`prepare` → hold what must wait → `execute`).  The supervisor, not
the engine's restart policy, restarts units, so order and health gates hold
after every crash and every engine restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hostos.engine.base import Engine, EngineError, Observed
from hostos.engine.connect import StartingService
from hostos.errors import SiteError
from hostos.logfmt import kv
from hostos.node import crashes as backoff
from hostos.node.converge import owned, prepare, stop_batches
from hostos.node.events import watch_engine, watch_site
from hostos.node.execute import Options, Outcome, execute
from hostos.node.plan import Action, Kind
from hostos.node.status import StatusServer, socket_path
from hostos.site.load import load_site
from hostos.site.resolve import RoleSpec, resolve_node, resolve_role

log = logging.getLogger("hostos.node.supervisor")

RESYNC = 60.0  # seconds between full resyncs when nothing happens
DEBOUNCE = 0.1  # quiet time after a site file change before reloading
RECONNECT_MAX = 30.0


class Feeder(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Feed:
    """Where specs come from instead of the site directory: hostos.cli.supervise makes one
    that starts the cluster agent, which heartbeats the supervisor's snapshot and delivers
    each spec the server sends (a RoleSpec, or the SiteError of one that is not)."""

    source: str  # what the log names as the source (the server's URL)
    make: Callable[[Callable[[], dict[str, Any]], Callable[[RoleSpec | SiteError], None]], Feeder]


@dataclass(frozen=True)
class Settings:
    site: str
    node: str | None = None
    role: str | None = None
    engine: str = "auto"
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
    crashes: backoff.Crashes = field(default_factory=backoff.Crashes)


Connect = Callable[[str], Engine]


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
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stop_event = threading.Event()
        self.spec: RoleSpec | None = None
        self.generation = 0
        self.reconciled = 0  # the generation the last reconcile that went through applied
        self.last_site_error = ""
        self.units: dict[str, UnitState] = {}
        self.engine: Engine | None = None
        self.engine_error = ""
        self.reconnect_at = 0.0
        self.reconnect_delay = 1.0
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
        """The feed's agent when specs come from a server; it posts ("spec", …) events."""
        if self.settings.feed is None:
            return None
        agent = self.settings.feed.make(self.snapshot, lambda spec: self.events.put(("spec", spec)))
        agent.start()
        return agent

    def _wait_and_handle(self) -> None:
        timeout = max(0.0, self._next_wake() - time.monotonic())
        try:
            kind, payload = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(kind, payload)
        while True:  # drain what piled up, so a burst costs one reconcile
            try:
                kind, payload = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        now = time.monotonic()
        if kind == "site":
            self.site_dirty_at = now + self.settings.debounce
        elif kind == "spec":  # from the cluster server, checked by the agent
            self.dirty = self._load(payload) or self.dirty
        elif kind == "engine":
            if payload.get("id"):
                self.refresh.add(str(payload["id"]))
            self.dirty = True
        elif kind == "mounts":
            self.dirty = True
        elif kind == "engine-lost":
            self._lose_engine(str(payload))
        elif kind == "reap":
            _reap_children()
        elif kind == "stop":
            log.info(kv("stopping", signal=payload))
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
        if any(
            u.crashes.next_retry is not None and u.crashes.next_retry <= time.time()
            for u in self.units.values()
        ):
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
                spec.role.mounts, on_change=lambda: self.events.put(("mounts", None))
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
        self.reconnect_delay = 1.0
        self.dirty = True
        watch_engine(self.engine, self.events, self.settings.namespace, self.stop_event)

    def _default_connect(self, kind: str) -> Engine:
        from hostos.engine.connect import connect

        starting, self.starting = self.starting, None  # waited for once, then ours to start
        return connect(
            kind,  # type: ignore[arg-type]
            embedded_socket=self.settings.podman_socket,
            starting=starting,
        )

    def _lose_engine(self, why: str) -> None:
        if self.engine is not None:
            log.warning(kv("engine-lost", engine=self.engine.name, error=why))
            with contextlib.suppress(Exception):  # it is gone; closing frees what is ours
                self.engine.close()
        elif why != self.engine_error:
            log.warning(kv("engine-unreachable", error=why, retry_in=self.reconnect_delay))
        self.engine = None
        self.engine_error = why
        self.reconnect_at = time.monotonic() + self.reconnect_delay
        self.reconnect_delay = min(RECONNECT_MAX, self.reconnect_delay * 2)

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
            prepared = prepare(
                self.engine,
                self.spec,
                self.settings.site,
                fetch=True,
                progress=_log_image_progress,
                mount_sources=sources,
                namespace=self.settings.namespace,
                refresh=refresh,
            )
            actions = self._hold(prepared.actions, sources)
            outcomes = execute(
                self.engine, actions, Options(self.settings.concurrency), report=_log_outcome
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

    def _hold(
        self, actions: Sequence[Action], sources: Mapping[str, str] | None = None
    ) -> list[Action]:
        """The actions to run now; the others wait (mount down, crash backoff, policy).
        sources: the mount sources the actions were rendered with (the ready mounts)."""
        now = time.time()
        held: dict[str, str] = {}
        for action in actions:
            state = self.units.setdefault(action.unit, UnitState())
            reason = self._hold_reason(action, state, now, sources)
            if reason:
                held[action.unit] = reason
        _hold_dependents(actions, held)
        for name, state in self.units.items():
            if state.held != held.get(name, "") and held.get(name):
                log.info(kv("unit-waiting", unit=name, reason=held[name]))
            state.held = held.get(name, "")
        return [a for a in actions if a.unit not in held or a.kind is Kind.REMOVE]

    def _hold_reason(
        self, action: Action, state: UnitState, now: float, sources: Mapping[str, str] | None = None
    ) -> str:
        if action.desired is None or action.kind is Kind.NOOP:
            return ""
        unit = action.desired.unit.unit
        if self.mounts is not None:  # a unit never starts on an empty mount point
            for mount in action.desired.unit.mounts:
                # Ready now AND in the sources the action was rendered with: a mount that
                # became ready since would otherwise start the unit on its bare target.
                rendered = sources is None or mount.name in sources
                if not (rendered and self.mounts.ready(mount.name)):
                    return f"waiting for mount {mount.name}"
        current = action.current
        if action.kind is Kind.START and current is not None and not current.running:
            if not state.crashes.waiting:
                state.crashes = backoff.exited(state.crashes, unit.restart, current.exit_code, now)
                log.info(
                    kv(
                        "unit-exited",
                        unit=action.unit,
                        exit_code=current.exit_code,
                        restarts=state.crashes.restarts,
                    )
                )
            if state.crashes.next_retry is None:
                return f"exited, restart policy {unit.restart.policy}"
            if state.crashes.next_retry > now:
                wait = state.crashes.next_retry - now
                return f"crash loop: next try in {wait:.1f}s"
        return ""

    def _record(self, outcomes: Sequence[Outcome]) -> None:
        now = time.time()
        for outcome in outcomes:
            state = self.units.setdefault(outcome.unit, UnitState())
            if outcome.kind in (Kind.CREATE, Kind.RECREATE, Kind.START):
                if outcome.ok:
                    state.crashes = backoff.started(state.crashes, now)
                    state.last_error = ""
                else:
                    state.last_error = outcome.message
                    policy = self._restart_policy(outcome.unit)
                    if policy is not None:
                        state.crashes = backoff.exited(state.crashes, policy, None, now)
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
            self.events.put(("stop", signal.Signals(signum).name))

        signal.signal(signal.SIGTERM, post)
        signal.signal(signal.SIGINT, post)
        if os.getpid() == 1:  # PID 1 inherits orphans: reap them
            signal.signal(signal.SIGCHLD, lambda signum, frame: self.events.put(("reap", None)))

    def request_stop(self) -> None:
        self.events.put(("stop", "request"))

    # -- status ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The status API's answer: per unit state, health, restarts, mounts, errors."""
        observed = {c.unit: c for c in self.observed if c.unit}
        units = []
        for unit in self.spec.units if self.spec else ():
            container = observed.get(unit.name)
            state = self.units.get(unit.name, UnitState())
            units.append(_unit_status(unit.name, unit.role, container, state))
        mounts = self.mounts.status() if self.mounts is not None else {}
        return {
            "role": self._role_name(),
            "node": self.settings.node,
            "generation": self.generation,
            "reconciled": self.reconciled,
            "engine": self.engine.name if self.engine else None,
            "engine_error": self.engine_error,
            "site_error": self.last_site_error,
            "units": units,
            "mounts": [_mount_status(m) for m in mounts.values()],
        }

    def _role_name(self) -> str | None:
        return self.spec.role.role if self.spec else self.settings.role


def _unit_status(
    name: str, role: str, container: Observed | None, state: UnitState
) -> dict[str, Any]:
    retry = state.crashes.next_retry
    return {
        "unit": name,
        "role": role,
        "state": container.state if container else "absent",
        "health": container.health if container else None,
        "restarts": state.crashes.restarts,
        "last_exit": state.crashes.last_exit,
        "next_retry": round(max(0.0, retry - time.time()), 1) if retry is not None else None,
        "waiting": state.held or None,
        "last_error": state.last_error or None,
        "container_id": container.id if container else None,
        "image": container.image_id if container else None,
        "since": container.started_at if container else None,
    }


def _mount_status(status: Any) -> dict[str, Any]:
    fields = getattr(status, "__dataclass_fields__", {})
    return {name: _plain(getattr(status, name)) for name in fields}


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _hold_dependents(actions: Sequence[Action], held: dict[str, str]) -> None:
    """Units that require or follow a held unit wait too."""
    changed = True
    while changed:
        changed = False
        for action in actions:
            if action.desired is None or action.unit in held or action.kind is Kind.NOOP:
                continue
            unit = action.desired.unit.unit
            for dep in (*unit.requires, *unit.after):
                if dep in held:
                    held[action.unit] = f"waiting for {dep}"
                    changed = True
                    break


def _stop_all(engine: Engine, containers: Sequence[Observed]) -> None:
    threads = [threading.Thread(target=_stop_one, args=(engine, c)) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _stop_one(engine: Engine, container: Observed) -> None:
    from hostos.node.execute import stop_timeout

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
