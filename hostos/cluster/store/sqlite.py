"""The embedded store: the KV interface over one SQLite file, for a single `hostos serve`.

One table holds every key with the revision of its last write; a deleted key stays as a
tombstone (deleted = 1) so that `watch` can report the deletion.  One row of `meta` holds the
store revision.  Every write is one `BEGIN IMMEDIATE` transaction that bumps the revision, so
revisions mean what they mean in etcd.

One server process owns the file: that is the scale of this mode.  `watch` therefore waits on
an in-process condition that every write notifies (it also looks at the file once a second,
so a write from another process, e.g. an admin's one-off tool, is seen within a second), and
leader claims (`campaign`) live in this process's memory: with one process there is nothing
to elect, and holders within the process still contend with the same ttl rules as on etcd.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hostos.cluster.store.kv import Compare, Entry, check_many, check_txn

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS kv_revision ON kv (revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""

_POLL = 1.0  # seconds between looks at the file while a watch waits


@dataclass(frozen=True)
class _Claim:
    holder: str
    expires: float  # time.monotonic() when the claim ends unless refreshed


class SqliteKV:
    """The KV protocol over one SQLite file (or ":memory:"); one connection behind one lock."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._changed = threading.Condition(threading.Lock())
        self._claims: dict[str, _Claim] = {}
        self._closed = False
        with self._changed:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)

    def get(self, key: str) -> Entry | None:
        with self._changed:
            row = self._db.execute(
                "SELECT key, value, revision FROM kv WHERE key = ? AND deleted = 0", (key,)
            ).fetchone()
        return _entry(row) if row else None

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry | None]:
        check_many(keys)
        marks = ", ".join("?" * len(keys))
        with self._changed:
            rows = (
                self._db.execute(
                    f"SELECT key, value, revision FROM kv WHERE key IN ({marks}) AND deleted = 0",
                    tuple(keys),
                ).fetchall()
                if keys
                else []
            )
        found = {row[0]: _entry(row) for row in rows}
        return {key: found.get(key) for key in keys}

    def range(self, prefix: str) -> list[Entry]:
        where, args = _under(prefix)
        with self._changed:
            rows = self._db.execute(
                f"SELECT key, value, revision FROM kv WHERE deleted = 0 AND {where} ORDER BY key",
                args,
            ).fetchall()
        return [_entry(row) for row in rows]

    def revision(self) -> int:
        with self._changed:
            return self._revision()

    def txn(
        self, compares: Sequence[Compare], puts: Mapping[str, bytes], deletes: Sequence[str] = ()
    ) -> int | None:
        check_txn(puts, deletes)
        with self._changed:
            return self._write(compares, puts, deletes)

    def put(self, key: str, value: bytes) -> int:
        revision = self.txn((), {key: value})
        assert revision is not None  # no compares: cannot fail
        return revision

    def delete(self, key: str) -> bool:
        with self._changed:
            before = self._revision()
            return self._write((), {}, [key]) != before

    def watch(self, prefix: str, after: int, timeout: float) -> list[Entry]:
        where, args = _under(prefix)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._closed:
                rows = self._db.execute(
                    "SELECT key, value, revision FROM kv "
                    f"WHERE revision > ? AND {where} ORDER BY revision, key",
                    (after, *args),
                ).fetchall()
                if rows:
                    return [_entry(row) for row in rows]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._changed.wait(min(left, _POLL))
            return []  # closed while waiting

    def campaign(self, name: str, holder: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._changed:
            claim = self._claims.get(name)
            if claim is not None and claim.holder != holder and claim.expires > now:
                return False
            self._claims[name] = _Claim(holder, now + ttl)
            return True

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._claims.clear()
            self._db.close()
            self._changed.notify_all()  # a watch waiting returns []

    def _revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(row[0])

    def _write(
        self, compares: Sequence[Compare], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """One write transaction, the lock held: commit when the compares hold."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            revision = self._apply(compares, puts, deletes)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT" if revision is not None else "ROLLBACK")
        if revision is not None:
            self._changed.notify_all()
        return revision

    def _apply(
        self, compares: Sequence[Compare], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """Inside the open transaction: check, then write; None when a compare failed."""
        for compare in compares:
            if self._live_revision(compare.key) != compare.revision:
                return None
        revision = self._revision()
        doomed = [key for key in deletes if self._live_revision(key)]
        if not puts and not doomed:
            return revision  # nothing to write: the revision stays, as in etcd
        revision += 1
        self._db.executemany(
            "INSERT INTO kv (key, value, revision, deleted) VALUES (?, ?, ?, 0) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "revision = excluded.revision, deleted = 0",
            [(key, bytes(value), revision) for key, value in puts.items()],
        )
        self._db.executemany(
            "UPDATE kv SET value = x'', revision = ?, deleted = 1 WHERE key = ?",
            [(revision, key) for key in doomed],
        )
        self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        return revision

    def _live_revision(self, key: str) -> int:
        """The key's revision, 0 when it does not exist (never written, or deleted)."""
        row = self._db.execute(
            "SELECT revision FROM kv WHERE key = ? AND deleted = 0", (key,)
        ).fetchone()
        return int(row[0]) if row else 0


def _entry(row: tuple[str, bytes, int]) -> Entry:
    return Entry(row[0], bytes(row[1]), int(row[2]))


def _under(prefix: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause (and its arguments) for keys starting with prefix, using the index."""
    if not prefix:
        return "1", ()
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return "key >= ? AND key < ?", (prefix, end)
