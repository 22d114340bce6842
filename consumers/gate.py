"""Requests first: a node's prefetch work gives way to the content requests of people waiting.

A click's prefetch commands must not fill Cassandra's and the origin's queues ahead of a
person's request. The gate counts the content requests being answered; a command starts only
in one of PREFETCH_CONCURRENCY lanes, holds one of fewer lanes (PREFETCH_CONCURRENCY_SERVING)
besides while requests are coming, and waits a moment (REQUESTS_FIRST_S) for the requests
being answered before it starts. Commands already running go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from typing import Any

#: Prefetch commands a node carries out at once: PREFETCH_CONCURRENCY while no content request
#: came in the last REQUESTS_RECENT_S, PREFETCH_CONCURRENCY_SERVING while they do. A click's
#: commands must not fill Cassandra's and the origin's queues ahead of a person's request: with
#: 8 lanes taken while requests came, misses in a replay's first minute took 22 ms against
#: 10 ms without prefetching (two lanes: 12.6 ms against 14.5 ms). Without requests to protect,
#: two lanes held a node to ~300 commands/s when each costs an origin fetch and a write.
PREFETCH_CONCURRENCY = 8
PREFETCH_CONCURRENCY_SERVING = 2
REQUESTS_RECENT_S = 1.0
#: The longest a prefetch command waits to start while content requests are being answered.
REQUESTS_FIRST_S = 0.05


class RequestGate:
    """The content requests being answered, and what prefetch work waits for them."""

    def __init__(self) -> None:
        self._serving = 0  # content requests being answered right now
        self._quiet = asyncio.Event()  # set while none is
        self._quiet.set()
        self._served_at = -math.inf  # loop time of the last content request's end
        # Held (besides a lane) by each command that starts while requests are coming.
        self._serving_lanes = asyncio.Semaphore(PREFETCH_CONCURRENCY_SERVING)

    @contextlib.contextmanager
    def serving_request(self) -> Iterator[None]:
        """Count a content request while it is answered (prefetch work waits for it)."""
        self._serving += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._serving -= 1
            self._served_at = asyncio.get_running_loop().time()
            if not self._serving:
                self._quiet.set()

    def serving_lanes(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """What a command holds besides its lane: one of PREFETCH_CONCURRENCY_SERVING while
        content requests are coming (or came in the last REQUESTS_RECENT_S), else nothing."""
        recent = asyncio.get_running_loop().time() - self._served_at < REQUESTS_RECENT_S
        if self._serving or recent:
            return self._serving_lanes
        return contextlib.nullcontext()

    async def requests_first(self) -> None:
        """Before a prefetch command starts: while requests are being answered, wait for them
        (at most REQUESTS_FIRST_S), so a person waiting gets the node's CPU, Cassandra and the
        origin before a prediction does. Commands already running go on."""
        if self._serving:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_FIRST_S):
                    await self._quiet.wait()
