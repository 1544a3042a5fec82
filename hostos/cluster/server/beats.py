"""Heartbeats written in batches: a group commit.

A fleet's heartbeats are each a compare-and-swap of one node record: a read and a
transaction, two store round trips on etcd and two SQLite transactions' worth of locking, for
every node every few seconds.  `HeartbeatWriter` queues them and writes whatever gathered
while the previous batch was being written in one `KV.get_many` and one transaction
(`FleetStore.heartbeats`), so the store sees a few batches a second instead of a thousand
writes, and a request waits for at most one batch ahead of its own.  Each answer is still
the node's record as written: nothing is answered before the store has it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict
from concurrent.futures import Future

from hostos.cluster.records import Heartbeat, NodeRecord
from hostos.cluster.store.fleet import FleetStore
from hostos.cluster.store.kv import MAX_TXN_OPS

log = logging.getLogger(__name__)

BATCH = min(100, MAX_TXN_OPS)  # heartbeats in one transaction (etcd: 128 operations)
WRITERS = 2  # batches in flight at once: one gathers while the other is written

Waiter = Future[NodeRecord] | asyncio.Future[NodeRecord]
Item = tuple[str, Heartbeat, int | None, Waiter]
Outcome = NodeRecord | BaseException


class HeartbeatWriter:
    def __init__(self, state: FleetStore, batch: int = BATCH, writers: int = WRITERS) -> None:
        self.state, self.batch = state, batch
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"heartbeats-{i}", daemon=True)
            for i in range(writers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, node_id: str, beat: Heartbeat, generation: int | None = None
    ) -> Future[NodeRecord]:
        """The node's record once the batch holding this heartbeat is written."""
        future: Future[NodeRecord] = Future()
        self._queue.put((node_id, beat, generation, future))
        return future

    def submit_async(
        self, node_id: str, beat: Heartbeat, generation: int | None = None
    ) -> asyncio.Future[NodeRecord]:
        """submit for a caller in an event loop: the batch's answers reach the loop in one
        call, not a thread handoff per request."""
        future: asyncio.Future[NodeRecord] = asyncio.get_running_loop().create_future()
        self._queue.put((node_id, beat, generation, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            items, more = [first], True
            while more and len(items) < self.batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # closing: this batch first, then stop
                    more = False
                    self._queue.put(None)
                else:
                    items.append(item)
            self._write(items)

    def _write(self, items: list[Item]) -> None:
        """One batch; a node that beat twice in it has its later beat written after."""
        batch: dict[str, Item] = {}
        later: list[Item] = []
        for item in items:
            if item[0] in batch:
                later.append(item)
            else:
                batch[item[0]] = item
        generation = max((i[2] for i in items if i[2] is not None), default=None)
        outcomes: dict[str, Outcome]
        try:
            outcomes = dict(self.state.heartbeats({n: i[1] for n, i in batch.items()}, generation))
        except Exception as exc:  # the store away: every request of the batch answers 5xx
            outcomes = dict.fromkeys(batch, exc)
        _deliver([(item[3], outcomes[node_id]) for node_id, item in batch.items()])
        if later:
            self._write(later)


def _deliver(answers: list[tuple[Waiter, Outcome]]) -> None:
    """Settle each waiter; an event loop's waiters all in one call into that loop."""
    loops: defaultdict[asyncio.AbstractEventLoop, list[tuple[Waiter, Outcome]]] = defaultdict(list)
    for waiter, outcome in answers:
        if isinstance(waiter, asyncio.Future):
            loops[waiter.get_loop()].append((waiter, outcome))
        else:
            _settle([(waiter, outcome)])
    for loop, settled in loops.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # that loop is closed: nobody waits any more
            log.debug("heartbeat answers for a closed event loop dropped")


def _settle(answers: list[tuple[Waiter, Outcome]]) -> None:
    for waiter, outcome in answers:
        if waiter.done():  # the request was cancelled (the client went away)
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
