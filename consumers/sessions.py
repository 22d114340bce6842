"""Connected agents: one bounded outbox and one sender task per agent, and the rate limit on
what an agent sends.

Only the sender task writes to an agent's socket, with a time limit, so a slow agent fills its
own outbox and is closed with 1013 (try again later); it never stalls the node or the other
agents. A close that follows an error frame (why the node closes) takes over the socket from
the sender, so the error goes out first. :class:`TokenBucket` is the per-connection limit on
the frames an agent sends (docs/push-protocol.md, "Rate limit").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from consumers.metrics import FRAMES_UNSENT
from schemas.protocol import CloseCode

log = logging.getLogger(__name__)

SendBytes = Callable[[bytes], Coroutine[Any, Any, None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]

#: Frames an agent's outbox holds; one more closes the agent with 1013.
OUTBOX_FRAMES = 256
#: The longest one frame may take to reach an agent (and its close frame at the end);
#: longer closes the agent with 1013.
SEND_TIMEOUT_S = 10.0


@dataclass
class TokenBucket:
    """A rate limit: ``burst`` frames at once, then ``rate_per_s`` sustained.

    Pure: the caller passes the time (a monotonic clock), so tests need no sleeps.

    >>> bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    >>> [bucket.take(0.0) for _ in range(4)]
    [True, True, True, False]
    >>> bucket.take(0.5)
    True
    """

    rate_per_s: float
    burst: int
    now: float
    _tokens: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self._tokens = float(self.burst)

    def take(self, now: float) -> bool:
        """Whether one more frame may pass at ``now``; a refused frame costs nothing."""
        self._tokens = min(
            float(self.burst), self._tokens + max(0.0, now - self.now) * self.rate_per_s
        )
        self.now = max(self.now, now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass
class AgentSession:
    """One agent's connection, as the node sees it."""

    client_id: str
    send: SendBytes
    close: Close
    max_queue: int = OUTBOX_FRAMES
    send_timeout_s: float = SEND_TIMEOUT_S
    holdings: dict[str, int] = field(default_factory=dict)  # content_id -> version held
    _outbox: asyncio.Queue[bytes] = field(init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _closing: asyncio.Task[None] | None = field(default=None, init=False)
    _sending: bool = field(default=False, init=False)  # the sender holds a frame
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._outbox = asyncio.Queue(self.max_queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sender(), name=f"agent-{self.client_id}")

    def offer(self, frame: bytes) -> bool:
        """Queue a frame without waiting; a full outbox closes the agent (1013) instead."""
        if self.closed:
            return False
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("agent %s is too slow: outbox full, closing", self.client_id)
            self.shut(CloseCode.TRY_AGAIN_LATER, "too slow: outbox full")
            return False
        return True

    @property
    def queued(self) -> int:
        return self._outbox.qsize()

    async def _sender(self) -> None:
        while not self.closed:
            frame = await self._outbox.get()
            self._sending = True
            try:
                await asyncio.wait_for(self.send(frame), self.send_timeout_s)
            except TimeoutError:
                log.warning(
                    "agent %s did not take a frame in %.0f s, closing",
                    self.client_id,
                    self.send_timeout_s,
                )
                self.shut(CloseCode.TRY_AGAIN_LATER, "too slow: send timed out")
            except (ConnectionError, RuntimeError):
                self.closed = True
            finally:
                self._sending = False

    def shut(
        self, code: int, reason: str, last: bytes | None = None, *, flush: bool = False
    ) -> None:
        """Close the connection with ``code``, once. With ``flush`` the frame being sent and
        the queued ones go out first (the errors and pongs that came before: the agent is
        reading), else they are dropped and counted; then ``last`` when given (the error frame
        saying why, or a redirect)."""
        if self.closed:
            return
        self.closed = True
        self._closing = asyncio.create_task(self._finish(code, reason, last, flush))
        self._closing.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _finish(self, code: int, reason: str, last: bytes | None, flush: bool) -> None:
        """Take the socket over from the sender, send what is due, close. Each step waits at
        most send_timeout_s: an agent that stopped reading cannot hold the node."""
        if flush and self._task is not None and self._sending:  # its frame, then it stops
            await asyncio.wait([self._task], timeout=self.send_timeout_s)
        await self.stop()
        due = [self._outbox.get_nowait() for _ in range(self._outbox.qsize())] if flush else []
        if unsent := self._outbox.qsize():
            FRAMES_UNSENT.inc(unsent)
            log.info(
                "agent %s closed %d (%s): %d frames unsent", self.client_id, code, reason, unsent
            )
        due += [last] if last is not None else []
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(self.send_timeout_s):
                for frame in due:
                    await self.send(frame)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.send_timeout_s):
                await self.close(code, reason)

    async def wait_closed(self) -> None:
        """Return once a close started by :meth:`shut` is done (at once when none was)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


#: How many departed clients a node remembers (the oldest are forgotten first).
DEPARTED_MAX = 100_000


class SessionRegistry:
    """client_id -> the agent's live session (a newer connection supersedes an older one).

    It also remembers the clients whose agent said goodbye (closed its socket normally: the
    person left), so prefetches computed from their last clicks are not kept for a next
    connect that may never come. An agent that drops without a goodbye is not departed: its
    prefetches wait for it to reconnect.
    """

    def __init__(self, departed_max: int = DEPARTED_MAX) -> None:
        self._sessions: dict[str, AgentSession] = {}
        self._departed: OrderedDict[str, None] = OrderedDict()
        self._departed_max = departed_max

    def get(self, client_id: str) -> AgentSession | None:
        session = self._sessions.get(client_id)
        return None if session is None or session.closed else session

    def departed(self, client_id: str) -> bool:
        """Whether the client's agent said goodbye and has not connected since."""
        return client_id in self._departed

    def depart(self, client_id: str) -> None:
        self._departed[client_id] = None
        self._departed.move_to_end(client_id)
        if len(self._departed) > self._departed_max:
            self._departed.popitem(last=False)

    async def add(self, session: AgentSession) -> None:
        self._departed.pop(session.client_id, None)
        old = self._sessions.get(session.client_id)
        self._sessions[session.client_id] = session
        session.start()
        if old is not None and not old.closed:
            old.shut(CloseCode.SUPERSEDED, "a newer connection took over")
            await old.stop()

    async def remove(self, session: AgentSession) -> None:
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        await session.stop()

    def __len__(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.closed)

    def all(self) -> list[AgentSession]:
        return [s for s in self._sessions.values() if not s.closed]
