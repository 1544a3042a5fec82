"""What one server process keeps in memory of the store, to answer its fleet without reading it.

A fleet's agents wait on long-polls and present their tokens with every request; answering
each from the store costs two or three store reads per request (a round trip each on etcd).
The watcher thread (`changes.Changes`) already sees every write, so it keeps, per process:

- the current site generation's number;
- each node's assigned image (only a change of it wakes that node's long-poll: a heartbeat
  rewrites the node record every few seconds and changes nothing a long-poll waits for);
- each node's token hash.

The mirror lags the store by the watch's delay (milliseconds), so it is used where lagging is
harmless: deciding whether a long-poll waits (the wake for anything it missed follows the
mirror's update), and accepting a token whose hash it holds.  A token it does not know, or
whose hash differs, is checked against the store, so a token issued a moment ago works at
once.  A token revoked through this process stops working at once (the route updates the
mirror too); revoked through another replica, within that replica's watch delay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hostos.cluster.store import keys
from hostos.cluster.store.kv import KV, Entry

SITE = "site"


def node_topic(node_id: str) -> str:
    return f"node:{node_id}"


class Mirror:
    """Applied in one thread (the watcher's), read from any: each field is replaced whole."""

    def __init__(self) -> None:
        self.generation = 0
        self.assigned: dict[str, str | None] = {}
        self.tokens: dict[str, str] = {}

    @classmethod
    def load(cls, kv: KV) -> tuple[Mirror, int]:
        """A mirror of kv and the revision to watch after (taken before the reads, so a write
        meanwhile is seen twice, never missed)."""
        revision, mirror = kv.revision(), cls()
        current = kv.get(keys.SITE_CURRENT)
        mirror.apply(
            [*([current] if current else []), *kv.range(keys.NODES), *kv.range(keys.NODE_TOKENS)]
        )
        return mirror, revision

    def apply(self, entries: Iterable[Entry]) -> set[str]:
        """Take in written (or deleted: empty value) entries; the topics whose waiters a change
        concerns."""
        topics: set[str] = set()
        for entry in entries:
            if entry.key == keys.SITE_CURRENT:
                number = _field(entry.value, "generation")
                if isinstance(number, int) and number != self.generation:
                    self.generation = number
                    topics.add(SITE)
            elif entry.key.startswith(keys.NODES):
                node_id = keys.last_segment(entry.key)
                image = _field(entry.value, "assigned_image")
                image = image if isinstance(image, str) else None
                if node_id not in self.assigned or self.assigned[node_id] != image:
                    self.assigned[node_id] = image
                    topics.add(node_topic(node_id))
            elif entry.key.startswith(keys.NODE_TOKENS):
                node_id, digest = keys.last_segment(entry.key), _field(entry.value, "sha256")
                if isinstance(digest, str):
                    self.tokens[node_id] = digest
                else:
                    self.tokens.pop(node_id, None)
        return topics


def _field(raw: bytes, name: str) -> object:
    """A field of a JSON object value; None for a deleted key or anything unreadable."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None
