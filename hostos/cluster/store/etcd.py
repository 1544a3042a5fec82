"""The replicated store: the KV interface over etcd's grpc-gateway JSON API (`/v3/…`).

Keys live under a prefix (`/hostos/` by default) that the interface never shows: `get("a")`
reads `/hostos/a`.  Writes are etcd transactions comparing `mod_revision` (`create_revision
== 0` for "must not exist"), so a txn here is exactly one etcd txn and revisions are etcd's.

Leader claims live beside the data, under `<prefix without its slash>.election/<name>` (for
`/hostos/`: `/hostos.election/`), outside every range of the data prefix.  A claim is a key
put only when absent (`create_revision == 0`) with a lease of ttl seconds; the holder keeps
it by refreshing the lease, so a dead holder's key expires with its lease.  (etcd3gw's own
lock does not fit: a contended `acquire()` gives up at once and says nothing of who holds it.)

The gateway speaks JSON: bytes are base64, int64 numbers come as strings, fields at their
zero value are left out (a PUT watch event has no `type`, a failed txn no `succeeded`).

Requests go over one keep-alive `http.client` connection per thread (`_Connections`), not
etcd3gw's `requests` session: measured against one etcd, a range cost 0.68 ms of CPU through
`requests` and 0.14 ms through `http.client`, and 20 threads doing 50 each took 1.12 s
against 0.23 s (the session's pool of 10 connections runs dry under a thread pool, and each
request beyond it opens and drops a connection).  In a server whose every heartbeat batch,
FleetLock call and controller round is a store request, under the GIL, that was most of
the etcd store's latency (see docs/cluster.md).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import math
import queue
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hostos.cluster.store.kv import Compacted, Compare, Entry, check_many, check_txn, latest_per_key

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds for one ordinary request
CONNECT_TIMEOUT = 5.0
MIN_WAIT = 0.2  # seconds a watch waits at least: time for etcd to send what it has already
API = "/v3"
WATCH_PATH = API + "/watch"
HEADERS = {"Content-Type": "application/json"}
# what a keep-alive connection that etcd closed meanwhile fails with, before any answer
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

Json = dict[str, Any]


class EtcdKV:
    """The KV protocol over one etcd endpoint; requests share one HTTP session, each watching
    thread has a stream of its own."""

    def __init__(self, host: str, port: int, prefix: str = "/hostos/") -> None:
        self._http = _Connections(host, port)
        self._host, self._port = host, port
        self._prefix = prefix
        self._elections = prefix.rstrip("/") + ".election/"
        self._leases: dict[str, int] = {}  # election name → the lease this process holds it by
        self._lease_lock = threading.Lock()  # the leases (a campaign's few requests)
        self._lock = threading.Lock()  # the watch streams (taken by every watch call)
        self._streams: dict[tuple[int | None, str], _Stream] = {}  # (thread, prefix) → stream

    def get(self, key: str) -> Entry | None:
        kvs = self._range({"key": _b64(self._prefix + key)}).get("kvs", [])
        return self._entry(kvs[0]) if kvs else None

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry | None]:
        """One read-only transaction of a range request per key: one round trip."""
        check_many(keys)
        if not keys:
            return {}
        reply = self._post(
            "/kv/txn",
            {"success": [{"request_range": {"key": _b64(self._prefix + key)}} for key in keys]},
            idempotent=True,
        )
        found: dict[str, Entry | None] = dict.fromkeys(keys)
        for response in reply.get("responses", []):
            for kv in response.get("response_range", {}).get("kvs", []):
                entry = self._entry(kv)
                found[entry.key] = entry
        return found

    def range(self, prefix: str) -> list[Entry]:
        kvs = self._range(self._under(prefix)).get("kvs", [])
        return [self._entry(kv) for kv in kvs]

    def revision(self) -> int:
        reply = self._range({**self._under(""), "count_only": True})
        return int(reply["header"]["revision"])

    def txn(
        self, compares: Sequence[Compare], puts: Mapping[str, bytes], deletes: Sequence[str] = ()
    ) -> int | None:
        check_txn(puts, deletes)
        request = {
            "compare": [self._compare(c) for c in compares],
            "success": [
                {"request_put": {"key": _b64(self._prefix + k), "value": _b64(v)}}
                for k, v in puts.items()
            ]
            + [{"request_delete_range": {"key": _b64(self._prefix + k)}} for k in deletes],
        }
        reply = self._post("/kv/txn", request)
        if not reply.get("succeeded", False):
            return None
        return int(reply["header"]["revision"])

    def put(self, key: str, value: bytes) -> int:
        reply = self._post("/kv/put", {"key": _b64(self._prefix + key), "value": _b64(value)})
        return int(reply["header"]["revision"])

    def delete(self, key: str) -> bool:
        reply = self._post("/kv/deleterange", {"key": _b64(self._prefix + key)})
        return int(reply.get("deleted", 0)) > 0

    def watch(self, prefix: str, after: int, timeout: float) -> list[Entry]:
        """On the calling thread's stream for prefix, kept open from call to call while each
        call goes on from where the last one ended (see `_Stream`)."""
        stream = self._stream(prefix, after)
        try:
            entries = stream.take(after, max(timeout, MIN_WAIT))
        except BaseException:
            self._drop(stream)
            raise
        return latest_per_key(entries)

    def _stream(self, prefix: str, after: int) -> _Stream:
        """The calling thread's stream for prefix, (re)opened at after + 1 unless it is there
        already; streams of threads that ended are closed."""
        me = threading.get_ident()
        with self._lock:
            alive = {t.ident for t in threading.enumerate()}
            for key in [k for k in self._streams if k[0] not in alive]:
                self._streams.pop(key).close()
            stream = self._streams.get((me, prefix))
            if stream is not None and stream.position == after:
                return stream
            if stream is not None:
                stream.close()
            stream = _Stream(
                self._host,
                self._port,
                {**self._under(prefix), "start_revision": after + 1},
                self._entry,
            )
            self._streams[(me, prefix)] = stream
            return stream

    def _drop(self, stream: _Stream) -> None:
        stream.close()
        with self._lock:
            for key in [k for k, s in self._streams.items() if s is stream]:
                del self._streams[key]

    def campaign(self, name: str, holder: str, ttl: float) -> bool:
        key = self._elections + name
        seconds = max(1, math.ceil(ttl))
        with self._lease_lock:
            kvs = self._range({"key": _b64(key)}).get("kvs", [])
            if kvs and _unb64(kvs[0].get("value", "")).decode() != holder:
                self._leases.pop(name, None)
                return False
            if kvs and self._refresh(int(kvs[0].get("lease", 0))):
                self._leases[name] = int(kvs[0]["lease"])
                return True
            return self._claim(name, key, holder, seconds)

    def close(self) -> None:
        with self._lease_lock:
            for lease in self._leases.values():
                try:
                    self._post("/kv/lease/revoke", {"ID": lease})
                except Exception as error:  # the claim still ends after its ttl
                    log.warning("could not revoke election lease %s: %s", lease, error)
            self._leases.clear()
        with self._lock:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()
        self._http.close()

    def _claim(self, name: str, key: str, holder: str, seconds: int) -> bool:
        """Put the election key with a fresh lease if nobody holds it."""
        lease = int(self._post("/lease/grant", {"TTL": seconds, "ID": 0})["ID"])
        reply = self._post(
            "/kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
                ],
                "success": [
                    {
                        "request_put": {
                            "key": _b64(key),
                            "value": _b64(holder.encode()),
                            "lease": lease,
                        }
                    }
                ],
            },
        )
        if reply.get("succeeded", False):
            self._leases[name] = lease
            return True
        self._post("/kv/lease/revoke", {"ID": lease})
        self._leases.pop(name, None)
        return False

    def _refresh(self, lease: int) -> bool:
        """Keep a lease alive; False when it has expired already (or there is none)."""
        if not lease:
            return False
        reply = self._post("/lease/keepalive", {"ID": lease}, idempotent=True)
        return int(reply.get("result", {}).get("TTL", 0)) > 0

    def _entry(self, kv: Json) -> Entry:
        key = _unb64(kv["key"]).decode()
        return Entry(
            key.removeprefix(self._prefix),
            _unb64(kv.get("value", "")),
            int(kv.get("mod_revision", 0)),
        )

    def _compare(self, compare: Compare) -> Json:
        key = _b64(self._prefix + compare.key)
        if compare.revision == 0:
            return {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": compare.revision}

    def _under(self, prefix: str) -> Json:
        """A range request body for every data key starting with prefix."""
        start = (self._prefix + prefix).encode()
        return {"key": _b64(start), "range_end": _b64(_increment_last_byte(start))}

    def _range(self, body: Json) -> Json:
        return self._post("/kv/range", body, idempotent=True)

    def _post(self, path: str, body: Json, idempotent: bool = False) -> Json:
        return self._http.post(API + path, json.dumps(body).encode(), idempotent)


class EtcdError(RuntimeError):
    """etcd answered a request with an error."""


class _Connections:
    """A keep-alive HTTP connection to etcd for each thread that asks (see the module's
    docstring for why not a shared session)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def post(self, path: str, body: bytes, idempotent: bool) -> Json:
        """The JSON answer; a request on a kept connection that etcd closed meanwhile is sent
        again on a new one when it changes nothing (a read), else the error is raised."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return self._exchange(conn, path, body)
            except STALE:
                if not idempotent:
                    raise
        return self._exchange(self._connect(), path, body)

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(REQUEST_TIMEOUT)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn

    def _exchange(self, conn: http.client.HTTPConnection, path: str, body: bytes) -> Json:
        try:
            conn.request("POST", path, body=body, headers=HEADERS)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self._drop(conn)
            raise
        if response.will_close:
            self._drop(conn)
        if response.status != 200:
            raise EtcdError(
                f"etcd answered {path} with HTTP {response.status}: "
                f"{data[:500].decode(errors='replace')}"
            )
        reply: Json = json.loads(data)
        return reply

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._open.discard(conn)


class _Stream:
    """One etcd watch stream, read by a thread of its own into a queue.

    A watch created at a revision etcd has passed starts "unsynced": etcd sends it what it
    missed from a loop that runs every 100 ms, so a new HTTP watch per call (as each
    follower's next call starts at a revision already written, under a fleet's heartbeats)
    answered each write 50 ms late on average, at every hop of a rollout's slot handover
    (steady-state → controller → grant → server → node).  A stream kept open stays synced:
    etcd sends each write as it commits it.  `take` gives the events queued so far, waiting
    for the first; its caller goes on from the highest revision returned, which is how the
    stream is found again (`position`)."""

    def __init__(self, host: str, port: int, create: Json, entry: Callable[[Json], Entry]) -> None:
        self.position = int(create["start_revision"]) - 1  # every revision up to it delivered
        self._entry = entry
        self._queue: queue.SimpleQueue[list[Entry] | BaseException] = queue.SimpleQueue()
        # its own connection (http.client: a socket this class can shut, which ends a read
        # blocked on it; a pooled requests connection cannot be reached to do that)
        self._conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        self._closed = threading.Event()
        self._create = json.dumps({"create_request": create})
        self._thread = threading.Thread(target=self._read, daemon=True, name="etcd-watch")
        self._thread.start()

    def take(self, after: int, timeout: float) -> list[Entry]:
        """The entries written after `after` that came by within timeout (as soon as one
        did, with whatever else had come); Compacted, or the stream's failure."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        items = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self._queue.get_nowait())
        entries: list[Entry] = []
        for item in items:
            if isinstance(item, BaseException):
                raise item
            entries += (e for e in item if e.revision > after)
        self.position = max((e.revision for e in entries), default=self.position)
        return entries

    def close(self) -> None:
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which closes it
        else:
            self._conn.close()

    def _read(self) -> None:
        try:
            self._conn.request(
                "POST", WATCH_PATH, body=self._create, headers={"Content-Type": "application/json"}
            )
            response = self._conn.getresponse()
            if response.status != 200:
                raise ConnectionError(
                    f"etcd answered the watch with HTTP {response.status}: "
                    f"{response.read(500).decode(errors='replace')}"
                )
            if self._conn.sock is not None:
                self._conn.sock.settimeout(None)  # a watch may be quiet for as long as it likes
            while line := response.readline():
                if line.strip():
                    self._result(json.loads(line).get("result", {}))
            raise ConnectionError("etcd closed the watch stream")
        except BaseException as exc:  # the stream is over: the next take raises it
            if not self._closed.is_set():
                self._queue.put(exc)
        finally:
            self._conn.close()

    def _result(self, result: Json) -> None:
        if result.get("compact_revision"):
            raise Compacted(self.position, int(result["compact_revision"]))
        if result.get("canceled"):
            raise RuntimeError(f"etcd canceled the watch: {result.get('cancel_reason')}")
        events = result.get("events", [])
        if events:
            self._queue.put([self._event_entry(event) for event in events])

    def _event_entry(self, event: Json) -> Entry:
        entry = self._entry(event["kv"])
        if event.get("type") == "DELETE":
            return Entry(entry.key, b"", entry.revision)
        return entry


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _increment_last_byte(prefix: bytes) -> bytes:
    """etcd's range_end for a prefix: the prefix with its last byte below 0xff incremented."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
