"""Converge a node: observe the engine, plan against the resolved spec, execute.

This is the shell around the pure parts (`render`, `plan`); `hostos apply`,
`hostos plan` and the supervisor all go through `prepare`, then `execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from hostos.engine.base import Engine, EngineError, Observed
from hostos.labels import DEPS_LABEL
from hostos.node.execute import DEFAULT_OPTIONS, Options, Outcome, Report, execute
from hostos.node.holds import NO_HOLDS, Holds
from hostos.node.images import ImageResult, ensure, lookup
from hostos.node.plan import Action, Desired, Kind, plan
from hostos.node.render import render
from hostos.site.graph import levels, reverse
from hostos.site.resolve import RoleSpec


@dataclass(frozen=True)
class Prepared:
    actions: list[Action]
    images: Mapping[str, ImageResult]


def prepare(
    engine: Engine,
    spec: RoleSpec,
    site_root: str,
    fetch: bool,
    progress: Callable[[str], None] = lambda line: None,
    mount_sources: Mapping[str, str] | None = None,
    namespace: str = "",
    listed: Sequence[Observed] | None = None,
    holds: Holds = NO_HOLDS,
) -> Prepared:
    """The plan for spec under holds; with fetch, the missing images of the units that do
    not wait are built, loaded or pulled first (a waiting unit's image is fetched when it
    may start).  listed: the owned containers as the caller saw them moments before
    (hostos.engine.connect.EarlyEngine's list, or the supervisor's), used instead of
    listing again unless an image had to be fetched meanwhile."""
    units = [u.unit for u in spec.units]
    images = lookup(engine, units)
    mine = owned(engine, namespace, listed)
    actions = _plan(engine, spec, images, mine, mount_sources, namespace, holds)
    if not fetch:
        return Prepared(actions, images)
    waiting = {a.unit for a in actions if a.kind is Kind.WAIT}
    wanted = [u for u in units if u.name not in waiting]
    fetched = ensure(engine, wanted, site_root, progress, present=images)
    if all(result.how == "present" for result in fetched.values()):
        return Prepared(actions, images)
    images = {**images, **fetched}
    mine = owned(engine, namespace)  # a build, load or pull (even a failed one) takes a while
    return Prepared(_plan(engine, spec, images, mine, mount_sources, namespace, holds), images)


def _plan(
    engine: Engine,
    spec: RoleSpec,
    images: Mapping[str, ImageResult],
    mine: Sequence[Observed],
    mount_sources: Mapping[str, str] | None,
    namespace: str,
    holds: Holds,
) -> list[Action]:
    desired = [
        Desired(
            u,
            render(u, images[u.name].id, mount_sources, namespace, spec.node),
            images[u.name].id is not None,
            images[u.name].error,
        )
        for u in spec.units
    ]
    return plan(desired, observe(engine, desired, mine), holds)


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


def current(engine: Engine, namespace: str = "", refresh: Collection[str] = ()) -> list[Observed]:
    """The owned containers, those in refresh inspected rather than trusted to the engine's
    list (docker lists a container as running for a moment after its `die` event)."""
    return [_fresh(engine, c) if c.id in refresh else c for c in owned(engine, namespace)]


def observe(engine: Engine, desired: Sequence[Desired], mine: Sequence[Observed]) -> list[Observed]:
    """The owned containers (mine), plus any foreign one holding the name of a unit
    hostos lacks."""
    names = {c.name for c in mine}
    missing = [w.spec.name for w in desired if w.spec.name not in names]
    foreign = [c for c in engine.named(missing) if not c.owned]  # one call, not one per unit
    return [*mine, *foreign]


def _fresh(engine: Engine, container: Observed) -> Observed:
    try:
        return engine.inspect(container.id)
    except EngineError:
        return container  # removed meanwhile: the list's view will do


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
    graph = {name: [d for c in group for d in _deps(c)] for name, group in units.items()}
    return [[c for name in level for c in units[name]] for level in levels(reverse(graph))]


def _deps(container: Observed) -> list[str]:
    return [d for d in container.labels.get(DEPS_LABEL, "").split(",") if d]
