"""One thread follows the store and wakes the asyncio tasks waiting for a change.

A long-poll subscribes to topics (`site`, `node:<id>`), checks the store, and awaits its
future only if nothing is new yet: subscribing before the check means a write between the
check and the wait still wakes it.  However many agents wait, that costs one future each and
one `KV.watch` for the whole server process, never a thread or a store watch per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable

from hostos.cluster import keys
from hostos.cluster.kv import KV, Compacted, Entry

log = logging.getLogger(__name__)

SITE = "site"
WATCH_SECONDS = 1.0  # how long one KV.watch blocks: the bound on stop()'s wait
RETRY_SECONDS = 1.0  # after a failed watch (the store is away)


def node_topic(node_id: str) -> str:
    return f"node:{node_id}"


def topics_of(entries: Iterable[Entry]) -> set[str]:
    """The topics the written keys touch."""
    topics: set[str] = set()
    for entry in entries:
        if entry.key == keys.SITE_CURRENT:
            topics.add(SITE)
        elif entry.key.startswith(keys.NODES):
            topics.add(node_topic(keys.last_segment(entry.key)))
    return topics


class Changes:
    """Topic → waiting futures, woken from the watcher thread through the event loop."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # each future's topics, so that unsubscribing costs its own topics, not every topic
        # (with 10,000 agents waiting on `node:<id>` as well, that scan was 10,000 per call)
        self._topics: dict[asyncio.Future[None], tuple[str, ...]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._follow, name="kv-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WATCH_SECONDS + 5)

    @property
    def waiting(self) -> int:
        return sum(1 for future in self._topics if not future.done())

    def subscribe(self, topics: Iterable[str]) -> asyncio.Future[None]:
        """A future that completes on the next write touching any of topics (call in the
        event loop; pair with unsubscribe)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._topics[future] = tuple(topics)
        for topic in self._topics[future]:
            self._waiters.setdefault(topic, set()).add(future)
        return future

    def unsubscribe(self, future: asyncio.Future[None]) -> None:
        for topic in self._topics.pop(future, ()):
            futures = self._waiters.get(topic)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[topic]

    def _wake(self, topics: set[str] | None) -> None:
        """In the event loop: complete the futures of topics (None: every future)."""
        chosen = list(self._waiters) if topics is None else [t for t in topics
                                                             if t in self._waiters]
        for topic in chosen:
            for future in self._waiters.pop(topic):
                if not future.done():
                    future.set_result(None)

    def _post(self, topics: set[str] | None) -> None:
        if self._loop is not None and (topics is None or topics):
            with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                self._loop.call_soon_threadsafe(self._wake, topics)

    def _follow(self) -> None:
        after = self.kv.revision()
        while not self._stop.is_set():
            try:
                entries = self.kv.watch("", after, WATCH_SECONDS)
            except Compacted as exc:  # etcd dropped the history: wake all to re-read
                log.info("store history compacted (%s): following from now", exc)
                after = self.kv.revision()
                self._post(None)
                continue
            except Exception as exc:  # the store is away: wake all to re-read, then retry
                log.warning("watching the store failed: %s", exc)
                self._stop.wait(RETRY_SECONDS)
                with contextlib.suppress(Exception):
                    after = self.kv.revision()
                self._post(None)
                continue
            if entries:
                after = max(after, *(e.revision for e in entries))
                self._post(topics_of(entries))
