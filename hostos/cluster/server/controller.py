"""The rollout controller: on the elected replica, read → `rollout.plan` → write, in a loop.

Every `hostos serve` runs a `Controller` thread; only the one holding the store's
`rollout-controller` claim (`KV.campaign`, an etcd lease underneath) acts.  A round reads each
role's current rollout and the node records, asks the pure planner what to do, and writes
the outcome in ONE transaction per role: the rollout's next value, the FleetLock slot table
(grants and releases) and the `assigned_image` of each granted node, compared against the
revisions it read.  So a grant is never written without the rollout that explains it, a
second replica that wrongly believes it leads loses the compare, and an operator's command
(which writes the rollout key) makes the round in flight start over from a fresh read.

Rounds are woken by writes to rollouts, slot tables and the records of nodes in an active
rollout (a store watch; the heartbeats of the rest of the fleet wake nothing) and by a short
tick (deadlines pass without any write).  The node records a round plans on come from the
watch itself (`StoreCache`: node records, current rollouts, slot tables), not from reading
the store each round; a round that writes reads the slot table and the granted nodes'
records fresh (agents write those too: one `get_many`), and everything its transaction
writes is compared with the revision it planned on, so a round on a cache behind the store
loses the compare, reads those keys again and starts over.  A replica that fails to refresh
its claim, or finds another holder, stops acting before its next write.

The rollout commands (`start_rollout`, `command`) live here too: they are read-modify-writes
of the same key, with the same compare-and-swap.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hostos.cluster.records import NodeRecord, SlotTable
from hostos.cluster.rollout import fleetlock
from hostos.cluster.rollout import plan as rollout
from hostos.cluster.rollout.plan import (
    Decision,
    Kind,
    NodeView,
    Rollout,
    RolloutError,
    RolloutSpec,
    Workload,
)
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import Contention, FleetStore, NotFound
from hostos.cluster.store.kv import KV, MAX_TXN_OPS, Compacted, Compare, Entry
from hostos.logfmt import kv as logfmt
from hostos.site.rollout import RolloutPolicy, rollout_policy

T = TypeVar("T")
log = logging.getLogger(__name__)

CAMPAIGN = "rollout-controller"
TTL = 10.0  # seconds a dead leader's claim outlives it
TICK = 1.0  # seconds between rounds when nothing is written
SETTLE = 0.005  # seconds a round waits after a wake-up, so a burst of writes is one round
GATHER = 0.02  # seconds between watch calls while only the rest of the fleet writes
WAKE_SLICE = 0.05  # seconds a watch call lasts while the drainer may wake a round
GRANTS_PER_TXN = 50  # etcd refuses more than 128 operations in one transaction
LOG_KEPT = 50  # actions kept with the rollout, for `hostos rollout status`
ATTEMPTS = 20
HEALTHY = frozenset({"healthy", "running"})  # unit health values that count as healthy
WATCHED = (keys.ROLLOUTS_CURRENT, keys.FLEETLOCK)  # and the nodes of active rollouts
SLOT_TAKING = frozenset({Kind.GRANT, Kind.ROLLBACK_NODE, Kind.DRAIN})


class Conflict(RolloutError):
    """A rollout command that the role's current rollout does not allow (HTTP 409)."""


class Workloads(Protocol):
    """What the controller asks of the drainer (server/drainer.py): drain rollouts only."""

    def follow(self, rollouts: Sequence[Rollout]) -> None:
        """The active rollouts, every round while this replica leads; [] when it does not."""

    def workloads(self, rollout: Rollout) -> Mapping[str, Workload]:
        """What is known now of each node's work in rollout."""


# -- pure parts ----------------------------------------------------------------------------


def view_of(record: NodeRecord, workload: Workload | None = None) -> NodeView:
    """What the planner sees of a node record: done needs the image booted, steady-state
    reported in this boot, and every unit healthy (`healthy`, or `running` without a check);
    in a drain rollout also the node's work, as the drainer saw it."""
    return NodeView(
        record.id,
        record.booted_image,
        steady=record.steady,
        healthy=all(h in HEALTHY for h in record.units.values()),
        last_seen=record.last_seen if record.last_seen > 0 else float("-inf"),
        heartbeat=record.heartbeat_seconds,
        workload=workload or Workload(),
    )


def previous_image(
    records: Sequence[NodeRecord], target: str, role_image: str | None
) -> str | None:
    """The image a role's nodes run now: the most common assignment (else booted image, else
    the role's spec image) that is not the target; None when they all have the target."""
    current = [r.assigned_image or r.booted_image or role_image for r in records]
    counted = Counter(i for i in current if i and i != target)
    if not counted:
        return None
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))[0][0]


def log_entries(decision: Decision, now: float) -> list[dict[str, Any]]:
    return [
        {"at": now, "kind": a.kind.value, "node": a.node, "image": a.image, "reason": a.reason}
        for a in decision.actions
    ]


@dataclass(frozen=True)
class Stored:
    """A rollout as `rollouts/current/<role>` holds it, with the recent actions."""

    rollout: Rollout
    log: tuple[dict[str, Any], ...] = ()
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.rollout.to_json(),
            "log": list(self.log[-LOG_KEPT:]),
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Stored:
        entries = data.get("log", []) if isinstance(data, Mapping) else []
        updated = data.get("updated_at", 0.0) if isinstance(data, Mapping) else 0.0
        return cls(
            Rollout.from_json(data),
            tuple(e for e in entries if isinstance(e, dict)) if isinstance(entries, list) else (),
            float(updated) if isinstance(updated, int | float) else 0.0,
        )

    def then(self, new: Rollout, entries: Sequence[dict[str, Any]], now: float) -> Stored:
        return Stored(new, (*self.log, *entries)[-LOG_KEPT:], now)


@dataclass(frozen=True)
class Writes:
    """One round's transaction for one role."""

    compares: list[Compare]
    puts: dict[str, bytes]
    rollout: Rollout
    refused: list[str]  # nodes whose grant did not fit (slot table full, or the batch)
    changed: bool  # False: every grant was refused and nothing else moved: write nothing


def round_writes(
    before: Stored,
    decision: Decision,
    rollout_rev: int,
    slots: Entry | None,
    records: Mapping[str, Entry | None],
    now: float,
) -> Writes:
    """The transaction that carries out decision: slot table, granted nodes' assignments and
    the rollout's next value, each compared with the revision it was read at."""
    role = before.rollout.spec.role
    limit = before.rollout.max_unavailable
    table: SlotTable | None = SlotTable.from_json(keys.decode(slots.value)) if slots else None
    read_table = table
    new, refused = decision.rollout, []
    compares = [
        Compare(keys.rollout(role), rollout_rev),
        Compare(keys.fleetlock(role), slots.revision if slots else 0),
    ]
    puts: dict[str, bytes] = {}
    for action in decision.actions:
        node = action.node or ""
        if action.kind in SLOT_TAKING:
            outcome = fleetlock.acquire(table, node, role, limit)
            if not outcome.ok or len(puts) >= GRANTS_PER_TXN:
                new = rollout.grant_refused(new, before.rollout, node)
                refused.append(node)
                continue
            table = outcome.table
            if action.kind is Kind.DRAIN:
                continue  # the slot only: the drainer does the rest
            entry = records.get(node)
            record = NodeRecord.from_json(keys.decode(entry.value)) if entry else NodeRecord(node)
            compares.append(Compare(keys.node(node), entry.revision if entry else 0))
            puts[keys.node(node)] = keys.encode(
                dataclasses.replace(record, assigned_image=action.image).to_json()
            )
        elif action.kind is Kind.RELEASE:
            table = fleetlock.release(table, node, role).table
    changed = bool(puts) or table != read_table or new != before.rollout
    if table is not None and table != read_table:
        puts[keys.fleetlock(role)] = keys.encode(table.to_json())
    kept = [
        e
        for e in log_entries(decision, now)
        if e["node"] not in refused or e["kind"] not in SLOT_TAKING
    ]
    stored = before.then(new, kept, now)
    puts[keys.rollout(role)] = keys.encode(stored.to_json())
    if new.state in rollout.FINAL:
        puts[keys.ROLLOUTS_HISTORY + keys.checked(new.id, "rollout id")] = keys.encode(
            stored.to_json()
        )
    return Writes(compares, puts, new, refused, changed)


# -- the store side of rollouts ------------------------------------------------------------


def read(kv: KV, role: str) -> tuple[Stored, int] | None:
    entry = kv.get(keys.rollout(role))
    if entry is None:
        return None
    return Stored.from_json(keys.decode(entry.value)), entry.revision


def current(kv: KV) -> list[Stored]:
    return [Stored.from_json(keys.decode(e.value)) for e in kv.range(keys.ROLLOUTS_CURRENT)]


@dataclass(frozen=True)
class Ask:
    """What an operator asks for at start; a value left None comes from the role's
    `rollout:` in the published site, else from RolloutSpec's defaults."""

    role: str
    target_image: str
    previous_image: str = ""
    max_unavailable: int | str | None = None
    canary: int | None = None
    health_timeout: float | None = None
    auto_rollback: bool | None = None
    drain: bool = True  # False: reboot without the role's drain (jobs on the nodes die)


def spec_for(ask: Ask, policy: RolloutPolicy) -> RolloutSpec:
    """The rollout spec: the operator's values over the role's policy over the defaults."""
    default = RolloutSpec(ask.role, ask.target_image, ask.previous_image)
    chosen = {
        key: next(
            (v for v in (getattr(ask, key), getattr(policy, key)) if v is not None),
            getattr(default, key),
        )
        for key in ("max_unavailable", "canary", "health_timeout", "auto_rollback")
    }
    return dataclasses.replace(default, **chosen, drain=policy.drain if ask.drain else None)


def start_asked(state: FleetStore, ask: Ask) -> Stored:
    """Start a rollout as an operator asked, with the role's policy from the current
    generation (checked again: the store is input too)."""
    site = state.generation()
    if site is None or ask.role not in site.roles:
        raise NotFound(f"no role '{ask.role}' in the current site generation")
    role_spec = site.roles[ask.role]
    try:
        policy = rollout_policy(role_spec if isinstance(role_spec, Mapping) else {})
    except ValueError as exc:
        raise RolloutError(f"the role's rollout policy in the published site: {exc}") from None
    return start_rollout(state, spec_for(ask, policy))


def start_rollout(state: FleetStore, spec: RolloutSpec) -> Stored:
    """Start a rollout of spec.role (previous_image "" = what the role's nodes run now).
    NotFound: no such role or image; Conflict: a rollout of the role is still active."""
    site = state.generation()
    if site is None or spec.role not in site.roles:
        raise NotFound(f"no role '{spec.role}' in the current site generation")
    if state.image(spec.target_image) is None:
        raise NotFound(
            f"no image '{spec.target_image}' is registered (POST /v1/images/<name> first)"
        )
    records = state.role_nodes(spec.role)  # not the whole fleet's records
    if not records:
        raise RolloutError(f"role {spec.role} has no nodes in the inventory")
    role_spec = site.roles[spec.role]
    role_image = role_spec.get("image") if isinstance(role_spec, Mapping) else None
    previous = spec.previous_image or previous_image(
        records, spec.target_image, role_image if isinstance(role_image, str) else None
    )
    if previous is None:
        raise RolloutError(f"every node of {spec.role} has {spec.target_image} already")
    spec = dataclasses.replace(spec, previous_image=previous)
    now = state.clock()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    started = rollout.start(
        spec,
        [view_of(r) for r in records],
        now,
        rollout_id=f"{spec.role}-{stamp}-{uuid.uuid4().hex[:6]}",
    )
    stored = Stored(
        started,
        ({"at": now, "kind": "start", "node": None, "image": None, "reason": started.reason},),
        now,
    )
    key = keys.rollout(spec.role)
    for _ in range(ATTEMPTS):
        entry = state.kv.get(key)
        puts = {key: keys.encode(stored.to_json())}
        if entry is not None:
            old = Stored.from_json(keys.decode(entry.value))
            if old.rollout.state not in (*rollout.FINAL, rollout.State.ABORTED):
                raise Conflict(
                    f"rollout {old.rollout.id} of {spec.role} is "
                    f"{old.rollout.state.value}: abort it first"
                )
            puts[keys.ROLLOUTS_HISTORY + keys.checked(old.rollout.id, "rollout id")] = keys.encode(
                old.to_json()
            )
        if state.kv.txn([Compare(key, entry.revision if entry else 0)], puts) is not None:
            log.info(
                logfmt(
                    "rollout-start",
                    id=started.id,
                    role=spec.role,
                    image=spec.target_image,
                    previous=previous,
                    max_unavailable=started.max_unavailable,
                    canaries=",".join(started.canaries),
                )
            )
            return stored
    raise Contention(f"gave up starting a rollout of {spec.role}")


COMMANDS: dict[str, Callable[[Rollout, float], Rollout]] = {
    "pause": lambda r, _: rollout.pause(r),
    "resume": rollout.resume,
    "abort": lambda r, _: rollout.abort(r),
    "rollback": lambda r, _: rollout.rollback(r),
}


def command(state: FleetStore, role: str, name: str) -> Stored:
    """An operator's pause/resume/abort/rollback of role's rollout; NotFound when there is
    none, Conflict when its state does not allow the command."""
    change = COMMANDS[name]
    key = keys.rollout(role)
    for _ in range(ATTEMPTS):
        found = read(state.kv, role)
        if found is None:
            raise NotFound(f"no rollout of role '{role}'")
        stored, revision = found
        now = state.clock()
        try:
            new = change(stored.rollout, now)
        except RolloutError as exc:
            raise Conflict(str(exc)) from None
        updated = stored.then(
            new, [{"at": now, "kind": name, "node": None, "image": None, "reason": new.reason}], now
        )
        if state.kv.txn([Compare(key, revision)], {key: keys.encode(updated.to_json())}):
            log.info(logfmt(f"rollout-{name}", id=new.id, role=role, state=new.state.value))
            return updated
    raise Contention(f"gave up writing the rollout of {role}")


# -- the loop ------------------------------------------------------------------------------


class StoreCache:
    """What the controller plans on, as its own watch saw it: node records, current rollouts
    and slot tables (each decoded once per revision), with its own writes put in at once.
    The keys a round writes that agents write too are read again first (`refresh`), and
    every write is compared with the revision planned on."""

    PREFIXES = (keys.NODES, keys.ROLLOUTS_CURRENT, keys.FLEETLOCK)

    def __init__(self) -> None:
        self.loaded = False
        self._entries: dict[str, Entry] = {}
        self._decoded: dict[str, tuple[int, Any]] = {}

    def load(self, kv: KV) -> int:
        """Read every cached key; the revision to watch after (taken first: a write
        meanwhile is seen twice, never missed)."""
        revision = kv.revision()
        self._entries = {e.key: e for prefix in self.PREFIXES for e in kv.range(prefix)}
        self._decoded.clear()
        self.loaded = True
        return revision

    def apply(self, entries: Iterable[Entry]) -> set[str]:
        """Take in watched (or just written) entries; the ids of the nodes written."""
        written = set()
        for entry in entries:
            if not entry.key.startswith(self.PREFIXES):
                continue
            if entry.key.startswith(keys.NODES):
                written.add(keys.last_segment(entry.key))
            seen = self._entries.get(entry.key)
            if seen is not None and seen.revision > entry.revision:
                continue  # an own write applied before the watch brought an older one
            if entry.value:
                self._entries[entry.key] = entry
            else:
                self._entries.pop(entry.key, None)
        return written

    def refresh(self, kv: KV, wanted: Sequence[str]) -> dict[str, Entry | None]:
        """Read keys from the store now (MAX_TXN_OPS to a read), into the cache too."""
        found: dict[str, Entry | None] = {}
        for start in range(0, len(wanted), MAX_TXN_OPS):
            found.update(kv.get_many(list(wanted[start : start + MAX_TXN_OPS])))
        for key, entry in found.items():
            self._decoded.pop(key, None)
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry
        return found

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def record(self, node_id: str) -> NodeRecord | None:
        return self._decode(keys.node(node_id), NodeRecord.from_json)

    def rollouts(self) -> list[tuple[Entry, Stored]]:
        """Each role's current rollout with the entry it was read from, by role."""
        found = []
        for key in sorted(k for k in self._entries if k.startswith(keys.ROLLOUTS_CURRENT)):
            stored = self._decode(key, Stored.from_json)
            if stored is not None:
                found.append((self._entries[key], stored))
        return found

    def _decode(self, key: str, decode: Callable[[Any], T]) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        decoded = self._decoded.get(key)
        if decoded is None or decoded[0] != entry.revision:
            decoded = entry.revision, decode(keys.decode(entry.value))
            self._decoded[key] = decoded
        value: T = decoded[1]
        return value


class Controller:
    """The rollout loop of one server process; acts only while it holds the claim."""

    def __init__(
        self,
        state: FleetStore,
        holder: str | None = None,
        ttl: float = TTL,
        tick: float = TICK,
        silent_after: float = rollout.SILENT_AFTER,
        drainer: Workloads | None = None,
    ) -> None:
        self.state, self.kv = state, state.kv
        self.drainer = drainer  # runs the drains of roles that drain (None: such wait)
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ttl, self.tick, self.silent_after = ttl, tick, silent_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leading_until = 0.0  # monotonic: act only before this
        self._refreshed = float("-inf")
        self._cache = StoreCache()
        self._after = 0  # the store revision the watch has seen
        self._watched: frozenset[str] = frozenset()  # the nodes of active rollouts
        self._draining = False  # an active rollout drains: the drainer's news wakes rounds
        self._woken = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rollout-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 15)

    def wake(self) -> None:
        """Plan again soon: the drainer saw a node's work change (its `wake`)."""
        self._woken.set()

    @property
    def leading(self) -> bool:
        return time.monotonic() < self._leading_until

    def campaign(self) -> bool:
        """Take or refresh the claim (at most every ttl/3); False means: do not act."""
        now = time.monotonic()
        if self.leading and now - self._refreshed < self.ttl / 3:
            return True
        was = self.leading
        try:
            won = self.kv.campaign(CAMPAIGN, self.holder, self.ttl)
        except Exception as exc:
            won = False
            log.warning(logfmt("controller-campaign-failed", error=str(exc)))
        if won:
            self._refreshed = now
            self._leading_until = now + self.ttl * 2 / 3  # give up well before the lease ends
            if not was:
                log.info(logfmt("controller-leading", holder=self.holder))
        else:
            self._leading_until = 0.0
            if was:
                log.warning(logfmt("controller-lost-claim", holder=self.holder))
        return won

    def _run(self) -> None:
        self._after = self._revision()
        while not self._stop.is_set():
            busy = False
            if self.campaign():
                try:
                    busy = self.round()
                except Exception as exc:  # the store away, a record of the wrong shape
                    log.warning(
                        logfmt("controller-round-failed", error=f"{type(exc).__name__}: {exc}")
                    )
                    self._cache.loaded = False  # read them again
                    self._stop.wait(self.tick)
            if not self.leading:
                self._cache.loaded = False  # a leader-to-be reads them when it leads
                if self.drainer is not None:
                    self.drainer.follow([])  # only the leader runs drain commands
                self._stop.wait(min(self.ttl / 3, self.tick * 3))
                continue
            # after a write, what it wrote is in the watch at once: into the cache first
            self.follow(SETTLE if busy else self.tick)
            self._stop.wait(SETTLE)

    def _revision(self) -> int:
        while not self._stop.is_set():
            try:
                return self.kv.revision()
            except Exception as exc:
                log.warning(logfmt("controller-store-away", error=str(exc)))
                self._stop.wait(self.tick)
        return 0

    def _lost_track(self) -> None:
        """The watch cannot go on from where it was: read the cache again."""
        self._cache.loaded = False
        self._after = self._revision()

    def follow(self, timeout: float) -> None:
        """Follow the store until a watched key is written or timeout passes, keeping the
        node cache up (the loop does this between rounds; a test driving rounds by hand
        calls it after its writes)."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._woken.is_set():
                self._woken.clear()
                return
            if self._draining:
                remaining = min(remaining, WAKE_SLICE)
            try:
                entries = self.kv.watch("", self._after, remaining)
            except Compacted:
                self._lost_track()
                return
            except Exception as exc:
                log.warning(logfmt("controller-watch-failed", error=str(exc)))
                self._stop.wait(min(remaining, self.tick))
                self._lost_track()
                return
            if entries:
                self._after = max(self._after, *(e.revision for e in entries))
                written = self._cache.apply(entries)
                if not written.isdisjoint(self._watched) or any(
                    e.key.startswith(WATCHED) for e in entries
                ):
                    return
                self._stop.wait(GATHER)  # the fleet's heartbeats: gathered, not one by one

    def round(self) -> bool:
        """Plan every active rollout once; True when something was written or a compare
        lost (so the next round comes at once)."""
        if not self._cache.loaded:
            self._after = self._cache.load(self.kv)
        active = [(e, s) for e, s in self._cache.rollouts() if s.rollout.state not in rollout.FINAL]
        self._watched = frozenset(n for _, s in active for n in s.rollout.nodes)
        if self.drainer is not None:
            self.drainer.follow([s.rollout for _, s in active])
        self._draining = any(s.rollout.spec.drain is not None for _, s in active)
        busy = False
        for entry, stored in active:
            busy |= self._role_round(entry, stored)
        return busy

    def _workloads(self, active: Rollout) -> Mapping[str, Workload]:
        if active.spec.drain is None or self.drainer is None:
            return {}
        return self.drainer.workloads(active)

    def _role_round(self, entry: Entry, stored: Stored) -> bool:
        now = self.state.clock()
        records = (self._cache.record(i) for i in stored.rollout.nodes)
        work = self._workloads(stored.rollout)
        views = [view_of(r, work.get(r.id)) for r in records if r is not None]
        decision = rollout.plan(stored.rollout, views, now, silent_after=self.silent_after)
        if decision.rollout == stored.rollout and not decision.actions:
            return False
        role = stored.rollout.spec.role
        nodes = {n: self._cache.entry(keys.node(n)) for n in (a.node for a in decision.grants) if n}
        writes = round_writes(
            stored, decision, entry.revision, self._cache.entry(keys.fleetlock(role)), nodes, now
        )
        if not writes.changed or not self.leading:  # (the claim may have ended meanwhile)
            return False
        revision = self.kv.txn(writes.compares, writes.puts)
        if revision is None:
            log.info(logfmt("controller-retry", role=role, why="a record changed meanwhile"))
            self._cache.refresh(self.kv, [c.key for c in writes.compares])
            return True
        self._cache.apply(Entry(k, v, revision) for k, v in writes.puts.items())
        for action in decision.actions:
            if action.node not in writes.refused or action not in decision.grants:
                log.info(
                    logfmt(
                        f"rollout-{action.kind.value}",
                        id=stored.rollout.id,
                        role=role,
                        node=action.node,
                        image=action.image,
                        reason=action.reason,
                    )
                )
        if writes.refused:
            log.info(
                logfmt(
                    "rollout-grant-deferred",
                    role=role,
                    nodes=",".join(writes.refused),
                    why="slot table full or batch limit",
                )
            )
        return True
