"""The rollout planner (pure): a role's nodes move to a new host image by reboot, a few at once.

A rollout assigns each node the target image together with a reboot slot (`GRANT`), so the
boot endpoint is the update mechanism and the slot count bounds how many nodes are out.  A
node is done when it heartbeats with the target image booted, its agent reported
steady-state and its units are healthy; one that is not done `health_timeout` seconds after
its grant has failed, and a failure pauses the rollout (with `auto_rollback`, the failed and
done nodes get the previous image back through the same slots instead).

`plan(rollout, observed, now)` calls nothing: the controller reads the rollout and the node
records, calls it, and carries out the actions (each grant one transaction: slot + assigned
image) before it writes the new rollout value.  The commands (`start`, `pause`, `resume`,
`abort`, `rollback`) are pure functions over the rollout too.

Rules, in the order `plan` applies them:

- Nodes in flight are checked first: done (the slot is released), failed (past the
  deadline; the slot stays held: the node is out until someone looks), or still on their way
  (`rebooting` while silent, `booted` once the image is up).
- A new failure pauses a running rollout, or turns it to rolling back with `auto_rollback`;
  a failure while rolling back pauses it.  All nodes done completes it.
- Only a running or rolling-back rollout grants.  Canaries (the first `canary` nodes, chosen
  at start among the nodes heard from) go first and alone, and the rest start only when every
  canary is done.  Grants go in sorted node order.
- Never more than `max_unavailable` nodes out: out = holding a slot, or silent (no heartbeat
  for `silent_after` seconds, or for three heartbeats at the pace the server asked of a large
  fleet: pacing.py, whatever their state).  A silent node may still be granted when
  a slot is free, since it is out already: it boots the new image when it comes back, or
  fails at its deadline.
- Paused and aborted rollouts grant nothing but still record nodes finishing; an aborted one
  also gives back the slots of its failed nodes.

With a drain (`spec.drain`, the role's `rollout.drain`), a node's workload moves off before
it reboots, and comes back after:

- A node's first step takes a slot and drains it (`DRAIN` → `draining`): from that moment it
  counts as out, since it takes no new work.  Among the nodes next in line, those with no job
  running go first (fewest jobs next), so a busy cluster's rollout ends as early as its jobs
  allow; a node whose jobs nobody has counted yet waits for the first count.
- A draining node is granted its image only once the drain is in place and no job runs on it
  (`Workload`, from the server's drainer); one still draining `drain.timeout` seconds after
  it was asked has failed (and pauses, as any failure does).
- A node done with its update is given back (`RESUME` → `resuming`) and keeps its slot until
  the drainer reports it resumed; a node someone else had drained before (`held`: the
  scheduler's own reason) is left drained.  Rolling back drains nodes that were given back
  already; a rollback or an abort gives back the nodes drained but never rebooted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from hostos.cluster import pacing
from hostos.cluster.records import RecordError
from hostos.site.drain import Drain, DrainError
from hostos.site.rollout import check_canary, check_max_unavailable, check_seconds

SILENT_AFTER = pacing.SILENT_AFTER  # seconds without a heartbeat: out (or 3 paced beats)


class RolloutError(ValueError):
    """A rollout spec or command that cannot be carried out; the message says why."""


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling-back"
    DONE = "done"
    ROLLED_BACK = "rolled-back"


FINAL = frozenset({State.DONE, State.ROLLED_BACK})
GRANTING = frozenset({State.RUNNING, State.ROLLING_BACK})


class NodeState(StrEnum):
    PENDING = "pending"  # not touched yet: still assigned its old image
    DRAINING = "draining"  # holds a slot; its workload is moving off (drain rollouts)
    GRANTED = "granted"  # holds a slot and the new assignment
    REBOOTING = "rebooting"  # granted, and silent since
    BOOTED = "booted"  # up on the new image, not yet steady and healthy
    RESUMING = "resuming"  # finished, holds its slot until the scheduler has it back
    DONE = "done"  # on the target image, steady and healthy
    FAILED = "failed"  # not done by its deadline
    REVERTED = "reverted"  # back on the previous image, steady and healthy


IN_FLIGHT = frozenset({NodeState.GRANTED, NodeState.REBOOTING, NodeState.BOOTED})
HANDLED = frozenset({*IN_FLIGHT, NodeState.DRAINING, NodeState.RESUMING})  # hold slots


@dataclass(frozen=True)
class RolloutSpec:
    """What an operator asks for: move role's nodes from previous_image to target_image."""

    role: str
    target_image: str
    previous_image: str
    max_unavailable: int | str = 1  # nodes out at once: a count, or "25%" of the role's nodes
    canary: int = 0  # nodes updated first, alone, before any other starts
    health_timeout: float = 600.0  # seconds from a grant until a node not done has failed
    auto_rollback: bool = False  # on a failure, give every touched node the previous image
    drain: Drain | None = None  # how the role's workload moves off a node before it reboots

    def to_json(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "drain": self.drain.to_json() if self.drain else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> RolloutSpec:
        data = _object(data, "rollout spec")
        return cls(
            role=_get(data, "role", str),
            target_image=_get(data, "target_image", str),
            previous_image=_get(data, "previous_image", str),
            max_unavailable=_get(data, "max_unavailable", (int, str), 1),
            canary=_get(data, "canary", int, 0),
            health_timeout=float(_get(data, "health_timeout", (int, float), 600.0)),
            auto_rollback=_get(data, "auto_rollback", bool, False),
            drain=_drain(data.get("drain")),
        )


@dataclass(frozen=True)
class NodeProgress:
    """Where one node is in the rollout."""

    state: NodeState = NodeState.PENDING
    image: str | None = None  # the image of its grant (target, or previous when rolled back)
    granted_at: float | None = None
    slot: bool = False  # holds a reboot slot of the rollout
    reason: str = ""  # why it failed, when it did
    jobs: int | None = None  # jobs left on it, last counted (draining)
    held: str = ""  # drained by someone else before the rollout (their reason): never resumed

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "image": self.image,
            "granted_at": self.granted_at,
            "slot": self.slot,
            "reason": self.reason,
            "jobs": self.jobs,
            "held": self.held,
        }

    @classmethod
    def from_json(cls, data: Any) -> NodeProgress:
        data = _object(data, "node progress")
        granted_at = _get(data, "granted_at", (int, float, type(None)), None)
        return cls(
            state=_enum(NodeState, _get(data, "state", str, "pending"), "state"),
            image=_get(data, "image", (str, type(None)), None),
            granted_at=None if granted_at is None else float(granted_at),
            slot=_get(data, "slot", bool, False),
            reason=_get(data, "reason", str, ""),
            jobs=_get(data, "jobs", (int, type(None)), None),
            held=_get(data, "held", str, ""),
        )


@dataclass(frozen=True)
class Rollout:
    """A rollout's whole state: what `rollouts/current/<role>` holds."""

    id: str
    spec: RolloutSpec
    state: State
    max_unavailable: int  # the spec's, resolved against the node count at start
    canaries: tuple[str, ...]
    nodes: Mapping[str, NodeProgress]
    started_at: float
    reverting: bool = False  # rolling back; a paused rollout resumes rolling back
    reason: str = ""  # why it is paused, aborted, rolling back or finished

    def count(self, *states: NodeState) -> int:
        return sum(1 for p in self.nodes.values() if p.state in states)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the store; `state` and `max_unavailable` (resolved) sit at the top,
        where the FleetLock endpoint reads the slot limit."""
        return {
            "id": self.id,
            "spec": self.spec.to_json(),
            "state": self.state.value,
            "max_unavailable": self.max_unavailable,
            "canaries": list(self.canaries),
            "nodes": {i: p.to_json() for i, p in sorted(self.nodes.items())},
            "started_at": self.started_at,
            "reverting": self.reverting,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Any) -> Rollout:
        data = _object(data, "rollout")
        canaries = _get(data, "canaries", list, [])
        if not all(isinstance(c, str) for c in canaries):
            raise RecordError("canaries: expected a list of node ids")
        nodes = _object(data.get("nodes", {}), "nodes")
        return cls(
            id=_get(data, "id", str),
            spec=RolloutSpec.from_json(data.get("spec")),
            state=_enum(State, _get(data, "state", str), "state"),
            max_unavailable=_get(data, "max_unavailable", int),
            canaries=tuple(canaries),
            nodes={str(i): NodeProgress.from_json(p) for i, p in nodes.items()},
            started_at=float(_get(data, "started_at", (int, float), 0.0)),
            reverting=_get(data, "reverting", bool, False),
            reason=_get(data, "reason", str, ""),
        )


@dataclass(frozen=True)
class Workload:
    """What the server's drainer saw of a node's work (drain rollouts only)."""

    jobs: int | None = None  # jobs running on it; None: not counted yet (or the count failed)
    drained: bool = False  # the rollout's drain is in place, and `jobs` was counted after it
    held: str = ""  # drained by someone else, with this reason, before the rollout asked
    resumed: bool = False  # given back to the scheduler after its update
    error: str = ""  # the drainer's last failure for this node (shown while it waits)


@dataclass(frozen=True)
class NodeView:
    """What the planner observes of a node, from its record and heartbeats."""

    id: str
    booted_image: str | None = None
    # the agent reported steady-state (POST /v1/steady-state) after its last boot; the slot
    # a grant gave it goes back when the planner records it done (a RELEASE action)
    steady: bool = False
    healthy: bool = False  # every unit of the role is healthy
    last_seen: float = float("-inf")  # wall clock of the last heartbeat
    heartbeat: float = 0.0  # the least interval the server asked of it (pacing.py)
    workload: Workload = Workload()  # drain rollouts: its jobs, as the drainer saw them


class Kind(StrEnum):
    GRANT = "grant"  # take a slot and assign the target image, in one transaction
    ROLLBACK_NODE = "rollback-node"  # take (or keep) a slot and assign the previous image
    RELEASE = "release"  # give the node's slot back
    DONE = "done"  # the node is on the target image, steady and healthy
    REVERTED = "reverted"  # the node is back on the previous image
    RETURNED = "returned"  # a node drained but never rebooted is back as it was
    FAILED = "failed"  # the node missed its deadline
    DRAIN = "drain"  # take a slot; the drainer moves the node's workload off
    RESUME = "resume"  # the drainer gives the node back to the scheduler
    PAUSE = "pause"
    ROLL_BACK = "roll-back"  # the rollout turns to rolling back
    COMPLETE = "complete"  # the rollout ended: done or rolled back


@dataclass(frozen=True)
class Action:
    kind: Kind
    reason: str
    node: str | None = None
    image: str | None = None  # the image GRANT and ROLLBACK_NODE assign


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    actions: tuple[Action, ...] = ()

    @property
    def grants(self) -> list[Action]:
        """The actions that take a slot and assign an image."""
        return [a for a in self.actions if a.kind in (Kind.GRANT, Kind.ROLLBACK_NODE)]


@dataclass(frozen=True)
class _Load:
    """Slots in use and nodes out, as grants are handed out within one plan."""

    limit: int
    slots: int
    out: frozenset[str]
    silent: frozenset[str] = field(default_factory=frozenset)

    def admits(self, node: str) -> bool:
        if self.slots >= self.limit:
            return False
        return node in self.out or len(self.out) < self.limit

    def taken(self, node: str) -> _Load:
        return dataclasses.replace(self, slots=self.slots + 1, out=self.out | {node})


# -- commands ------------------------------------------------------------------------------


def start(
    spec: RolloutSpec,
    nodes: Sequence[NodeView],
    now: float,
    rollout_id: str | None = None,
    silent_after: float = SILENT_AFTER,
) -> Rollout:
    """A running rollout over nodes (the role's nodes, as observed now)."""
    _check_spec(spec)
    ids = sorted({n.id for n in nodes})
    live = [n.id for n in sorted(nodes, key=lambda n: n.id) if not _silent(n, now, silent_after)]
    canaries = (live + [i for i in ids if i not in live])[: spec.canary]
    return Rollout(
        id=rollout_id or f"{spec.role}-{int(now)}",
        spec=spec,
        state=State.RUNNING,
        max_unavailable=resolve_max_unavailable(spec.max_unavailable, len(ids)),
        canaries=tuple(sorted(canaries)),
        nodes={i: NodeProgress() for i in ids},
        started_at=now,
        reason=f"started: {spec.previous_image} → {spec.target_image}",
    )


def pause(rollout: Rollout, reason: str = "paused by an operator") -> Rollout:
    """Grant nothing more; nodes in flight still finish and are recorded."""
    _expect(rollout, "pause", State.RUNNING, State.ROLLING_BACK)
    return dataclasses.replace(rollout, state=State.PAUSED, reason=reason)


def resume(rollout: Rollout, now: float) -> Rollout:
    """Carry on after a pause; failed nodes get another try with a fresh deadline."""
    _expect(rollout, "resume", State.PAUSED)
    nodes = {
        i: (
            dataclasses.replace(p, state=_retry_state(p), granted_at=now, reason="")
            if p.state is NodeState.FAILED and p.slot
            else p
        )
        for i, p in rollout.nodes.items()
    }
    state = State.ROLLING_BACK if rollout.reverting else State.RUNNING
    return dataclasses.replace(rollout, state=state, nodes=nodes, reason="resumed")


def _retry_state(progress: NodeProgress) -> NodeState:
    """Where a failed node starts again: draining when it failed before its grant."""
    return NodeState.DRAINING if progress.image is None else NodeState.GRANTED


def abort(rollout: Rollout, reason: str = "aborted by an operator") -> Rollout:
    """Stop for good: grant nothing more, leave every node on the image it has."""
    _expect(rollout, "abort", State.RUNNING, State.PAUSED, State.ROLLING_BACK)
    return dataclasses.replace(rollout, state=State.ABORTED, reason=reason)


def rollback(rollout: Rollout, reason: str = "rollback asked by an operator") -> Rollout:
    """Give every node the rollout touched its previous image back, through the slots
    (failed nodes too, a failed rollback among them, each with a fresh deadline)."""
    _expect(rollout, "roll back", State.RUNNING, State.PAUSED, State.ABORTED, State.DONE)
    return dataclasses.replace(rollout, state=State.ROLLING_BACK, reverting=True, reason=reason)


def grant_refused(rollout: Rollout, before: Rollout, node: str) -> Rollout:
    """The grant plan() made for node could not be written (the slot table was full, e.g. a
    node took a slot by itself): the node goes back to where it was in before, the rollout
    plan() was given, and a later plan tries again."""
    return dataclasses.replace(rollout, nodes={**rollout.nodes, node: before.nodes[node]})


def resolve_max_unavailable(value: int | str, nodes: int) -> int:
    """A count, or a percentage of nodes rounded down; at least 1 either way (the site's
    rule for the value: hostos.site.rollout)."""
    checked = _rule("max_unavailable", check_max_unavailable, value)
    if isinstance(checked, int):
        return checked
    return max(1, nodes * int(checked[:-1]) // 100)


def _check_spec(spec: RolloutSpec) -> None:
    if spec.target_image == spec.previous_image:
        raise RolloutError(f"target image {spec.target_image} is the previous image already")
    _rule("canary", check_canary, spec.canary)
    _rule("health_timeout", check_seconds, spec.health_timeout)
    resolve_max_unavailable(spec.max_unavailable, 1)


def _rule(key: str, check: Callable[[Any], T], value: Any) -> T:
    """check(value), its complaint a RolloutError naming key."""
    try:
        return check(value)
    except ValueError as exc:
        raise RolloutError(f"{key}: {exc}") from None


def _expect(rollout: Rollout, what: str, *states: State) -> None:
    if rollout.state not in states:
        allowed = ", ".join(s.value for s in states)
        raise RolloutError(
            f"cannot {what} a rollout that is {rollout.state.value} (only one that is {allowed})"
        )


# -- the planner ---------------------------------------------------------------------------


def plan(
    rollout: Rollout, observed: Iterable[NodeView], now: float, silent_after: float = SILENT_AFTER
) -> Decision:
    """The rollout's next value and the actions that get there (see the module's rules)."""
    if rollout.state in FINAL:
        return Decision(rollout)
    views = {v.id: v for v in observed}
    view = {i: views.get(i, NodeView(i)) for i in rollout.nodes}
    silent = frozenset(i for i, v in view.items() if _silent(v, now, silent_after))
    rollout, actions = _advance_nodes(rollout, view, silent, now)
    rollout, actions = _next_state(rollout, actions)
    if rollout.state is State.ABORTED:
        rollout, actions = _release_failed(rollout, actions)
    if rollout.state in (State.ABORTED, State.ROLLING_BACK):
        rollout, actions = _give_back(rollout, actions)
    if rollout.state in GRANTING:
        rollout, actions = _grant(rollout, view, silent, now, actions)
    return Decision(rollout, tuple(actions))


def _silent(view: NodeView, now: float, silent_after: float) -> bool:
    return pacing.is_silent(view.last_seen, view.heartbeat, now, silent_after)


def _advance_nodes(
    rollout: Rollout, view: Mapping[str, NodeView], silent: frozenset[str], now: float
) -> tuple[Rollout, list[Action]]:
    nodes: dict[str, NodeProgress] = {}
    actions: list[Action] = []
    for node in sorted(rollout.nodes):
        progress, more = _advance(
            rollout, node, rollout.nodes[node], view[node], node in silent, now
        )
        nodes[node] = progress
        actions += more
    return dataclasses.replace(rollout, nodes=nodes), actions


def _advance(
    rollout: Rollout, node: str, progress: NodeProgress, view: NodeView, silent: bool, now: float
) -> tuple[NodeProgress, list[Action]]:
    """One node's step: finished, failed, or a step further on its way."""
    spec = rollout.spec
    if progress.state is NodeState.PENDING and not rollout.reverting:
        if _finished(view, spec.target_image, silent):
            return (
                NodeProgress(NodeState.DONE, spec.target_image),
                [Action(Kind.DONE, "already on the target image, steady and healthy", node)],
            )
        return progress, []
    if progress.state is NodeState.DRAINING:
        return _draining(rollout, node, progress, view.workload, now)
    if progress.state is NodeState.RESUMING:
        return _resuming(rollout, node, progress, view.workload)
    if progress.state not in IN_FLIGHT or progress.image is None:
        return progress, []
    image = progress.image
    if _finished(view, image, silent):
        return _finish(rollout, node, progress, f"booted {image}, steady and healthy")
    started = progress.granted_at if progress.granted_at is not None else now
    if now - started > spec.health_timeout:
        why = f"not done {spec.health_timeout:g}s after its grant: {_lacks(view, image, silent)}"
        return (
            dataclasses.replace(progress, state=NodeState.FAILED, reason=why),
            [Action(Kind.FAILED, why, node)],
        )
    state = (
        NodeState.REBOOTING
        if silent
        else NodeState.BOOTED
        if view.booted_image == image
        else NodeState.GRANTED
    )
    return dataclasses.replace(progress, state=state), []


def _finish(
    rollout: Rollout, node: str, progress: NodeProgress, why: str
) -> tuple[NodeProgress, list[Action]]:
    """A node at the end of its way: given back to the scheduler first (drain rollouts),
    else done (or reverted, or pending again when it never rebooted) with its slot free."""
    if rollout.spec.drain is not None and not progress.held:
        return (
            dataclasses.replace(progress, state=NodeState.RESUMING, jobs=None, reason=""),
            [Action(Kind.RESUME, f"{why}: given back to the scheduler", node)],
        )
    state, kind = _end_state(rollout, progress.image)
    left = f"; left drained ({progress.held})" if progress.held else ""
    return (
        dataclasses.replace(progress, state=state, slot=False, jobs=None, reason=""),
        [
            Action(kind, f"{why}{left}", node),
            Action(Kind.RELEASE, f"{state.value}: the slot is free again", node),
        ],
    )


def _end_state(rollout: Rollout, image: str | None) -> tuple[NodeState, Kind]:
    if image is None:
        return NodeState.PENDING, Kind.RETURNED  # drained, never rebooted: as it was
    if image == rollout.spec.target_image:
        return NodeState.DONE, Kind.DONE
    return NodeState.REVERTED, Kind.REVERTED


def _draining(
    rollout: Rollout, node: str, progress: NodeProgress, work: Workload, now: float
) -> tuple[NodeProgress, list[Action]]:
    """A draining node waits for its jobs (the grant is _grant's); past the drain's
    timeout it has failed."""
    drain = rollout.spec.drain
    jobs = work.jobs if work.drained else progress.jobs
    started = progress.granted_at if progress.granted_at is not None else now
    if drain is not None and now - started > drain.timeout:
        left = "jobs not counted" if jobs is None else f"{jobs} job(s) left"
        why = f"still draining {drain.timeout:g}s after it was asked: {left}"
        return (
            dataclasses.replace(progress, state=NodeState.FAILED, jobs=jobs, reason=why),
            [Action(Kind.FAILED, why, node)],
        )
    return dataclasses.replace(progress, jobs=jobs, reason=work.error), []


def _resuming(
    rollout: Rollout, node: str, progress: NodeProgress, work: Workload
) -> tuple[NodeProgress, list[Action]]:
    """A node being given back is finished once the drainer says it is."""
    if not work.resumed:
        return dataclasses.replace(progress, reason=work.error), []
    state, kind = _end_state(rollout, progress.image)
    return (
        dataclasses.replace(progress, state=state, slot=False, reason=""),
        [
            Action(kind, "back in the scheduler's hands", node),
            Action(Kind.RELEASE, f"{state.value}: the slot is free again", node),
        ],
    )


def _finished(view: NodeView, image: str, silent: bool) -> bool:
    return not silent and view.booted_image == image and view.steady and view.healthy


def _lacks(view: NodeView, image: str, silent: bool) -> str:
    """What a node that missed its deadline did not show, for the failure's reason."""
    if silent:
        return (
            "no heartbeat since it was granted"
            if view.last_seen == float("-inf")
            else f"silent since {view.last_seen:.0f}"
        )
    if view.booted_image != image:
        return f"it runs {view.booted_image or 'no known image'}, not {image}"
    if not view.healthy:
        return "units not healthy"
    return "no steady-state report"


def _next_state(rollout: Rollout, actions: list[Action]) -> tuple[Rollout, list[Action]]:
    """A failure pauses or rolls back; a rollout with nothing left to do completes."""
    failed = [a for a in actions if a.kind is Kind.FAILED]
    if failed and rollout.state in GRANTING:
        names = ", ".join(a.node or "" for a in failed)
        if rollout.state is State.RUNNING and rollout.spec.auto_rollback:
            reason = f"{names} failed: rolling back to {rollout.spec.previous_image}"
            return (
                dataclasses.replace(
                    rollout, state=State.ROLLING_BACK, reverting=True, reason=reason
                ),
                [*actions, Action(Kind.ROLL_BACK, reason)],
            )
        what = "rolling back" if rollout.reverting else "updating"
        reason = f"{names} failed while {what}: paused for a person to look"
        return (
            dataclasses.replace(rollout, state=State.PAUSED, reason=reason),
            [*actions, Action(Kind.PAUSE, reason)],
        )
    if rollout.state is State.RUNNING and rollout.count(NodeState.DONE) == len(rollout.nodes):
        reason = f"every node runs {rollout.spec.target_image}"
        return (
            dataclasses.replace(rollout, state=State.DONE, reason=reason),
            [*actions, Action(Kind.COMPLETE, reason)],
        )
    if (
        rollout.state is State.ROLLING_BACK
        and not _to_revert(rollout)
        and not rollout.count(*HANDLED)
    ):
        reason = f"every node the rollout touched runs {rollout.spec.previous_image} again"
        return (
            dataclasses.replace(rollout, state=State.ROLLED_BACK, reason=reason),
            [*actions, Action(Kind.COMPLETE, reason)],
        )
    return rollout, actions


def _to_revert(rollout: Rollout) -> list[str]:
    """What a rollback still has to do, in order: nodes on (or on their way to) the target
    image, and failed nodes (a rollback resumed after one failed tries it again)."""
    touched = HANDLED | {NodeState.DONE}
    return [
        i
        for i, p in sorted(rollout.nodes.items())
        if (p.state is NodeState.FAILED and p.image is not None)
        or (p.state in touched and p.image == rollout.spec.target_image)
    ]


def _give_back(rollout: Rollout, actions: list[Action]) -> tuple[Rollout, list[Action]]:
    """Rolling back or aborted: nodes drained (or failed draining) but never rebooted go
    back to the scheduler, as they were."""
    nodes = dict(rollout.nodes)
    more: list[Action] = []
    for node in sorted(nodes):
        progress = nodes[node]
        if progress.image is None and progress.state in (NodeState.DRAINING, NodeState.FAILED):
            nodes[node], steps = _finish(rollout, node, progress, "never rebooted")
            more += steps
    return dataclasses.replace(rollout, nodes=nodes), [*actions, *more]


def _release_failed(rollout: Rollout, actions: list[Action]) -> tuple[Rollout, list[Action]]:
    """An aborted rollout gives back the slots its failed nodes hold."""
    nodes = dict(rollout.nodes)
    more = []
    for node in sorted(nodes):
        failed = nodes[node]
        if failed.state is NodeState.FAILED and failed.slot and failed.image is not None:
            nodes[node] = dataclasses.replace(failed, slot=False)
            more.append(
                Action(Kind.RELEASE, "rollout aborted: the failed node's slot is given back", node)
            )
    return dataclasses.replace(rollout, nodes=nodes), [*actions, *more]


def _grant(
    rollout: Rollout,
    view: Mapping[str, NodeView],
    silent: frozenset[str],
    now: float,
    actions: list[Action],
) -> tuple[Rollout, list[Action]]:
    """Hand out slots, never more than max_unavailable out: drains first where the role
    drains, then the image."""
    slotted = frozenset(i for i, p in rollout.nodes.items() if p.slot)
    load = _Load(rollout.max_unavailable, len(slotted), slotted | silent, silent)
    nodes = dict(rollout.nodes)
    more: list[Action] = []
    reverting = rollout.state is State.ROLLING_BACK
    image = rollout.spec.previous_image if reverting else rollout.spec.target_image
    kind = Kind.ROLLBACK_NODE if reverting else Kind.GRANT
    for node in _candidates(rollout, view, reverting):
        progress, work = nodes[node], view[node].workload
        step = _step(rollout, progress, work, reverting)
        if step is None:
            continue
        if not progress.slot:
            if not load.admits(node):
                continue
            load = load.taken(node)
        reason = _grant_reason(rollout, node, progress, load, view[node])
        if step is Kind.DRAIN:
            nodes[node] = dataclasses.replace(
                progress,
                state=NodeState.DRAINING,
                granted_at=now,
                slot=True,
                jobs=work.jobs,
                held=progress.held or work.held,
                reason="",
            )
            more.append(Action(Kind.DRAIN, _drain_reason(work, reason), node))
            continue
        nodes[node] = NodeProgress(NodeState.GRANTED, image, now, slot=True, held=progress.held)
        more.append(Action(kind, reason, node, image))
    return dataclasses.replace(rollout, nodes=nodes), [*actions, *more]


def _step(rollout: Rollout, progress: NodeProgress, work: Workload, reverting: bool) -> Kind | None:
    """A candidate's next step: DRAIN it, GRANT it (its image), or None (not yet)."""
    if rollout.spec.drain is None:
        return Kind.GRANT
    if progress.state is NodeState.DRAINING:
        return Kind.GRANT if work.drained and work.jobs == 0 else None
    back = progress.state in (NodeState.DONE, NodeState.RESUMING) and not progress.held
    if progress.state is NodeState.PENDING or (reverting and back):
        return Kind.DRAIN
    return Kind.GRANT


def _candidates(rollout: Rollout, view: Mapping[str, NodeView], reverting: bool) -> list[str]:
    """The nodes that would take a step now, in the order they take them: draining nodes
    (holding slots already) first; then, where the role drains, the nodes with no job
    running, then the busy ones by their job count (nodes not counted yet wait)."""
    if reverting:
        return _to_revert(rollout)
    draining = [i for i in sorted(rollout.nodes) if rollout.nodes[i].state is NodeState.DRAINING]
    pending = [i for i in sorted(rollout.nodes) if rollout.nodes[i].state is NodeState.PENDING]
    canaries_done = all(rollout.nodes[c].state is NodeState.DONE for c in rollout.canaries)
    if not canaries_done:
        pending = [i for i in pending if i in rollout.canaries]
    if rollout.spec.drain is not None:
        counted = [i for i in pending if view[i].workload.jobs is not None]
        pending = sorted(counted, key=lambda i: (view[i].workload.jobs or 0, i))
    return draining + pending


def _drain_reason(work: Workload, reason: str) -> str:
    jobs = {0: "no job running", None: "jobs not counted yet"}.get(
        work.jobs, f"{work.jobs} job(s) running"
    )
    held = f"; drained already ({work.held}): left drained after" if work.held else ""
    return f"draining ({jobs}{held}); {reason}"


def _grant_reason(
    rollout: Rollout, node: str, before: NodeProgress, load: _Load, view: NodeView
) -> str:
    slots = f"{load.slots} of {rollout.max_unavailable} slots in use"
    if before.state is NodeState.DRAINING:
        slots = "drained, no job running, in the slot it holds"
    if rollout.state is State.ROLLING_BACK:
        was = f"{before.state.value} on {before.image}"
        return (
            f"rolling back ({was}); {slots}"
            if not before.slot
            else f"rolling back ({was}), in the slot it holds"
        )
    role = "canary" if node in rollout.canaries else "next in order"
    down = "; silent, out already" if node in load.silent else ""
    return (
        f"{role}: {view.booted_image or 'unknown image'} → {rollout.spec.target_image}; "
        f"{slots}{down}"
    )


# -- the JSON form -------------------------------------------------------------------------

_REQUIRED: Any = object()
_E = TypeVar("_E", bound=StrEnum)
T = TypeVar("T")


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _get(
    data: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], default: Any = _REQUIRED
) -> Any:
    """data[key] when it has one of kinds (a bool is no number here), else RecordError."""
    value = data.get(key, default)
    if value is _REQUIRED:
        raise RecordError(f"{key}: missing")
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
        raise RecordError(f"{key}: expected {names}, got {type(value).__name__}")
    return value


def _drain(data: Any) -> Drain | None:
    if data is None:
        return None
    try:
        return Drain.from_json(data)
    except DrainError as exc:
        raise RecordError(f"drain: {exc}") from None


def _enum(kind: type[_E], value: str, key: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(k.value for k in kind)
        raise RecordError(f"{key}: unknown {value!r} (one of {known})") from None
