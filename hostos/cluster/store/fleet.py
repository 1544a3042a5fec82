"""The domain repository: the cluster's records read and written through the `KV` protocol.

Every read-modify-write is a compare-and-swap on the revisions of the keys it read, retried
when another writer (another request, another replica) got there first.  Inventory facts
(a node's role and MAC) are not copied into node records: they are read from the current
site generation, so publishing a site is one small transaction whatever the fleet's size.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from hostos.cluster.records import (
    Generation,
    Heartbeat,
    ImageRecord,
    NodeRecord,
    SiteDocument,
    SlotTable,
)
from hostos.cluster.rollout import fleetlock
from hostos.cluster.rollout import plan as rollout
from hostos.cluster.store import keys
from hostos.cluster.store.kv import KV, MAX_TXN_OPS, Compare, Entry

log = logging.getLogger(__name__)

ATTEMPTS = 50  # compare-and-swap rounds before giving up (each loses only to a real write)
DEFAULT_GROUP = "default"  # FleetLock's default group: means "the node's role" here
ACTIVE_ROLLOUT = frozenset(s.value for s in rollout.GRANTING)  # as stored
FINAL_ROLLOUT = frozenset(s.value for s in rollout.FINAL)
GENERATIONS_CACHED = 4
GENERATIONS_KEPT = 10  # in the store: enough to look back, bounded for etcd's space quota

T = TypeVar("T")
Writes = dict[str, bytes | None]  # key → new value; None deletes the key


class Contention(RuntimeError):
    """A compare-and-swap lost ATTEMPTS times in a row."""


class NotFound(LookupError):
    """A node, image or generation that the store does not hold."""


@dataclass(frozen=True)
class Published:
    generation: int
    hash: str
    changed: bool  # False: the site had this hash already


@dataclass(frozen=True)
class NodeConfig:
    """What a node's agent long-polls for: its role's resolved spec in one generation."""

    generation: int
    hash: str
    node: str
    role: str
    spec: Any
    labels: Mapping[str, Any]
    assigned_image: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "hash": self.hash,
            "node": self.node,
            "role": self.role,
            "spec": self.spec,
            "labels": dict(self.labels),
            "assigned_image": self.assigned_image,
        }


class FleetStore:
    """The cluster's records (site generations, nodes, heartbeats, images, rollouts, slot
    tables) read and written through a KV: SQLite for one server, etcd for replicas."""

    def __init__(self, kv: KV, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock
        self._generations: dict[int, Generation] = {}
        self._cache_lock = threading.Lock()
        self._loading = threading.Lock()

    # -- compare-and-swap ------------------------------------------------------------------

    def _update(
        self, names: list[str], change: Callable[[dict[str, Entry | None]], tuple[Writes, T]]
    ) -> T:
        """Read names, let change compute the writes and a result, write them if none of
        names was written meanwhile; again from the read when one was."""
        return self._update_on(names, lambda read: (*change(read), names))

    def _update_on(
        self,
        names: list[str],
        change: Callable[[dict[str, Entry | None]], tuple[Writes, T, list[str]]],
    ) -> T:
        """`_update`, where change also says which of the keys read its writes depend on:
        only those are compared (a key read but not used cannot make the write lose)."""
        for _ in range(ATTEMPTS):
            read = self.kv.get_many(names)
            writes, result, used = change(read)
            if not writes:
                return result
            compares = [Compare(n, _revision(read[n])) for n in used]
            puts = {k: v for k, v in writes.items() if v is not None}
            deletes = [k for k, v in writes.items() if v is None and read.get(k) is not None]
            if self.kv.txn(compares, puts, deletes) is not None:
                return result
        raise Contention(f"gave up writing {', '.join(names)} after {ATTEMPTS} attempts")

    def _load(self, key: str) -> Any:
        entry = self.kv.get(key)
        return None if entry is None else keys.decode(entry.value)

    # -- the site --------------------------------------------------------------------------

    def current_generation(self) -> int:
        current = self._load(keys.SITE_CURRENT)
        return int(current["generation"]) if current else 0

    def generation(self, number: int | None = None) -> Generation | None:
        """Generation `number`, or the current one. Generations never change once written,
        so the last few read are kept in memory, and one thread reads a new one while the
        others (a fleet's long-polls, woken by its publish) wait for it."""
        number = self.current_generation() if number is None else number
        if number <= 0:
            return None
        cached = self._cached(number)
        if cached is not None:
            return cached
        with self._loading:
            cached = self._cached(number)
            if cached is not None:
                return cached
            generation = self._read_generation(number)
            if generation is not None:
                with self._cache_lock:
                    self._generations[number] = generation
                    for old in sorted(self._generations)[:-GENERATIONS_CACHED]:
                        del self._generations[old]
            return generation

    def _cached(self, number: int) -> Generation | None:
        with self._cache_lock:
            return self._generations.get(number)

    def _read_generation(self, number: int) -> Generation | None:
        header = self._load(keys.site_gen(number))
        if header is None:
            return None
        body = b"".join(self._chunk(str(header["body"]), i) for i in range(int(header["chunks"])))
        return Generation.from_json({**header, **keys.decode(body)})

    def _chunk(self, body: str, index: int) -> bytes:
        entry = self.kv.get(keys.site_blob(body, index))
        if entry is None:
            raise NotFound(f"site body {body}: chunk {index} is missing from the store")
        return entry.value

    def publish(self, site: SiteDocument) -> Published:
        """A new generation when the site's hash differs from the current one's. The body
        goes in first, in chunks under a name of its own (any size fits etcd's request
        limit); then one small transaction makes the generation current, and generations
        older than the last GENERATIONS_KEPT are deleted."""
        digest = site.hash()
        latest = self.generation()
        if latest is not None and latest.hash == digest:
            return Published(latest.generation, digest, False)
        body, pieces = uuid.uuid4().hex, keys.chunks(keys.encode(site.to_json()))
        for index, piece in enumerate(pieces):
            self.kv.put(keys.site_blob(body, index), piece)

        def change(read: dict[str, Entry | None]) -> tuple[Writes, Published]:
            entry = read[keys.SITE_CURRENT]
            number = int(keys.decode(entry.value)["generation"]) if entry else 0
            current = self.generation(number)
            if current is not None and current.hash == digest:
                return {}, Published(number, digest, False)
            new = Generation.of(number + 1, site, self.clock())
            header = {**new.summary(), "body": body, "chunks": len(pieces)}
            return (
                {
                    keys.SITE_CURRENT: keys.encode({"generation": new.generation}),
                    keys.site_gen(new.generation): keys.encode(header),
                },
                Published(new.generation, digest, True),
            )

        published = self._update([keys.SITE_CURRENT], change)
        if not published.changed:  # the same site went in meanwhile: ours is not needed
            self.kv.txn((), {}, [keys.site_blob(body, i) for i in range(len(pieces))])
            return published
        log.info(
            "published site generation %s (%s, %d bytes)",
            published.generation,
            digest[:12],
            sum(len(p) for p in pieces),
        )
        self.prune(published.generation - GENERATIONS_KEPT + 1)
        return published

    def prune(self, below: int) -> list[int]:
        """Delete the generations numbered below `below`, each with its body; the numbers
        deleted."""
        pruned = []
        for entry in self.kv.range(keys.SITE_GEN):
            number, header = int(keys.last_segment(entry.key)), keys.decode(entry.value)
            if number >= below:
                continue
            chunks = [keys.site_blob(str(header["body"]), i) for i in range(header["chunks"])]
            done = self.kv.txn([Compare(entry.key, entry.revision)], {}, [entry.key, *chunks])
            if done is not None:
                pruned.append(number)
        if pruned:
            log.info("pruned site generations %s", ", ".join(map(str, sorted(pruned))))
        return sorted(pruned)

    # -- nodes -----------------------------------------------------------------------------

    def _record(self, node_id: str) -> NodeRecord | None:
        data = self._load(keys.node(node_id))
        return None if data is None else NodeRecord.from_json(data)

    def node(self, node_id: str) -> NodeRecord | None:
        """The node's record with its role and MAC from the current inventory; None when
        neither the inventory nor a heartbeat knows it."""
        record = self._record(node_id)
        return self._view(record) if record else self._listed(node_id)

    def _listed(self, node_id: str) -> NodeRecord | None:
        site = self.generation()
        entry = site.nodes.get(node_id) if site else None
        return None if entry is None else _with_inventory(NodeRecord(node_id), entry)

    def _view(self, record: NodeRecord, generation: int | None = None) -> NodeRecord:
        """record with its role and MAC from the inventory of `generation` (default: the
        current one), when it is listed."""
        site = self.generation(generation)
        entry = site.nodes.get(record.id) if site else None
        return record if entry is None else _with_inventory(record, entry)

    def nodes(self) -> list[NodeRecord]:
        """Every node the inventory or a heartbeat knows, sorted by id."""
        site = self.generation()
        inventory = dict(site.nodes) if site else {}
        records = {
            r.id: r
            for r in (NodeRecord.from_json(keys.decode(e.value)) for e in self.kv.range(keys.NODES))
        }
        return [
            _with_inventory(records.get(i) or NodeRecord(i), inventory[i])
            if i in inventory
            else records[i]
            for i in sorted(set(inventory) | set(records))
        ]

    def role_nodes(self, role: str) -> list[NodeRecord]:
        """The nodes the current inventory gives `role`, sorted by id, with their records:
        `[n for n in nodes() if n.role == role]` without reading the rest of the fleet."""
        site = self.generation()
        listed = {
            i: e for i, e in (site.nodes.items() if site else ()) if str(e.get("role", "")) == role
        }
        ids = sorted(listed)
        found: dict[str, Entry | None] = {}
        for start in range(0, len(ids), MAX_TXN_OPS):
            found.update(self.kv.get_many([keys.node(i) for i in ids[start : start + MAX_TXN_OPS]]))
        return [_with_inventory(_node(found[keys.node(i)], i), listed[i]) for i in ids]

    def node_by_mac(self, mac: str) -> NodeRecord:
        """The node a MAC belongs to: the inventory's, else one known by heartbeat, else a
        new node named by the MAC."""
        wanted = keys.mac_id(mac)
        site = self.generation()
        for name, entry in site.nodes.items() if site else ():
            if isinstance(entry.get("mac"), str) and keys.mac_id(entry["mac"]) == wanted:
                return self.node(name) or NodeRecord(name)
        for record in self.nodes():
            if record.mac and keys.mac_id(record.mac) == wanted:
                return record
        return self.node(wanted) or NodeRecord(wanted, mac=wanted.replace("-", ":"))

    def config(self, node_id: str) -> NodeConfig | None:
        """The node's config in the current generation; None when it is not in it."""
        site = self.generation()
        if site is None or node_id not in site.nodes:
            return None
        record = self._record(node_id)
        return config_of(site, node_id, record.assigned_image if record else None)

    def heartbeat(self, node_id: str, beat: Heartbeat, generation: int | None = None) -> NodeRecord:
        """Write a heartbeat into the node's record; the record, with its role and MAC from
        the inventory of `generation` (the caller's current one, to save reading it)."""
        key = keys.node(node_id)

        def change(read: dict[str, Entry | None]) -> tuple[Writes, NodeRecord]:
            entry = read[key]
            old = _node(entry, node_id)
            new = beat.applied_to(old, self.clock())
            return {key: keys.encode(new.to_json())}, new

        return self._view(self._update([key], change), generation)

    def heartbeats(
        self, beats: Mapping[str, Heartbeat], generation: int | None = None
    ) -> dict[str, NodeRecord]:
        """Several nodes' heartbeats in one read and one transaction (at most MAX_TXN_OPS);
        when another writer changed one of the records meanwhile, each is written alone
        with its own compare-and-swap. Each node's record, as `heartbeat` answers it."""
        names = {node_id: keys.node(node_id) for node_id in beats}
        read = self.kv.get_many(list(names.values()))
        now = self.clock()
        new = {n: beats[n].applied_to(_node(read[k], n), now) for n, k in names.items()}
        compares = [Compare(k, e.revision if e else 0) for k, e in read.items()]
        puts = {names[n]: keys.encode(r.to_json()) for n, r in new.items()}
        if self.kv.txn(compares, puts) is None:
            return {n: self.heartbeat(n, beat, generation) for n, beat in beats.items()}
        return {n: self._view(r, generation) for n, r in new.items()}

    # -- images and assignments ------------------------------------------------------------

    def register_image(self, image: ImageRecord) -> ImageRecord:
        self.kv.put(keys.image(image.name), keys.encode(image.to_json()))
        log.info("registered image %s", image.name)
        return image

    def image(self, name: str) -> ImageRecord | None:
        data = self._load(keys.image(name))
        return None if data is None else ImageRecord.from_json(data)

    def images(self) -> list[ImageRecord]:
        return [ImageRecord.from_json(keys.decode(e.value)) for e in self.kv.range(keys.IMAGES)]

    def assign(self, node_id: str, image: str) -> NodeRecord:
        """Assign an image without a slot: a node's first image, or an admin's override.
        Rollouts assign through `grant`, which takes the slot in the same transaction."""
        if self.image(image) is None:
            raise NotFound(f"no image '{image}' is registered")
        key = keys.node(node_id)

        def change(read: dict[str, Entry | None]) -> tuple[Writes, NodeRecord]:
            entry = read[key]
            old = _node(entry, node_id)
            new = replace(old, assigned_image=image)
            return ({key: keys.encode(new.to_json())} if new != old else {}), new

        return self._view(self._update([key], change))

    # -- FleetLock -------------------------------------------------------------------------

    def group_of(self, node_id: str, group: str, generation: int | None = None) -> str:
        """FleetLock's "default" group (or none) means the node's role in the inventory of
        site `generation` (default: the current one, read from the store; the server passes
        the one its watcher follows, a read less per request), when it has one."""
        if group and group != DEFAULT_GROUP:
            return keys.checked(group, "group")
        site = self.generation(generation)
        entry = site.nodes.get(node_id) if site else None
        role = entry.get("role") if isinstance(entry, Mapping) else None
        return str(role) if role else DEFAULT_GROUP

    def slots(self, group: str) -> SlotTable:
        data = self._load(keys.fleetlock(group))
        return SlotTable() if data is None else SlotTable.from_json(data)

    def pre_reboot(self, node_id: str, group: str) -> fleetlock.Outcome:
        """Take (or keep) a slot of group, as many as the slot limit allows."""
        key, rollout_key = keys.fleetlock(group), keys.rollout(group)

        def change(read: dict[str, Entry | None]) -> tuple[Writes, fleetlock.Outcome, list[str]]:
            limit = _slot_limit(read[rollout_key])  # read with the table: one round trip
            outcome = fleetlock.acquire(_table(read[key]), node_id, group, limit)
            return _slot_writes(key, outcome), outcome, [key]

        return _logged(self._update_on([key, rollout_key], change))

    def release(self, node_id: str, group: str) -> fleetlock.Outcome:
        """Give back node_id's slot without marking it steady (the controller, for a node
        that failed or a rollout that was aborted)."""
        key = keys.fleetlock(group)

        def change(read: dict[str, Entry | None]) -> tuple[Writes, fleetlock.Outcome]:
            outcome = fleetlock.release(_table(read[key]), node_id, group)
            return _slot_writes(key, outcome), outcome

        return _logged(self._update([key], change))

    def steady_state(self, node_id: str, group: str) -> fleetlock.Outcome:
        """Mark the node steady in its current boot (the rollout counts a node done only
        once it is) and give back its slot.  A slot that a rollout's grant gave is given
        back by the rollout controller instead, in the same transaction as the next grant:
        then this request writes only the node's own record, and the steady-states of a
        whole batch do not queue on the group's one slot table (see docs/cluster.md)."""
        slot_key, node_key, rollout_key = (
            keys.fleetlock(group),
            keys.node(node_id),
            keys.rollout(group),
        )

        def change(read: dict[str, Entry | None]) -> tuple[Writes, fleetlock.Outcome, list[str]]:
            writes: Writes = {}
            record = _node(read[node_key], node_id)
            if read[node_key] is not None and record.boot_id and not record.steady:
                writes[node_key] = keys.encode(
                    replace(record, steady_boot_id=record.boot_id).to_json()
                )
            table = _table(read[slot_key])
            if (
                _granted_by_rollout(read[rollout_key], node_id)
                and table is not None
                and node_id in table.holders
            ):
                return (
                    writes,
                    fleetlock.Outcome(
                        True,
                        table,
                        False,
                        f"{node_id}'s slot of {group} goes back with the rollout's next grant",
                    ),
                    [node_key, rollout_key],
                )
            outcome = fleetlock.release(table, node_id, group)
            writes.update(_slot_writes(slot_key, outcome))
            return writes, outcome, [slot_key, node_key]

        return _logged(self._update_on([slot_key, node_key, rollout_key], change))

    # -- node tokens -----------------------------------------------------------------------

    def store_token_hash(self, node_id: str, digest: str) -> None:
        self.kv.put(keys.node_token(node_id), keys.encode({"sha256": digest}))

    def token_hash(self, node_id: str) -> str | None:
        data = self._load(keys.node_token(node_id))
        return str(data["sha256"]) if isinstance(data, dict) and "sha256" in data else None

    def revoke_token(self, node_id: str) -> bool:
        return self.kv.delete(keys.node_token(node_id))


def config_of(site: Generation, node_id: str, assigned: str | None) -> NodeConfig | None:
    """The node's config in site, with the image assigned to it; None when site does not
    list the node."""
    entry = site.nodes.get(node_id)
    if entry is None:
        return None
    role = str(entry.get("role", ""))
    labels = entry.get("labels", {})
    return NodeConfig(
        site.generation,
        site.hash,
        node_id,
        role,
        site.roles.get(role),
        labels if isinstance(labels, Mapping) else {},
        assigned,
    )


def _node(entry: Entry | None, node_id: str) -> NodeRecord:
    return NodeRecord.from_json(keys.decode(entry.value)) if entry else NodeRecord(node_id)


def _table(entry: Entry | None) -> SlotTable | None:
    return SlotTable.from_json(keys.decode(entry.value)) if entry else None


def _slot_limit(entry: Entry | None) -> int:
    """The max_unavailable of a group's rollout while it is active, else 1."""
    data = keys.decode(entry.value) if entry else None
    if isinstance(data, dict) and data.get("state", "running") in ACTIVE_ROLLOUT:
        limit = data.get("max_unavailable")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            return limit
    return 1


def _revision(entry: Entry | None) -> int:
    return entry.revision if entry else 0


def _granted_by_rollout(entry: Entry | None, node_id: str) -> bool:
    """The role's current rollout is not over and holds a slot for node_id: its controller
    releases that slot once the node is done (or the rollout gives it back otherwise)."""
    data = keys.decode(entry.value) if entry else None
    if not isinstance(data, dict) or data.get("state") in FINAL_ROLLOUT:
        return False
    nodes = data.get("nodes")
    progress = nodes.get(node_id) if isinstance(nodes, dict) else None
    return isinstance(progress, dict) and progress.get("slot") is True


def _slot_writes(key: str, outcome: fleetlock.Outcome) -> Writes:
    return {key: keys.encode(outcome.table.to_json())} if outcome.changed else {}


def _logged(outcome: fleetlock.Outcome) -> fleetlock.Outcome:
    if outcome.changed:
        log.info("fleetlock: %s", outcome.reason)
    return outcome


def _with_inventory(record: NodeRecord, entry: Mapping[str, Any]) -> NodeRecord:
    mac = entry.get("mac")
    return replace(
        record,
        role=str(entry.get("role", record.role)),
        mac=mac if isinstance(mac, str) else record.mac,
    )
