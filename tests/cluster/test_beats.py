"""Heartbeats in batches (beats.py, FleetStore.heartbeats), on both stores."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hostos.cluster.records import Heartbeat, ImageRecord, SiteDocument
from hostos.cluster.server.beats import HeartbeatWriter
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import FleetStore
from hostos.cluster.store.kv import KV, Entry

SITE = SiteDocument.from_json(
    {
        "roles": {"compute": {"image": "img-1"}},
        "nodes": {f"n{i}": {"role": "compute"} for i in range(50)},
    }
)


class RacingKV:
    """A store where another writer assigns n1 an image just after each get_many of it
    (counted; the assignment is written by the first only, later ones find it there)."""

    def __init__(self, kv: KV, state: FleetStore) -> None:
        self.kv, self.state, self.raced = kv, state, 0

    def get_many(self, names: list[str]) -> dict[str, Entry | None]:
        read = self.kv.get_many(names)
        if keys.node("n1") in names:
            self.raced += 1
            self.state.assign("n1", "img-2")
        return read

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)


def test_a_batch_writes_every_beat_in_one_transaction(kv: KV) -> None:
    state = FleetStore(kv, clock=lambda: 1000.0)
    state.publish(SITE)
    before = kv.revision()
    beats = {f"n{i}": Heartbeat(f"img-{i}", {"app": "healthy"}, boot_id=f"b{i}") for i in range(50)}
    records = state.heartbeats(beats)
    assert kv.revision() == before + 1
    for node_id, record in records.items():
        assert (record.booted_image, record.role, record.last_seen) == (
            beats[node_id].booted_image,
            "compute",
            1000.0,
        )
        assert state.node(node_id) == record


def test_a_record_changed_meanwhile_is_written_alone_and_keeps_the_change(kv: KV) -> None:
    plain = FleetStore(kv)
    plain.publish(SITE)
    plain.register_image(ImageRecord("img-2", "vmlinuz", "initramfs.img", "", {}))
    racing = RacingKV(kv, plain)
    state = FleetStore(racing)  # type: ignore[arg-type]
    records = state.heartbeats({"n0": Heartbeat("img-1"), "n1": Heartbeat("img-1")})
    # the batch lost its compare, each node went alone: n1's own write read it again
    assert racing.raced == 2
    assert records["n1"].assigned_image == "img-2" and records["n1"].booted_image == "img-1"
    assert plain.node("n1").assigned_image == "img-2"  # type: ignore[union-attr]
    assert plain.node("n0").booted_image == "img-1"  # type: ignore[union-attr]


def test_the_writer_answers_each_beat_with_its_own_record(kv: KV) -> None:
    state = FleetStore(kv)
    state.publish(SITE)
    writer = HeartbeatWriter(state, batch=8)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(
                pool.map(
                    lambda i: writer.submit(f"n{i % 50}", Heartbeat(boot_id=f"b{i}")), range(400)
                )
            )
        answers = [f.result(timeout=30) for f in futures]
    finally:
        writer.close()
    assert [a.id for a in answers] == [f"n{i % 50}" for i in range(400)]
    assert [a.boot_id for a in answers] == [f"b{i}" for i in range(400)]
    for i in range(50):  # every node's record holds one of its beats
        stored = state.node(f"n{i}").boot_id  # type: ignore[union-attr]
        assert stored in {f"b{j}" for j in range(i, 400, 50)}
