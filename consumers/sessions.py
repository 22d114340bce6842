"""Connected agents: one bounded outbox and one sender task per agent.

Only the sender task writes to an agent's socket, with a time limit, so a slow agent fills its
own outbox and is closed with 1013 (try again later); it never stalls the node or the other
agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from schemas.protocol import CloseCode

log = logging.getLogger(__name__)

SendBytes = Callable[[bytes], Coroutine[Any, Any, None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]


@dataclass
class AgentSession:
    """One agent's connection, as the node sees it."""

    client_id: str
    send: SendBytes
    close: Close
    max_queue: int = 256
    send_timeout_s: float = 10.0
    holdings: dict[str, int] = field(default_factory=dict)  # content_id -> version held
    _outbox: asyncio.Queue[bytes] = field(init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
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

    def shut(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (once; the sender stops)."""
        if self.closed:
            return
        self.closed = True
        task: asyncio.Task[None] = asyncio.create_task(self.close(code, reason))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

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
