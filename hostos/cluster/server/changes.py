"""One thread follows the store and wakes the asyncio tasks waiting for a change.

A long-poll subscribes to topics (`site`, `node:<id>`), checks the mirror (`mirror.py`, the
watcher's in-memory view of the store), and awaits its future only if nothing is new yet:
subscribing before the check means a change between the check and the wait still wakes it,
and the watcher updates the mirror before it wakes anyone.  However many agents wait, that
costs one future each and one `KV.watch` for the whole server process, never a thread or a
store watch per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from hostos.cluster.server.mirror import SITE, Mirror, node_topic
from hostos.cluster.store.kv import KV, Compacted

log = logging.getLogger(__name__)

__all__ = ["SITE", "Changes", "node_topic"]
WATCH_SECONDS = 1.0  # how long one KV.watch blocks: the bound on stop()'s wait
RETRY_SECONDS = 1.0  # after a failed watch (the store is away)
GATHER_SECONDS = 0.005  # after a batch, writes gather this long before the next watch


class Changes:
    """Topic → waiting futures, woken from the watcher thread through the event loop."""

    def __init__(self, kv: KV, prepare: Callable[[int], object] | None = None) -> None:
        """prepare(generation) runs in the watcher thread when the site generation changes,
        before any waiter is woken (the server reads the new generation there, once)."""
        self.kv = kv
        self.mirror = Mirror()
        self._prepare = prepare
        self._after = 0
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # each future's topics, so that unsubscribing costs its own topics, not every topic
        # (with 10,000 agents waiting on `node:<id>` as well, that scan was 10,000 per call)
        self._topics: dict[asyncio.Future[None], tuple[str, ...]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reload()
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
        chosen = (
            list(self._waiters) if topics is None else [t for t in topics if t in self._waiters]
        )
        for topic in chosen:
            for future in self._waiters.pop(topic):
                if not future.done():
                    future.set_result(None)

    def _post(self, topics: set[str] | None) -> None:
        if self._loop is not None and (topics is None or topics):
            with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                self._loop.call_soon_threadsafe(self._wake, topics)

    @property
    def following(self) -> bool:
        """The watcher thread runs (for /healthz: without it no long-poll would wake)."""
        return self._thread is not None and self._thread.is_alive()

    def _follow(self) -> None:
        """Until stop(): watch, update the mirror, wake.  No failure ends the thread: a
        compacted history or a failed watch (the store away, a reload that failed too) wakes
        every waiter to read the store itself, and the watch starts over from a fresh read."""
        after = self._after
        while not self._stop.is_set():
            try:
                after = self._follow_once(after)
            except Compacted as exc:  # etcd dropped the history
                log.info("store history compacted (%s): reading it again", exc)
                after = self._recover(after)
            except Exception as exc:
                log.warning("watching the store failed: %s: %s", type(exc).__name__, exc)
                self._stop.wait(RETRY_SECONDS)
                after = self._recover(after)

    def _follow_once(self, after: int) -> int:
        entries = self.kv.watch("", after, WATCH_SECONDS)
        if not entries:
            return after
        after = max(after, *(e.revision for e in entries))
        self._post(self._taken(self.mirror.apply(entries)))
        # a fleet's heartbeats write ~1,000 times a second: a watch per write costs more
        # than the waiters' few milliseconds
        self._stop.wait(GATHER_SECONDS)
        return after

    def _recover(self, after: int) -> int:
        """Read the mirror again and wake every waiter; where to watch from next (the old
        place, when the store cannot be read either: the next watch tells)."""
        try:
            self._reload()
            after = self._after
        except Exception as exc:
            log.warning("reading the store again failed: %s: %s", type(exc).__name__, exc)
        self._post(None)
        return after

    def _reload(self) -> None:
        self.mirror, self._after = Mirror.load(self.kv)
        self._taken({SITE})

    def _taken(self, topics: set[str]) -> set[str]:
        if SITE in topics and self._prepare is not None:
            try:
                self._prepare(self.mirror.generation)
            except Exception as exc:  # the waiters read it themselves then
                log.warning("reading site generation %s failed: %s", self.mirror.generation, exc)
        return topics
