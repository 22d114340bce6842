"""The agent's outbox: feedback and views queued, sent, acked and, when a socket is lost, resent.

What the agent tells its node (docs/push-protocol.md, "Feedback" and "Views") waits here in a
bounded queue until the connection's sender takes it. A view or request carries an id; once
sent it is kept until the node acks it, and a socket lost before the ack puts it first in the
queue again (the worker drops a copy whose id it has applied). At close, what no socket took
goes to the node's beacon endpoint over HTTP. Every message that cannot be delivered is counted
in :class:`agents.stats.AgentStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Iterable

import aiohttp
import msgspec

from agents.stats import AgentStats
from schemas.protocol import BEACON_MAX, BEACON_PATH, MAX_ACK_IDS, Feedback, View

log = logging.getLogger(__name__)

#: Feedback and views kept while disconnected; beyond it the oldest is dropped (and counted).
FEEDBACK_BUFFER = 1000
BEACON_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
ACK_POLL_S = 0.02

Outgoing = Feedback | View


class Outbox:
    """The queue of feedback and views to send, and the views and requests awaiting an ack."""

    def __init__(self, stats: AgentStats) -> None:
        self._stats = stats
        self._queue: deque[Outgoing] = deque(maxlen=FEEDBACK_BUFFER)
        # Views and requests (by id) sent but not acked yet: sent again after a reconnect.
        self._unacked: dict[str, View] = {}
        # Acks that came before the answer of the request they ack (a node acks on the
        # socket, and the socket may be faster than the HTTP response).
        self._early_acks: deque[str] = deque(maxlen=MAX_ACK_IDS)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        #: The sender's wake-up: set when something is queued (the connection also sets it
        #: for its own pings and pongs).
        self.wake = asyncio.Event()
        #: Set while nothing is queued to send.
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def next_id(self) -> str:
        """A new view or request id, unique to this agent."""
        return f"{self._id_prefix}-{next(self._ids)}"

    def queue(self, message: Outgoing) -> None:
        """Queue one feedback or view; the sender delivers it now or after the next reconnect."""
        if len(self._queue) == FEEDBACK_BUFFER:
            self._stats.feedback_dropped += 1
        self._queue.append(message)
        self.drained.clear()
        self.wake.set()

    def first(self) -> Outgoing:
        return self._queue[0]

    def pop(self) -> Outgoing:
        return self._queue.popleft()

    def put_back(self, message: Outgoing) -> None:
        """A message the sender could not send: first for the next socket."""
        self._queue.appendleft(message)

    def sent(self, message: Outgoing) -> None:
        """``message`` went out on a socket: a view or request waits for its ack."""
        if isinstance(message, View) and message.id is not None:
            self.expect_ack(message)

    def expect_ack(self, view: View) -> None:
        """Keep ``view`` until its ack comes (unless it came already)."""
        assert view.id is not None
        if view.id in self._early_acks:
            self._early_acks.remove(view.id)
        else:
            self._unacked[view.id] = view

    def acked(self, ids: Iterable[str]) -> None:
        for acked in ids:
            if self._unacked.pop(acked, None) is None:
                self._early_acks.append(acked)

    def requeue_unacked(self) -> None:
        """What a lost socket took without an ack goes first on the next one; a copy that
        did reach Kafka has the same id, and the worker drops it."""
        if self._unacked:
            self._stats.resent += len(self._unacked)
            self._queue.extendleft(reversed(self._unacked.values()))
            self._unacked.clear()
            self.drained.clear()
            self.wake.set()

    async def delivered(self, timeout_s: float) -> None:
        """Return once everything queued is sent and acked, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._queue or self._unacked:
                    await self.drained.wait()
                    if self._unacked:
                        await asyncio.sleep(ACK_POLL_S)

    async def beacon(
        self, session: aiohttp.ClientSession, nodes: Iterable[str], token: str
    ) -> None:
        """No socket: post the queued feedback and views to the first node of ``nodes`` that
        takes them (any node records them; the owner may be the node that is gone)."""
        messages = [msgspec.to_builtins(m) for m in list(self._queue)[:BEACON_MAX]]
        headers = {"Authorization": f"Bearer {token}"}
        for node in nodes:
            try:
                async with session.post(
                    node + BEACON_PATH, json=messages, headers=headers, timeout=BEACON_TIMEOUT
                ) as resp:
                    if resp.status in (401, 403):
                        return
                    if resp.status in (202, 400):  # 400: the refused ones will not pass anyway
                        for _ in messages:
                            self._queue.popleft()
                        self._stats.beacons += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("beacon to %s failed: %r", node, exc)

    def abandon(self) -> None:
        """At close: count what was never sent or never acked, and forget it."""
        self._stats.feedback_unsent += len(self._queue)
        self._stats.unacked_at_close += len(self._unacked)
        self._queue.clear()
        self._unacked.clear()
