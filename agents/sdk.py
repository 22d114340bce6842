"""The Python agent SDK: :class:`Agent`, one client's cache-facing API over its connection.

``Agent(client_id, token, url)`` may start at any node: one that does not own the client
redirects it, so the agent finds its owner by itself. What the node pushes goes into a
byte-bounded LRU (``agents.cache.LocalCache``, digests checked); ``get`` answers from it, or
fetches from the owner over HTTP, and every prefetched item ends in one feedback outcome. After
any disconnect but a refused token the agent reconnects with backoff and a hello listing its
holdings, so nothing it holds is lost or pushed twice (docs/push-protocol.md). Every request
it answers from its cache is told to the node as a ``view``, so the model learns from every
request; a ``private`` agent (Global Privacy Control) sends none and marks its fetches so.

    async with Agent("client-42", token, "http://127.0.0.1:8710") as agent:
        result = await agent.get("p/1")

The agent is this module's cache-facing API over four parts, each a module: the connection
(``agents.connection``: socket, handshake, redirects, reconnects), the outbox
(``agents.outbox``: feedback and views queued, acked, resent), the HTTP fetch
(``agents.fetch``) and the nodes it knows (``agents.nodes``). Its settings are an
:class:`~agents.options.AgentOptions`, or the same fields as keyword arguments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self, Unpack

import aiohttp

from agents.cache import DropReason, Entry, LocalCache
from agents.connection import MAX_REDIRECTS, Connection, ContentFrame
from agents.errors import (
    AgentAuthError,
    AgentConnectionError,
    AgentError,
    ContentCorrupt,
    ContentNotFound,
)
from agents.fetch import ContentFetcher
from agents.nodes import NodeDirectory
from agents.options import AgentOptions, AgentOverrides
from agents.outbox import Outbox
from agents.stats import AgentStats
from schemas.protocol import (
    MAX_HOLDINGS,
    Feedback,
    Hello,
    Holding,
    Invalidate,
    Push,
    Resume,
    Update,
    View,
    digest,
)
from schemas.records import IDENTIFIER_PATTERN, FeedbackOutcome, is_identifier

__all__ = [
    "MAX_REDIRECTS",
    "Agent",
    "AgentAuthError",
    "AgentConnectionError",
    "AgentError",
    "AgentOptions",
    "AgentStats",
    "ContentCorrupt",
    "ContentNotFound",
    "GetResult",
]

log = logging.getLogger(__name__)

AGENT_NAME = "foresight-python/0.1"
#: How long close() lets a reconnect in progress deliver the feedback still queued (a node
#: that shed the socket under load comes back within the first backoffs), and waits for the
#: acks of the views and requests sent.
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class GetResult:
    content_id: str
    body: bytes
    version: int
    content_type: str
    from_cache: bool
    latency_ms: float


class Agent:
    """One client's agent. Use as ``async with``, or call ``connect`` and ``close``."""

    def __init__(
        self,
        client_id: str,
        token: str,
        url: str,
        options: AgentOptions | None = None,
        **overrides: Unpack[AgentOverrides],
    ) -> None:
        """``url``: the node to connect to first; ``options`` (or its fields as keyword
        arguments, which win): everything else, see :class:`~agents.options.AgentOptions`."""
        if not is_identifier(client_id):
            raise ValueError(f"client_id must match ^{IDENTIFIER_PATTERN}$")
        opts = dataclasses.replace(options or AgentOptions(), **overrides)
        self.client_id = client_id
        self.options = opts
        self.stats = AgentStats()
        self._token = token
        self._clock = opts.clock
        self._session = opts.session
        self._own_session = opts.session is None
        self._nodes = NodeDirectory(url, opts.nodes)
        self._outbox = Outbox(self.stats)
        self.cache = LocalCache(opts.cache_bytes, on_drop=self._dropped)
        self._fetcher = ContentFetcher(
            client_id, token, self._nodes, self.stats, private=opts.private
        )
        self._connection = Connection(
            client_id,
            token,
            self._nodes,
            self._outbox,
            self.stats,
            hello=self._hello,
            on_content=self._on_content,
            on_heartbeat=self._on_heartbeat,
            backoff_s=(opts.reconnect_min_s, opts.reconnect_max_s),
            connect_retry_s=opts.connect_retry_s,
            clock=opts.clock,
            rng=opts.rng or random.Random(),
        )
        self._waiters: dict[str, list[tuple[int, asyncio.Future[int]]]] = {}

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def node_id(self) -> str | None:
        """The node that welcomed the agent last."""
        return self._connection.node_id

    @property
    def owner_url(self) -> str:
        return self._nodes.owner

    @property
    def error(self) -> AgentError | None:
        """Why the agent stopped for good (a refused token), if it did."""
        return self._connection.error

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # no session or task outlives a failed connect
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Return once a node (the owner, after at most MAX_REDIRECTS redirects) welcomes us.

        Raises AgentAuthError for a refused token, AgentConnectionError when no node welcomes.
        """
        if self.error is not None:
            raise self.error
        if self._connection.running:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        await self._connection.start(self._session)

    async def close(self) -> None:
        """Send the queued feedback and views (waiting up to CLOSE_WAIT_S for a reconnect in
        progress), stop reconnecting, close the socket. What could not be sent is counted in
        ``stats.feedback_unsent``."""
        outbox = self._outbox
        if self._connection.running and (outbox.queued or outbox.unacked):
            await outbox.delivered(CLOSE_WAIT_S)
        if self._connection.started and not self.connected:
            outbox.requeue_unacked()
            if outbox.queued and self._session is not None:
                await outbox.beacon(self._session, self._nodes.owner_first(), self._token)
        await self._connection.stop()
        outbox.abandon()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, content_id: str) -> GetResult:
        """The content: from the local cache when held, else from the owner node over HTTP.

        Raises ContentNotFound, AgentAuthError, ContentCorrupt or AgentConnectionError.
        """
        if self.error is not None:
            raise self.error
        if not is_identifier(content_id):
            raise ValueError(f"content_id must match ^{IDENTIFIER_PATTERN}$")
        started = time.perf_counter()
        entry = self.cache.get(content_id)
        if entry is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            self.stats.hits += 1
            if entry.prefetched and entry.hits == 1:
                self._report(entry.content_id, entry.version, "hit", latency_ms)
            if not self.options.private:
                view = View(
                    content_id=content_id,
                    version=entry.version,
                    ts=self._clock(),
                    id=self._outbox.next_id(),
                )
                self._outbox.queue(view)
            return GetResult(
                content_id, entry.body, entry.version, entry.content_type, True, latency_ms
            )
        if self._session is None:
            raise AgentError("connect() first")
        request_id = None if self.options.private else self._outbox.next_id()
        asked_at = self._clock()
        fetched = await self._fetcher.fetch_retrying(
            self._session, content_id, request_id, stopped=lambda: self.error is not None
        )
        version, content_type, body = fetched.version, fetched.content_type, fetched.body
        self.cache.put(
            content_id, version, fetched.digest, content_type, body,
            pushed_at=self._clock(), prefetched=False,
        )  # fmt: skip
        latency_ms = (time.perf_counter() - started) * 1000
        self.stats.misses += 1
        if request_id is not None and not fetched.acked:  # the node acks it on the socket
            request = View(
                content_id=content_id, version=version, ts=asked_at, id=request_id, kind="request"
            )
            self._outbox.expect_ack(request)
        self._report(content_id, version, "miss", latency_ms)
        return GetResult(content_id, body, version, content_type, False, latency_ms)

    # A deadline argument of its own (ASYNC109) reads best in the tests and demos it serves.
    async def wait_for(
        self,
        content_id: str,
        timeout: float,  # noqa: ASYNC109
        *,
        min_version: int = 0,
    ) -> int:
        """The version of ``content_id`` once held at ``min_version`` or newer (TimeoutError)."""
        held = self.cache.peek(content_id)
        if held is not None and held.version >= min_version:
            return held.version
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(content_id, [])
        waiters.append((min_version, waiter))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            waiters.remove((min_version, waiter))
            if not waiters:
                del self._waiters[content_id]

    async def report_expired(self, ttl_s: float) -> int:
        """Drop the prefetched entries unused for ``ttl_s`` since their push; report them.

        The agent does this by itself at each heartbeat with ``unused_ttl_s``."""
        return self._expire(ttl_s)

    def _expire(self, ttl_s: float) -> int:
        expired = self.cache.unused_expired(self._clock(), ttl_s)
        for entry in expired:
            self._report(entry.content_id, entry.version, "expired", 0.0)
        self.stats.expired += len(expired)
        return len(expired)

    # What the connection asks of the cache, and tells it.

    def _hello(self, resume: Resume | None) -> Hello:
        holdings = [
            Holding(content_id=h.content_id, version=h.version, digest=h.digest)
            for h in self.cache.holdings()[:MAX_HOLDINGS]
        ]
        return Hello(
            client_id=self.client_id,
            holdings=holdings,
            agent=AGENT_NAME,
            cache_max_bytes=self.cache.max_bytes,
            resume=resume,
        )

    def _on_heartbeat(self) -> None:
        if self.options.unused_ttl_s is not None:
            self._expire(self.options.unused_ttl_s)

    def _on_content(self, frame: ContentFrame) -> None:
        if isinstance(frame, Invalidate):
            self.cache.invalidate(frame.content_id, frame.version)
        else:
            self._store(frame)

    def _store(self, msg: Push | Update) -> None:
        held = self.cache.peek(msg.content_id)
        self.stats.bytes_pushed += len(msg.body)
        if isinstance(msg, Update):
            self.stats.updates += 1
            if held is None:  # dropped meanwhile: the next hello tells the node
                return
        else:
            self.stats.pushes += 1
            if self.options.on_push is not None:
                self.options.on_push(msg, self._clock())
            if held is not None and held.version == msg.version:
                if held.prefetched:
                    self.stats.duplicate_pushes += 1
                else:
                    self.stats.late_pushes += 1
                return
        if digest(msg.body) != msg.digest:
            self.stats.rejected_pushes += 1
            log.warning("refused %s v%d: digest mismatch", msg.content_id, msg.version)
            return
        item = (msg.content_id, msg.version, msg.digest, msg.content_type, msg.body)
        if self.cache.put(*item, pushed_at=msg.pushed_at, prefetched=True):
            for min_version, waiter in self._waiters.get(msg.content_id, []):
                if msg.version >= min_version and not waiter.done():
                    waiter.set_result(msg.version)

    def _dropped(self, entry: Entry, reason: DropReason) -> None:
        if entry.prefetched and not entry.used:
            self.stats.unused += 1
            self._report(entry.content_id, entry.version, "unused", 0.0)

    def _report(self, content_id: str, version: int, outcome: FeedbackOutcome, ms: float) -> None:
        now = self._clock()
        self._outbox.queue(
            Feedback(content_id=content_id, version=version, outcome=outcome, latency_ms=ms, ts=now)
        )

    def __repr__(self) -> str:
        owner = self._nodes.owner
        return f"Agent({self.client_id!r}, node={self.node_id!r}, owner={owner!r})"
