"""Converge a node: observe the engine, plan against the resolved spec, execute.

This is the shell around the pure parts (`render`, `plan`); `hostos apply`,
`hostos plan` and later the supervisor all go through `prepare` and `converge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from hostos.engine.base import DEPS_LABEL, Engine, EngineError, Observed
from hostos.node.execute import DEFAULT_OPTIONS, Options, Outcome, Report, execute
from hostos.node.images import ImageResult, ensure, lookup
from hostos.node.plan import Action, Desired, Kind, plan
from hostos.node.render import render
from hostos.site.resolve import RoleSpec


@dataclass(frozen=True)
class Prepared:
    actions: list[Action]
    images: Mapping[str, ImageResult]


@dataclass(frozen=True)
class Converged:
    actions: list[Action]
    outcomes: list[Outcome]
    seconds: float

    @property
    def changes(self) -> int:
        return sum(1 for o in self.outcomes if o.kind is not Kind.NOOP and o.ok)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)


def prepare(
    engine: Engine,
    spec: RoleSpec,
    site_root: str,
    fetch: bool,
    progress: Callable[[str], None] = lambda line: None,
    mount_sources: Mapping[str, str] | None = None,
    namespace: str = "",
    refresh: Collection[str] = (),
    listed: Sequence[Observed] | None = None,
) -> Prepared:
    """The plan for spec; with fetch, missing images are built, loaded or pulled first.
    refresh: containers to inspect rather than trust the engine's list for (docker lists
    a container as running for a moment after its `die` event).  listed: engine.owned()
    taken moments before (hostos.engine.connect.EarlyEngine), used instead of listing
    again unless an image had to be fetched meanwhile."""
    units = [u.unit for u in spec.units]
    images = ensure(engine, units, site_root, progress) if fetch else lookup(engine, units)
    if fetch and any(result.how != "present" for result in images.values()):
        listed = None  # a build, load or pull (even a failed one) takes a while: look again
    desired = [
        Desired(
            u,
            render(u, images[u.name].id, mount_sources, namespace, spec.node),
            images[u.name].id is not None,
            images[u.name].error,
        )
        for u in spec.units
    ]
    observed = observe(engine, desired, namespace, refresh, listed)
    return Prepared(plan(desired, observed), images)


def owned(
    engine: Engine, namespace: str = "", listed: Sequence[Observed] | None = None
) -> list[Observed]:
    """The containers of this hostos instance (its namespace) on the engine (from
    `listed`, what engine.owned() gave, when the caller has it)."""
    return [
        c
        for c in (engine.owned(namespace) if listed is None else listed)
        if c.namespace == namespace
    ]


def observe(
    engine: Engine,
    desired: Sequence[Desired],
    namespace: str = "",
    refresh: Collection[str] = (),
    listed: Sequence[Observed] | None = None,
) -> list[Observed]:
    """Owned containers, plus any foreign one holding the name of a unit hostos lacks."""
    mine = [_fresh(engine, c) if c.id in refresh else c for c in owned(engine, namespace, listed)]
    names = {c.name for c in mine}
    missing = [w.spec.name for w in desired if w.spec.name not in names]
    foreign = [c for c in engine.named(missing) if not c.owned]  # one call, not one per unit
    return [*mine, *foreign]


def _fresh(engine: Engine, container: Observed) -> Observed:
    try:
        return engine.inspect(container.id)
    except EngineError:
        return container  # removed meanwhile: the list's view will do


def converge(
    engine: Engine,
    spec: RoleSpec,
    site_root: str,
    options: Options = DEFAULT_OPTIONS,
    progress: Callable[[str], None] = lambda line: None,
    report: Report = lambda outcome: None,
    namespace: str = "",
) -> Converged:
    started = time.monotonic()
    prepared = prepare(engine, spec, site_root, fetch=True, progress=progress, namespace=namespace)
    outcomes = execute(engine, prepared.actions, options, report)
    return Converged(prepared.actions, outcomes, round(time.monotonic() - started, 3))


def down(
    engine: Engine,
    report: Report = lambda outcome: None,
    options: Options = DEFAULT_OPTIONS,
    namespace: str = "",
) -> list[Outcome]:
    """Stop and remove every owned container, dependents before their dependencies."""
    outcomes = []
    for batch in stop_batches(owned(engine, namespace)):
        actions = [Action(Kind.REMOVE, c.unit or c.name, "down", current=c) for c in batch]
        outcomes += execute(engine, actions, options, report)
    return outcomes


def stop_batches(containers: Sequence[Observed]) -> list[list[Observed]]:
    """Containers in batches: first those nothing depends on, then what they depended on."""
    units: dict[str, list[Observed]] = {}
    for container in containers:
        units.setdefault(container.unit or container.name, []).append(container)
    dependents = {
        name: [other for other, cs in units.items() if any(name in _deps(c) for c in cs)]
        for name in units
    }
    rank: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name not in rank:
            later = [d for d in dependents[name] if d not in seen]
            rank[name] = 1 + max((depth(d, seen | {name}) for d in later), default=-1)
        return rank[name]

    batches: dict[int, list[Observed]] = {}
    for name, group in units.items():
        batches.setdefault(depth(name, frozenset()), []).extend(group)
    return [batches[k] for k in sorted(batches)]


def _deps(container: Observed) -> list[str]:
    return [d for d in container.labels.get(DEPS_LABEL, "").split(",") if d]
