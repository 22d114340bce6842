"""The Cassandra writes a cache node does not wait for: bounded, holdings batched, drained.

A push or a fetched item must not wait for Cassandra: the body is in memory, and the write
lands while the push is on its way. So writes run as tasks of their own, at most
MAX_BACKGROUND_WRITES at once (a slow Cassandra then slows commands down rather than letting
writes pile up in memory), a failed one is counted and logged, and the node awaits them all
when it stops. Holdings (which agent holds which version) come in bursts and are written
HOLDINGS_PER_WRITE to a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from consumers.metrics import NodeCounters
from consumers.store import ContentStore, StoredVersion

log = logging.getLogger(__name__)

#: Cassandra writes a node lets run without waiting for them.
MAX_BACKGROUND_WRITES = 2000
#: Holdings written together: pushes come in bursts (a click's commands), and a request per
#: push cost the node's Cassandra thread, and the GIL it shares with the event loop, more than
#: the pushes. Five (client, item) pairs span at most ten partitions, Cassandra's threshold for
#: warning about an unlogged batch.
HOLDINGS_PER_WRITE = 5
#: How long a holding waits for others to share its write.
HOLDINGS_WAIT_S = 0.05


class BackgroundWrites:
    """The node's writes on their way to Cassandra."""

    def __init__(self, store: ContentStore, counters: NodeCounters) -> None:
        self.store = store
        self.counters = counters
        self._writes: set[asyncio.Task[None]] = set()
        self._held: dict[tuple[str, str], StoredVersion] = {}  # holdings waiting for a write
        self._held_flush: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._writes)

    async def start(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run a Cassandra write without waiting for it; with MAX_BACKGROUND_WRITES already on
        their way, wait for one of them first."""
        while len(self._writes) >= MAX_BACKGROUND_WRITES:
            await asyncio.wait(self._writes, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(work, name=what)
        self._writes.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters.store_failures += 1
            log.warning("%s failed: %r", task.get_name(), task.exception())

    def hold(self, client_id: str, item: StoredVersion) -> None:
        """Record that the client's agent holds ``item``, in a write shared with the holdings
        of the next HOLDINGS_WAIT_S."""
        self._held[(client_id, item.content_id)] = item
        if self._held_flush is None:
            self._held_flush = asyncio.create_task(self._flush_holdings_soon())

    async def _flush_holdings_soon(self) -> None:
        await asyncio.sleep(HOLDINGS_WAIT_S)
        self._held_flush = None
        await self._write_holdings()

    async def _write_holdings(self) -> None:
        held, self._held = list(self._held.items()), {}
        for first in range(0, len(held), HOLDINGS_PER_WRITE):
            pairs = [
                (client, item) for (client, _), item in held[first : first + HOLDINGS_PER_WRITE]
            ]
            await self.start(self.store.record_holdings(pairs), f"record_holdings {len(pairs)}")

    async def drain(self) -> None:
        """Write the holdings still waiting, and wait for every write on its way to Cassandra."""
        if self._held_flush is not None:
            self._held_flush.cancel()
            self._held_flush = None
        await self._write_holdings()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
