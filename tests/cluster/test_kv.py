"""The KV contract, one suite over both stores: SQLite, and a real etcd (integration)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from etcd3gw.client import Etcd3Client

from hostos.cluster.store.kv import KV, MAX_TXN_OPS, Compacted, Compare, Entry
from hostos.cluster.store.sqlite import SqliteKV
from hostos.cluster.store.url import open_kv

# -- reads and writes ----------------------------------------------------------------------


def test_get_of_a_missing_key_is_none(kv: KV) -> None:
    assert kv.get("nodes/a") is None
    assert kv.range("") == []


def test_put_then_get_gives_the_value_and_its_revision(kv: KV) -> None:
    revision = kv.put("nodes/a", b'{"id": "a"}')
    assert kv.get("nodes/a") == Entry("nodes/a", b'{"id": "a"}', revision)
    assert kv.revision() == revision


def test_get_many_reads_each_key_missing_and_deleted_ones_as_none(kv: KV) -> None:
    first = kv.put("nodes/a", b"A")
    kv.txn((), {"nodes/b": b"B", "nodes/c": b"C"})
    kv.delete("nodes/c")
    got = kv.get_many(["nodes/c", "nodes/a", "nodes/x", "nodes/b"])
    assert list(got) == ["nodes/c", "nodes/a", "nodes/x", "nodes/b"]
    assert got["nodes/a"] == Entry("nodes/a", b"A", first)
    assert got["nodes/b"] == kv.get("nodes/b") and got["nodes/c"] is None
    assert got["nodes/x"] is None and kv.get_many([]) == {}
    many = [f"nodes/n{i}" for i in range(MAX_TXN_OPS)]
    assert set(kv.get_many(many).values()) == {None}
    with pytest.raises(ValueError, match="at most"):
        kv.get_many([*many, "nodes/one-more"])


def test_range_is_sorted_by_key_and_stays_under_its_prefix(kv: KV) -> None:
    keys = ["nodes/b", "nodes/a", "nodes/c/x", "nodes", "nodesX", "images/1", "nodes/a0"]
    for key in random.Random(4).sample(keys, len(keys)):
        kv.put(key, key.encode())
    assert [e.key for e in kv.range("nodes/")] == ["nodes/a", "nodes/a0", "nodes/b", "nodes/c/x"]
    assert [e.key for e in kv.range("")] == sorted(keys)
    assert [e.value for e in kv.range("images/")] == [b"images/1"]
    assert kv.range("none/") == []


def test_revisions_increase_and_one_txn_writes_at_one_revision(kv: KV) -> None:
    first = kv.put("a", b"1")
    second = kv.put("a", b"2")
    assert second > first
    third = kv.txn((), {"b": b"1", "c": b"1"})
    assert third is not None and third > second
    assert {e.key: e.revision for e in kv.range("")} == {"a": second, "b": third, "c": third}
    assert kv.revision() == third


def test_txn_with_holding_compares_writes_and_deletes(kv: KV) -> None:
    a = kv.put("a", b"old")
    kv.put("gone", b"x")
    revision = kv.txn([Compare("a", a)], {"a": b"new", "b": b"B"}, ["gone"])
    assert revision is not None and revision > a
    assert kv.get("a") == Entry("a", b"new", revision)
    assert kv.get("b") == Entry("b", b"B", revision)
    assert kv.get("gone") is None


def test_txn_with_a_failing_compare_changes_nothing(kv: KV) -> None:
    stale = kv.put("a", b"1")
    current = kv.put("a", b"2")
    kv.put("keep", b"k")
    before = kv.revision()
    assert (
        kv.txn(
            [
                Compare("keep", kv.get("keep").revision),  # type: ignore[union-attr]
                Compare("a", stale),
            ],
            {"a": b"3", "b": b"B"},
            ["keep"],
        )
        is None
    )
    assert kv.revision() == before
    assert kv.get("a") == Entry("a", b"2", current)
    assert kv.get("b") is None
    assert kv.get("keep") is not None


def test_must_not_exist_compare(kv: KV) -> None:
    created = kv.txn([Compare("lock", 0)], {"lock": b"me"})
    assert created is not None
    assert kv.txn([Compare("lock", 0)], {"lock": b"you"}) is None
    assert kv.get("lock") == Entry("lock", b"me", created)
    assert kv.delete("lock")
    assert kv.txn([Compare("lock", 0)], {"lock": b"you"}) is not None
    assert kv.get("lock").value == b"you"  # type: ignore[union-attr]


def test_compare_on_a_missing_key_with_a_revision_fails(kv: KV) -> None:
    revision = kv.put("other", b"x")
    assert kv.txn([Compare("missing", revision)], {"missing": b"y"}) is None
    assert kv.get("missing") is None


def test_txn_without_writes_checks_and_keeps_the_revision(kv: KV) -> None:
    revision = kv.put("a", b"1")
    assert kv.txn([Compare("a", revision)], {}) == revision
    assert kv.txn([Compare("a", revision - 1)], {}) is None
    assert kv.txn((), {}, ["never-there"]) == revision
    assert kv.revision() == revision


def test_txn_that_puts_and_deletes_one_key_is_refused(kv: KV) -> None:
    with pytest.raises(ValueError, match="both puts and deletes a"):
        kv.txn((), {"a": b"1"}, ["a"])


def test_delete(kv: KV) -> None:
    kv.put("a", b"1")
    kv.put("b", b"1")
    before = kv.revision()
    assert kv.delete("a") is True
    assert kv.revision() > before
    assert kv.get("a") is None
    assert [e.key for e in kv.range("")] == ["b"]
    after = kv.revision()
    assert kv.delete("a") is False
    assert kv.revision() == after  # deleting nothing writes nothing


def test_a_deleted_key_can_be_written_again(kv: KV) -> None:
    kv.put("a", b"1")
    kv.delete("a")
    revision = kv.put("a", b"2")
    assert kv.get("a") == Entry("a", b"2", revision)


def test_compare_and_swap_from_many_threads_loses_no_update(kv: KV) -> None:
    def bump() -> None:
        for _ in range(15):
            while True:
                entry = kv.get("counter")
                value = int(entry.value) if entry else 0
                compare = Compare("counter", entry.revision if entry else 0)
                if kv.txn([compare], {"counter": str(value + 1).encode()}) is not None:
                    break

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kv.get("counter").value == b"60"  # type: ignore[union-attr]


# -- watch ---------------------------------------------------------------------------------


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()))
    thread.start()
    return thread


def test_watch_wakes_on_a_write_from_another_thread(kv: KV) -> None:
    after = kv.revision()
    writer = later(0.3, lambda: kv.put("nodes/a", b"up"))
    started = time.monotonic()
    entries = kv.watch("nodes/", after, timeout=10)
    waited = time.monotonic() - started
    writer.join()
    assert [(e.key, e.value) for e in entries] == [("nodes/a", b"up")]
    assert entries[0].revision > after
    assert 0.2 < waited < 3


def test_watch_returns_nothing_after_its_timeout(kv: KV) -> None:
    kv.put("nodes/a", b"1")
    started = time.monotonic()
    assert kv.watch("nodes/", kv.revision(), timeout=0.5) == []
    assert 0.45 < time.monotonic() - started < 3


def test_watch_ignores_writes_outside_its_prefix(kv: KV) -> None:
    after = kv.revision()
    writer = later(0.1, lambda: kv.put("images/1", b"x"))
    assert kv.watch("nodes/", after, timeout=1.0) == []
    writer.join()


def test_watch_after_a_read_misses_no_write_in_between(kv: KV) -> None:
    kv.put("nodes/a", b"1")
    read_at = kv.revision()
    [entry] = kv.range("nodes/")
    written = kv.put("nodes/b", b"2")  # lands after the read, before the watch starts
    started = time.monotonic()
    assert kv.watch("nodes/", read_at, timeout=10) == [Entry("nodes/b", b"2", written)]
    assert time.monotonic() - started < 2  # already there: no waiting
    assert entry.revision <= read_at
    assert kv.watch("nodes/", written, timeout=0.3) == []  # nothing newer than what it gave


def test_watch_reports_the_latest_entry_per_key_and_deletions(kv: KV) -> None:
    after = kv.put("nodes/gone", b"x")
    kv.put("nodes/a", b"1")
    last = kv.put("nodes/a", b"2")
    kv.delete("nodes/gone")
    entries = kv.watch("nodes/", after, timeout=5)
    assert [(e.key, e.value) for e in entries] == [("nodes/a", b"2"), ("nodes/gone", b"")]
    assert entries[0].revision == last
    assert entries[1].revision == kv.revision()


def test_watch_without_a_timeout_returns_what_is_there(kv: KV) -> None:
    after = kv.revision()
    written = kv.put("nodes/a", b"1")
    assert kv.watch("nodes/", after, timeout=0) == [Entry("nodes/a", b"1", written)]
    assert kv.watch("nodes/", written, timeout=0) == []


def test_following_a_prefix_sees_every_write_once(kv: KV) -> None:
    done = threading.Event()

    def writer() -> None:
        for n in range(20):
            kv.put(f"nodes/{n % 3}", str(n).encode())
            time.sleep(0.01)
        done.set()

    seen: dict[str, bytes] = {}
    after = kv.revision()
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set() or after < kv.revision():
        for entry in kv.watch("nodes/", after, timeout=1):
            seen[entry.key] = entry.value
            after = max(after, entry.revision)
    thread.join()
    assert seen == {"nodes/0": b"18", "nodes/1": b"19", "nodes/2": b"17"}


# -- leader election -----------------------------------------------------------------------

TTL = {"sqlite": 1.0, "etcd": 2.0}  # etcd's shortest lease is 2 s (1.5 times the election timeout)


def ttl_of(kv: KV) -> float:
    return TTL["sqlite" if isinstance(kv, SqliteKV) else "etcd"]


def test_one_holder_wins_and_the_other_loses(kv: KV) -> None:
    ttl = ttl_of(kv)
    assert kv.campaign("controller", "replica-1", ttl) is True
    assert kv.campaign("controller", "replica-2", ttl) is False
    assert kv.campaign("controller", "replica-1", ttl) is True  # refreshed, still held
    assert kv.campaign("other", "replica-2", ttl) is True  # names are independent


def test_a_refreshed_claim_outlives_its_ttl(kv: KV) -> None:
    ttl = ttl_of(kv)
    assert kv.campaign("controller", "replica-1", ttl)
    deadline = time.monotonic() + ttl * 2
    while time.monotonic() < deadline:
        time.sleep(ttl / 4)
        assert not kv.campaign("controller", "replica-2", ttl)  # first: it would take a lapse
        assert kv.campaign("controller", "replica-1", ttl)


def test_a_claim_nobody_refreshes_passes_to_another_holder_after_ttl(kv: KV) -> None:
    ttl = ttl_of(kv)
    assert kv.campaign("controller", "replica-1", ttl)
    taken_at = time.monotonic()
    while not kv.campaign("controller", "replica-2", ttl):
        assert time.monotonic() - taken_at < ttl + 5, "the dead holder's claim never ended"
        time.sleep(0.1)
    assert time.monotonic() - taken_at >= ttl * 0.9
    assert not kv.campaign("controller", "replica-1", ttl)


def test_claims_are_not_data(kv: KV) -> None:
    after = kv.revision()
    assert kv.campaign("controller", "replica-1", ttl_of(kv))
    assert kv.range("") == []
    assert kv.watch("", after, timeout=0.3) == []


@pytest.mark.integration
def test_keys_live_under_the_url_prefix(etcd_url: str) -> None:
    mine, other = (etcd_url.replace("http://", "etcd://") + f"/prefix-{n}" for n in (1, 2))
    with contextlib.closing(open_kv(mine)) as a, contextlib.closing(open_kv(other)) as b:
        a.put("nodes/n1", b"a")
        assert b.get("nodes/n1") is None
        assert b.range("") == []
    raw = Etcd3Client(host="127.0.0.1", port=int(etcd_url.rsplit(":", 1)[1]), api_path="/v3/")
    assert raw.get("/prefix-1/nodes/n1") == [b"a"]


def test_closing_gives_up_the_claims_at_once(kv_url: str) -> None:
    first = open_kv(kv_url)
    assert first.campaign("controller", "replica-1", 30)
    first.close()
    second = open_kv(kv_url)
    try:
        assert second.campaign("controller", "replica-2", 30)
    finally:
        second.close()


# -- SQLite only ---------------------------------------------------------------------------


def test_sqlite_keeps_keys_and_revision_across_a_restart(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/cluster.db"
    store = open_kv(url)
    revision = store.put("a", b"1")
    store.put("b", b"2")
    store.delete("b")
    store.close()
    store = open_kv(url)
    try:
        assert store.get("a") == Entry("a", b"1", revision)
        assert store.revision() == revision + 2
        assert store.watch("", revision, timeout=0) == [Entry("b", b"", revision + 2)]
    finally:
        store.close()


def test_sqlite_watch_sees_a_write_by_another_process_within_a_second(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/cluster.db"
    watcher, other = open_kv(url), open_kv(url)  # two connections: as two processes would
    try:
        after = watcher.revision()
        writer = later(0.2, lambda: other.put("nodes/a", b"1"))
        started = time.monotonic()
        assert [e.key for e in watcher.watch("nodes/", after, timeout=5)] == ["nodes/a"]
        assert time.monotonic() - started < 2.5
        writer.join()
    finally:
        watcher.close()
        other.close()


def test_sqlite_close_ends_a_waiting_watch(tmp_path: object) -> None:
    store = open_kv(f"sqlite://{tmp_path}/cluster.db")
    results: list[list[Entry]] = []
    watcher = threading.Thread(target=lambda: results.append(store.watch("", 0, timeout=30)))
    watcher.start()
    time.sleep(0.2)
    started = time.monotonic()
    store.close()
    watcher.join(timeout=5)
    assert results == [[]]
    assert time.monotonic() - started < 1


# -- store URLs ----------------------------------------------------------------------------

BAD_URLS = [
    ("mysql://db/hostos", "unsupported store URL 'mysql://db/hostos'"),
    ("/var/lib/hostos/cluster.db", "use sqlite:///PATH or etcd://HOST:PORT"),
    ("sqlite://cluster.db", "three slashes before an absolute path"),
    ("sqlite:///", "three slashes"),
    ("etcd://127.0.0.1", "write etcd://HOST:PORT"),
    ("etcd://127.0.0.1:port", "write etcd://HOST:PORT"),
    ("etcd://:2379", "write etcd://HOST:PORT"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_open_kv_refuses_what_it_cannot_open(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        open_kv(url)


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("etcd://127.0.0.1:2379", "/hostos/"),
        ("etcd://127.0.0.1:2379/", "/hostos/"),
        ("etcd://etcd.example:2379/site-a", "/site-a/"),
        ("etcd://etcd.example:2379/a/b/", "/a/b/"),
    ],
)
def test_etcd_urls_name_the_key_prefix(url: str, prefix: str) -> None:
    store = open_kv(url)  # connects lazily: no etcd needed to parse
    try:
        assert store._prefix == prefix  # type: ignore[attr-defined]
    finally:
        store.close()


def test_sqlite_memory_store() -> None:
    store = open_kv("sqlite://:memory:")
    try:
        revision = store.put("a", b"1")
        assert store.get("a") == Entry("a", b"1", revision)
    finally:
        store.close()


@pytest.mark.integration
def test_etcd_watch_after_a_compacted_revision_says_so(etcd_url: str) -> None:
    with contextlib.closing(open_kv(etcd_url.replace("http://", "etcd://") + "/compact")) as kv:
        first = kv.put("a", b"1")
        last = kv.put("a", b"2")
        raw = Etcd3Client(host="127.0.0.1", port=int(etcd_url.rsplit(":", 1)[1]), api_path="/v3/")
        raw.post(raw.get_url("/kv/compaction"), json={"revision": last})
        message = f"up to {last} were compacted away; cannot watch after {first - 1}"
        with pytest.raises(Compacted, match=message):
            kv.watch("", first - 1, timeout=5)
        assert kv.watch("", last - 1, timeout=5) == [Entry("a", b"2", last)]


def _watch_streams_started(etcd_url: str) -> int:
    """etcd's own count of Watch streams opened since it started (its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(etcd_url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    wanted = 'grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch"'
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(wanted)
    )


@pytest.mark.integration
def test_etcd_follows_a_prefix_on_one_stream_per_thread(etcd_url: str) -> None:
    """A follower's calls, each going on from the last one's revision, share one etcd watch
    stream (a new one per call starts behind and waits for etcd's 100 ms catch-up loop); a
    jump elsewhere, another thread, or close ends or opens streams, and nothing is missed."""
    with contextlib.closing(open_kv(etcd_url.replace("http://", "etcd://") + "/streams")) as kv:
        after, seen, before = kv.revision(), [], _watch_streams_started(etcd_url)
        for index in range(20):
            kv.put(f"k{index % 3}", str(index).encode())
            entries = kv.watch("", after, timeout=5)
            seen += [e.value for e in entries]
            after = max(e.revision for e in entries)
        assert seen == [str(i).encode() for i in range(20)]
        assert _watch_streams_started(etcd_url) - before == 1
        assert kv.watch("", after, timeout=0.3) == []  # nothing new: the same stream waits
        assert [e.value for e in kv.watch("", after - 2, timeout=5)] == [b"18", b"19"]
        other: list[list[Entry]] = []
        thread = threading.Thread(target=lambda: other.append(kv.watch("", after - 1, 5)))
        thread.start()
        thread.join()
        assert [e.value for e in other[0]] == [b"19"]
        assert _watch_streams_started(etcd_url) - before == 3


class CuttingProxy:
    """A TCP proxy in front of etcd that can close every connection it carries, as a server
    closing its idle keep-alive connections does."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


@pytest.mark.integration
def test_a_connection_etcd_closed_is_read_again_on_a_new_one(etcd_url: str) -> None:
    """Reads on a kept connection that the other side closed go again on a new one; a
    write there is not sent twice (it may have been applied): its error is raised."""
    proxy = CuttingProxy(int(etcd_url.rsplit(":", 1)[1]))
    url = f"etcd://127.0.0.1:{proxy.port}/cut-{uuid.uuid4().hex[:8]}"
    with contextlib.closing(open_kv(url)) as kv:
        kv.put("a", b"1")
        assert proxy.accepted == 1
        proxy.cut()
        time.sleep(0.1)
        assert kv.get("a") is not None and kv.get_many(["a"])["a"] is not None
        assert proxy.accepted == 2  # one new connection, kept again
        proxy.cut()
        time.sleep(0.1)
        with pytest.raises(OSError):
            kv.put("a", b"2")
        kv.put("a", b"3")  # the next request has a connection of its own again
        assert kv.get("a").value == b"3"  # type: ignore[union-attr]
    proxy.listener.close()
