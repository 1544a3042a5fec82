"""The small key-value store the cluster is written against.

Keys are strings, values bytes, and every write gets a store revision the way etcd numbers
them: one number per transaction, increasing, shared by all keys the transaction wrote.  With
compare-and-swap on a key's revision, watch-after-a-revision and leader election, that is all
the domain code needs, so SQLite (one server process) and etcd (several replicas) are two thin
shells over one interface and the domain code is written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes  # b"" for a deleted key, as watch reports it
    revision: int  # the store revision of the last write to this key (etcd mod_revision)


@dataclass(frozen=True)
class Compare:
    key: str
    revision: int  # the key's revision must equal this; 0 = the key must not exist


class Compacted(Exception):
    """watch was asked for history the store no longer keeps (etcd after a compaction):
    read the keys again and watch from the current revision."""

    def __init__(self, after: int, compacted: int) -> None:
        super().__init__(
            f"revisions up to {compacted} were compacted away; cannot watch after {after}"
        )
        self.compacted = compacted


MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: compares, and reads or writes, per txn


class KV(Protocol):
    """The store.  Every method is safe to call from several threads at once."""

    def get(self, key: str) -> Entry | None:
        """The key's entry, or None when it does not exist."""
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry | None]:
        """Each key's entry (None: it does not exist), read at one revision; at most
        MAX_TXN_OPS keys."""
        ...

    def range(self, prefix: str) -> list[Entry]:
        """Every key under prefix ("" = all), sorted by key."""
        ...

    def revision(self) -> int:
        """The current store revision: the revision of the last write."""
        ...

    def txn(
        self, compares: Sequence[Compare], puts: Mapping[str, bytes], deletes: Sequence[str] = ()
    ) -> int | None:
        """When every compare holds, write puts and deletes atomically.

        Returns the store revision after the transaction (unchanged when it wrote nothing),
        or None when a compare failed, in which case nothing was written.
        """
        ...

    def put(self, key: str, value: bytes) -> int:
        """Write one key unconditionally; the new revision."""
        ...

    def delete(self, key: str) -> bool:
        """Delete one key; False when it did not exist."""
        ...

    def watch(self, prefix: str, after: int, timeout: float) -> list[Entry]:
        """Block until a key under prefix is written at a revision > after, or timeout passes.

        Returns the latest entry of each key written after `after` (a deleted key with value
        b""), sorted by revision then key, or [] after the timeout.  A caller that reads at
        revision R and then watches after R misses no write; passing the highest revision
        returned as the next `after` follows every change.  Raises Compacted when the store
        no longer holds the history after `after` (etcd, after a compaction).
        """
        ...

    def campaign(self, name: str, holder: str, ttl: float) -> bool:
        """Leader election: True while holder holds name (taken now or refreshed).

        The claim ends ttl seconds after the last successful call, so a leader calls this
        well within ttl (every ttl/3) and a dead leader's claim passes to another holder.
        """
        ...

    def close(self) -> None:
        """Release connections and give up claims this process holds."""
        ...


def check_many(keys: Sequence[str]) -> None:
    if len(keys) > MAX_TXN_OPS:
        raise ValueError(f"get_many of {len(keys)} keys: at most {MAX_TXN_OPS} at once")


def check_txn(puts: Mapping[str, bytes], deletes: Sequence[str]) -> None:
    """Refuse a transaction that both writes and deletes one key (etcd refuses it too)."""
    both = sorted(set(puts) & set(deletes))
    if both:
        raise ValueError(f"a transaction both puts and deletes {', '.join(both)}")


def latest_per_key(entries: Sequence[Entry]) -> list[Entry]:
    """The last entry of each key, sorted by revision then key: what watch returns."""
    last: dict[str, Entry] = {}
    for entry in entries:
        seen = last.get(entry.key)
        if seen is None or entry.revision >= seen.revision:
            last[entry.key] = entry
    return sorted(last.values(), key=lambda e: (e.revision, e.key))
