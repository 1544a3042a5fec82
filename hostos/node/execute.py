"""Carry out a plan on an engine: removals first, then units level by level.

Units of one dependency level run in parallel (bounded); a unit starts only
after what it follows has started and what it requires is healthy.  When a
dependency fails, its dependents are reported blocked and the rest go on.
WAIT actions run nothing and give no outcome: the plan has said why they wait.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hostos.engine.base import Engine, EngineError, Observed
from hostos.node.plan import Action, Desired, Kind
from hostos.node.render import spec_of
from hostos.site.graph import levels as graph_levels

NEXT_SUFFIX = ".next"


@dataclass(frozen=True)
class Outcome:
    unit: str
    kind: Kind
    ok: bool
    message: str
    seconds: float = 0.0
    container: str | None = None


@dataclass(frozen=True)
class Options:
    concurrency: int = 8
    health_timeout: float | None = None  # None: from each unit's own health check
    poll: float = 0.2


Report = Callable[[Outcome], None]
DEFAULT_OPTIONS = Options()


@dataclass
class _Run:
    engine: Engine
    options: Options
    report: Report
    required: frozenset[str] = frozenset()  # units that another unit requires
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # unit → container ID
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, outcome: Outcome) -> Outcome:
        with self.lock:
            if outcome.kind is not Kind.REMOVE:
                self.outcomes[outcome.unit] = outcome
                if outcome.container:
                    self.containers[outcome.unit] = outcome.container
        self.report(outcome)
        return outcome


def levels(actions: Sequence[Action]) -> list[list[Action]]:
    """Unit actions grouped so that each comes after every unit it requires or follows."""
    units = {a.unit: a for a in actions if a.desired is not None}
    graph = {name: _deps(action) for name, action in units.items()}
    return [[units[name] for name in level] for level in graph_levels(graph)]


def _deps(action: Action) -> tuple[str, ...]:
    assert action.desired is not None
    return action.desired.unit.unit.depends_on


def execute(
    engine: Engine,
    actions: Sequence[Action],
    options: Options = DEFAULT_OPTIONS,
    report: Report = lambda outcome: None,
) -> list[Outcome]:
    """Run the actions; one outcome per action but WAIT, in the order they finished."""
    actions = [a for a in actions if a.kind is not Kind.WAIT]
    required = frozenset(
        r for a in actions if a.desired is not None for r in a.desired.unit.unit.requires
    )
    run = _Run(engine, options, report, required)
    finished: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
        removals = [a for a in actions if a.kind is Kind.REMOVE]
        finished += list(pool.map(lambda a: run.done(_remove(run, a)), removals))
        for group in levels(actions):
            finished += list(pool.map(lambda a: run.done(_unit(run, a)), group))
    return finished


def _unit(run: _Run, action: Action) -> Outcome:
    blocker = _blocker(run, action)
    if blocker:
        return Outcome(action.unit, action.kind, False, blocker)
    started = time.monotonic()
    try:
        outcome = _act(run, action)
    except EngineError as exc:
        outcome = Outcome(action.unit, action.kind, False, f"failed: {exc}")
    if outcome.ok and _must_wait(run, action):
        assert action.desired is not None
        outcome = _healthy(run, action.desired, outcome)
    return Outcome(
        outcome.unit,
        outcome.kind,
        outcome.ok,
        outcome.message,
        round(time.monotonic() - started, 3),
        outcome.container,
    )


def _must_wait(run: _Run, action: Action) -> bool:
    """Wait for health only where a dependent needs it, and not when it is known good."""
    if action.desired is None or action.desired.spec.health is None:
        return False
    if action.unit not in run.required:
        return False
    current = action.current
    return not (action.kind is Kind.NOOP and current is not None and current.health == "healthy")


def _blocker(run: _Run, action: Action) -> str:
    """Why this unit cannot start now, or "" when its dependencies are fine."""
    for dep in _deps(action):
        outcome = run.outcomes.get(dep)
        if outcome is not None and not outcome.ok:
            return f"blocked: dependency {dep} failed"
    return ""


def _act(run: _Run, action: Action) -> Outcome:
    engine, want = run.engine, action.desired
    assert want is not None
    if action.kind is Kind.NOOP:
        return Outcome(
            action.unit,
            action.kind,
            True,
            "up to date",
            container=action.current.id if action.current else None,
        )
    if action.kind is Kind.CONFLICT:
        return Outcome(action.unit, action.kind, False, f"failed: {action.reason}")
    if want.image_error and action.kind in (Kind.CREATE, Kind.RECREATE):
        return Outcome(action.unit, action.kind, False, f"failed: {want.image_error}")
    if action.kind is Kind.START:
        assert action.current is not None
        engine.start(action.current.id)
        return _check_started(engine, action, action.current.id, "started")
    if action.kind is Kind.CREATE:
        container = engine.create(want.spec)
        engine.start(container)
        return _check_started(engine, action, container, "created")
    return _recreate(engine, action, want)


def _check_started(engine: Engine, action: Action, container: str, verb: str) -> Outcome:
    seen = engine.inspect(container)
    if not seen.running and seen.exit_code not in (None, 0):
        return Outcome(
            action.unit,
            action.kind,
            False,
            f"failed: exited at once with code {seen.exit_code} (see hostos logs {action.unit})",
            container=container,
        )
    return Outcome(action.unit, action.kind, True, verb, container=container)


def _recreate(engine: Engine, action: Action, want: Desired) -> Outcome:
    """Create the new container beside the old one; swap only if the new one starts."""
    old = action.current
    assert old is not None
    spec = want.spec
    new = engine.create(dataclasses.replace(spec, name=spec.name + NEXT_SUFFIX))
    if old.running:
        engine.stop(old.id, stop_timeout(old))
    try:
        engine.start(new)
        started = _check_started(engine, action, new, "recreated")
    except EngineError as exc:
        started = Outcome(action.unit, action.kind, False, f"failed: {exc}")
    if not started.ok:
        engine.remove(new)
        if old.running:
            engine.start(old.id)
        return Outcome(
            action.unit,
            action.kind,
            False,
            f"{started.message}; kept the previous container" + (" running" if old.running else ""),
            container=old.id,
        )
    engine.remove(old.id)
    engine.rename(new, spec.name)
    return started


def stop_timeout(container: Observed) -> float:
    spec = spec_of(container.labels) or {}
    return float(spec.get("stop_timeout", 10))


def _remove(run: _Run, action: Action) -> Outcome:
    assert action.current is not None
    started = time.monotonic()
    try:
        if action.current.running:
            run.engine.stop(action.current.id, stop_timeout(action.current))
        run.engine.remove(action.current.id)
    except EngineError as exc:
        return Outcome(action.unit, action.kind, False, f"failed: {exc}")
    return Outcome(
        action.unit,
        action.kind,
        True,
        "removed",
        round(time.monotonic() - started, 3),
        action.current.id,
    )


def _healthy(run: _Run, want: Desired, outcome: Outcome) -> Outcome:
    """Wait until the unit's health check passes; a failure fails the unit."""
    health = want.spec.health
    assert health is not None and outcome.container is not None
    limit = run.options.health_timeout or (
        health.start_period + (health.retries + 1) * health.interval + health.timeout
    )
    deadline = time.monotonic() + limit
    while True:
        try:
            status = run.engine.health(outcome.container)
        except EngineError as exc:
            return Outcome(
                want.name, outcome.kind, False, f"failed: {exc}", container=outcome.container
            )
        if status == "healthy" or status is None:
            return Outcome(
                want.name,
                outcome.kind,
                True,
                outcome.message + ", healthy",
                container=outcome.container,
            )
        if status == "unhealthy":
            return Outcome(
                want.name,
                outcome.kind,
                False,
                f"{outcome.message}, unhealthy",
                container=outcome.container,
            )
        if time.monotonic() >= deadline:
            return Outcome(
                want.name,
                outcome.kind,
                False,
                f"{outcome.message}, not healthy after {limit:g}s",
                container=outcome.container,
            )
        time.sleep(min(run.options.poll, max(0.05, deadline - time.monotonic())))
