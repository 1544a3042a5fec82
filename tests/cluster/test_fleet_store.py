"""The domain repository over a real store of each kind (SQLite; etcd when integration runs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from hostos.cluster.records import Heartbeat, ImageRecord, SiteDocument, SlotTable
from hostos.cluster.server.changes import SITE, Changes, node_topic
from hostos.cluster.server.mirror import Mirror
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import GENERATIONS_KEPT, FleetStore, NotFound
from hostos.cluster.store.kv import KV, Compacted, Entry
from hostos.cluster.store.url import open_kv


def site(marker: str = "", **nodes: str) -> SiteDocument:
    nodes = nodes or {"cn001": "compute", "cn002": "compute", "st001": "storage"}
    return SiteDocument.from_json(
        {
            "roles": {r: {"image": "img-1", "marker": marker} for r in set(nodes.values())},
            "nodes": {
                n: {"role": r, "mac": f"52:54:00:00:00:{i:02x}"}
                for i, (n, r) in enumerate(sorted(nodes.items()), start=1)
            },
        }
    )


@pytest.fixture
def state(kv: KV) -> FleetStore:
    return FleetStore(kv, clock=lambda: 1000.0)


def test_publish_numbers_generations_by_hash(state: FleetStore) -> None:
    assert state.current_generation() == 0 and state.generation() is None
    first = state.publish(site("a"))
    assert (first.generation, first.changed) == (1, True)
    assert state.publish(site("a")) == first.__class__(1, first.hash, False)
    assert state.publish(site("b")).generation == 2
    assert state.generation(1) is not None and state.generation(1).roles["compute"]["marker"] == "a"
    assert state.generation().generation == 2  # type: ignore[union-attr]


def test_a_site_larger_than_a_chunk_reads_back_whole(kv: KV) -> None:
    big = site("x" * (3 * keys.CHUNK), cn001="compute")
    FleetStore(kv).publish(big)
    fresh = FleetStore(kv)  # no cache: read from the store
    generation = fresh.generation()
    assert generation is not None and generation.hash == big.hash()
    assert generation.roles == big.roles
    header = keys.decode(kv.get(keys.site_gen(1)).value)  # type: ignore[union-attr]
    assert header["chunks"] == 4


def test_nodes_join_inventory_and_heartbeats(state: FleetStore) -> None:
    state.publish(site())
    beat = Heartbeat(booted_image="img-1", units={"u": "healthy"}, generation=1)
    record = state.heartbeat("cn001", beat)
    assert (record.role, record.mac, record.last_seen) == ("compute", "52:54:00:00:00:01", 1000)
    state.heartbeat("stray", Heartbeat())
    assert [n.id for n in state.nodes()] == ["cn001", "cn002", "st001", "stray"]
    assert state.node("cn002") is not None and state.node("cn002").last_seen == 0  # type: ignore[union-attr]
    assert state.node("nobody") is None


def test_config_and_assignment(state: FleetStore) -> None:
    state.publish(site("cfg"))
    assert state.config("nobody") is None
    with pytest.raises(NotFound):
        state.assign("cn001", "img-9")
    state.register_image(ImageRecord("img-9"))
    state.assign("cn001", "img-9")
    state.heartbeat("cn001", Heartbeat(booted_image="img-1"))  # keeps the assignment
    config = state.config("cn001")
    assert config is not None
    assert (config.generation, config.role, config.assigned_image) == (1, "compute", "img-9")
    assert config.spec == {"image": "img-1", "marker": "cfg"}


def test_node_by_mac(state: FleetStore) -> None:
    state.publish(site())
    assert state.node_by_mac("52-54-00-00-00-02").id == "cn002"
    assert state.node_by_mac("52:54:00:00:00:03").id == "st001"
    stranger = state.node_by_mac("52:54:00:AA:BB:CC")
    assert (stranger.id, stranger.mac) == ("52-54-00-aa-bb-cc", "52:54:00:aa:bb:cc")


def test_concurrent_pre_reboots_never_exceed_the_limit(state: FleetStore) -> None:
    ids = [f"n{i}" for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda n: state.pre_reboot(n, "g"), ids))
    assert sum(o.ok for o in outcomes) == 1
    assert len(state.slots("g").holders) == 1
    state.kv.put(keys.rollout("g"), keys.encode({"state": "running", "max_unavailable": 3}))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: state.pre_reboot(n, "g"), ids))
    assert len(state.slots("g").holders) == 3
    for holder in state.slots("g").holders:
        assert state.steady_state(holder, "g").ok
    assert state.slots("g") == SlotTable((), 3)


def test_fleetlock_default_group_is_the_role(state: FleetStore) -> None:
    state.publish(site())
    assert state.group_of("st001", "default") == "storage"
    assert state.group_of("stray", "") == "default"
    assert state.group_of("cn001", "rack-1") == "rack-1"


def test_tokens(state: FleetStore) -> None:
    assert state.token_hash("cn001") is None
    state.store_token_hash("cn001", "ab")
    assert state.token_hash("cn001") == "ab"
    assert state.revoke_token("cn001") and state.token_hash("cn001") is None


def test_the_mirror_wakes_a_node_only_when_its_assignment_changes() -> None:
    mirror = Mirror()
    assert mirror.apply(
        [
            Entry("site/current", b'{"generation":2}', 1),
            Entry("site/gen/2", b"{}", 1),
            Entry("fleetlock/g", b"{}", 3),
            Entry("nodes/cn001", b'{"assigned_image":null}', 2),
        ]
    ) == {SITE, node_topic("cn001")}
    # a heartbeat rewrites the record, the assignment stays: nobody is woken
    assert (
        mirror.apply([Entry("nodes/cn001", b'{"assigned_image":null,"last_seen":5}', 4)]) == set()
    )
    assert mirror.apply([Entry("nodes/cn001", b'{"assigned_image":"img-2"}', 5)]) == {
        node_topic("cn001")
    }
    assert mirror.apply([Entry("site/current", b'{"generation":2}', 6)]) == set()
    assert (mirror.generation, mirror.assigned) == (2, {"cn001": "img-2"})
    assert mirror.apply([Entry("nodes/cn001", b"", 7)]) == {node_topic("cn001")}  # deleted
    assert mirror.assigned == {"cn001": None}


def test_the_mirror_follows_token_hashes() -> None:
    mirror = Mirror()
    mirror.apply(
        [
            Entry("tokens/nodes/cn001", b'{"sha256":"ab"}', 1),
            Entry("tokens/nodes/cn002", b'{"sha256":"cd"}', 2),
        ]
    )
    mirror.apply([Entry("tokens/nodes/cn002", b"", 3), Entry("tokens/nodes/cn003", b"x", 4)])
    assert mirror.tokens == {"cn001": "ab"}


def test_the_mirror_loads_what_the_store_holds(state: FleetStore) -> None:
    state.publish(site())
    state.heartbeat("cn002", Heartbeat(boot_id="b"))
    state.store_token_hash("cn001", "ab")
    mirror, revision = Mirror.load(state.kv)
    assert revision == state.kv.revision()
    assert (mirror.generation, mirror.tokens) == (1, {"cn001": "ab"})
    assert mirror.assigned == {"cn002": None}


def test_changes_wake_a_waiter_from_the_watcher_thread(kv: KV) -> None:
    async def scenario() -> bool:
        changes = Changes(kv)
        changes.start(asyncio.get_running_loop())
        try:
            future = changes.subscribe([node_topic("cn001")])
            assert changes.waiting == 1
            threading.Timer(0.2, lambda: kv.put("nodes/cn001", b'{"assigned_image":"i"}')).start()
            await asyncio.wait_for(future, 10)
            return changes.waiting == 0
        finally:
            changes.stop()

    assert asyncio.run(scenario())


def test_unsubscribing_one_of_many_waiters_leaves_the_others() -> None:
    async def scenario() -> None:
        store = open_kv("sqlite://:memory:")
        changes = Changes(store)  # not started: woken by hand
        futures = [changes.subscribe([SITE, node_topic(f"n{i}")]) for i in range(10_000)]
        started = time.monotonic()
        for future in futures[1:-1]:
            changes.unsubscribe(future)
        assert time.monotonic() - started < 2  # each costs its own topics, not all 10,000
        assert changes.waiting == 2
        changes._wake({node_topic("n0")})
        await asyncio.wait_for(futures[0], 1)
        assert not futures[-1].done() and changes.waiting == 1
        changes._wake({SITE})
        await asyncio.wait_for(futures[-1], 1)
        for future in (futures[0], futures[-1], futures[0]):  # twice: no harm
            changes.unsubscribe(future)
        assert changes.waiting == 0 and not changes._waiters
        store.close()

    asyncio.run(scenario())


def test_steady_state_marks_the_current_boot(state: FleetStore) -> None:
    state.publish(site())
    state.heartbeat("cn001", Heartbeat(boot_id="boot-1"))
    assert state.pre_reboot("cn001", "compute").ok
    assert not state.node("cn001").steady  # type: ignore[union-attr]
    state.steady_state("cn001", "compute")
    assert state.node("cn001").steady  # type: ignore[union-attr]
    assert state.slots("compute").holders == ()
    state.heartbeat("cn001", Heartbeat(boot_id="boot-2"))  # rebooted: not steady again yet
    assert not state.node("cn001").steady  # type: ignore[union-attr]
    state.steady_state("nobody", "compute")  # no record: nothing is made up
    assert state.node("nobody") is None


def test_release_frees_the_slot_without_marking_steady(state: FleetStore) -> None:
    state.publish(site())
    state.heartbeat("cn001", Heartbeat(boot_id="boot-1"))
    assert state.pre_reboot("cn001", "compute").ok
    assert state.release("cn001", "compute").changed
    assert state.slots("compute").holders == ()
    assert not state.node("cn001").steady  # type: ignore[union-attr]
    assert not state.release("cn001", "compute").changed


class CountingKV:
    """A store that counts the reads of each key."""

    def __init__(self, kv: KV) -> None:
        self.kv, self.reads = kv, Counter[str]()

    def get(self, key: str) -> Entry | None:
        self.reads[key] += 1
        return self.kv.get(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)


def test_a_new_generation_is_read_once_however_many_wait_for_it(kv: KV) -> None:
    FleetStore(kv).publish(site("x" * keys.CHUNK, cn001="compute"))  # two chunks
    counting = CountingKV(kv)
    fresh = FleetStore(counting)  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        read = list(pool.map(lambda _: fresh.generation(), range(32)))
    assert {g.generation for g in read if g} == {1}
    body = keys.decode(kv.get(keys.site_gen(1)).value)["body"]  # type: ignore[union-attr]
    assert [counting.reads[keys.site_blob(body, i)] for i in range(2)] == [1, 1]


def test_old_generations_are_pruned_with_their_bodies(kv: KV) -> None:
    state = FleetStore(kv)
    for n in range(GENERATIONS_KEPT + 3):
        state.publish(site(f"v{n}"))
    current = GENERATIONS_KEPT + 3
    numbers = sorted(int(keys.last_segment(e.key)) for e in kv.range(keys.SITE_GEN))
    assert numbers == list(range(current - GENERATIONS_KEPT + 1, current + 1))
    bodies = {keys.decode(e.value)["body"] for e in kv.range(keys.SITE_GEN)}
    stored = {e.key.split("/")[2] for e in kv.range(keys.SITE_BLOB)}
    assert stored == bodies  # no body left behind
    assert FleetStore(kv).generation(1) is None
    assert FleetStore(kv).generation(current).roles["compute"]["marker"] == f"v{current - 1}"  # type: ignore[union-attr]


class CompactingKV:
    """A store whose first watch finds its history compacted away."""

    def __init__(self, kv: KV) -> None:
        self.kv, self.compacted = kv, False

    def watch(self, prefix: str, after: int, timeout: float) -> list[Entry]:
        if not self.compacted:
            self.compacted = True
            raise Compacted(after, after + 5)
        return self.kv.watch(prefix, after, timeout)

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)


class FailingKV:
    """A store whose first watch finds its history compacted while it cannot be read, and
    whose second watch fails outright: neither may end the watcher."""

    def __init__(self, kv: KV) -> None:
        self.kv, self.watches, self.ranges = kv, 0, 0

    def watch(self, prefix: str, after: int, timeout: float) -> list[Entry]:
        self.watches += 1
        if self.watches == 1:
            raise Compacted(after, after + 5)
        if self.watches == 2:
            raise ConnectionResetError("the store went away")
        return self.kv.watch(prefix, after, timeout)

    def range(self, prefix: str) -> list[Entry]:
        self.ranges += 1
        if self.watches == 1:  # the reload after the compaction fails too
            raise ConnectionRefusedError("the store is away")
        return self.kv.range(prefix)

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)


def test_no_failure_ends_the_watcher(kv: KV) -> None:
    async def scenario() -> None:
        store = FailingKV(kv)
        changes = Changes(store)  # type: ignore[arg-type]
        changes.start(asyncio.get_running_loop())
        try:
            first = changes.subscribe([node_topic("cn001")])
            await asyncio.wait_for(first, 5)  # the compaction woke everyone to read again
            while store.watches < 3:  # past the failed watch as well
                await asyncio.sleep(0.05)
            assert changes.following
            again = changes.subscribe([node_topic("cn001")])
            await asyncio.sleep(0.1)
            kv.put("nodes/cn001", b'{"assigned_image":"i"}')
            await asyncio.wait_for(again, 10)  # still followed: the write wakes its waiter
        finally:
            changes.stop()
        assert not changes.following

    asyncio.run(scenario())


def test_a_compacted_history_wakes_every_waiter_to_read_again(kv: KV) -> None:
    async def scenario() -> None:
        changes = Changes(CompactingKV(kv))  # type: ignore[arg-type]
        future = changes.subscribe([SITE])
        changes.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(future, 5)  # woken with nothing written
        finally:
            changes.stop()

    asyncio.run(scenario())


def test_a_roles_nodes_are_read_without_the_rest_of_the_fleet(state: FleetStore) -> None:
    state.publish(site(cn001="compute", cn002="compute", st001="storage"))
    state.heartbeat("cn002", Heartbeat(booted_image="img-1"))
    state.heartbeat("stray", Heartbeat(booted_image="img-1"))  # not in the inventory
    expected = [n for n in state.nodes() if n.role == "compute"]
    assert [n.id for n in expected] == ["cn001", "cn002"]
    assert state.role_nodes("compute") == expected
    assert state.role_nodes("storage") == [n for n in state.nodes() if n.role == "storage"]
    assert state.role_nodes("none") == []
