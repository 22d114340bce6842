"""The Python agent SDK: one client's WebSocket to its owner node and a local cache in front.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import aiohttp
import msgspec

from agents.cache import DropReason, Entry, LocalCache
from schemas.protocol import (
    ACKED_HEADER,
    BEACON_MAX,
    BEACON_PATH,
    EVENT_HEADER,
    MAX_ACK_IDS,
    MAX_HOLDINGS,
    MAX_MESSAGE_BYTES,
    WS_PATH,
    Ack,
    CloseCode,
    Error,
    Feedback,
    Hello,
    Holding,
    Invalidate,
    NodeMessage,
    Ping,
    Pong,
    Push,
    Redirect,
    Resume,
    Update,
    View,
    Welcome,
    decode_from_node,
    digest,
    encode_message,
)
from schemas.records import IDENTIFIER_PATTERN, FeedbackOutcome, is_identifier
from schemas.validation import InvalidRecord

log = logging.getLogger(__name__)

AGENT_NAME = "foresight-python/0.1"
#: Redirects followed without a welcome before backing off (as after 1013).
MAX_REDIRECTS = 3
#: Feedback and views kept while disconnected; beyond it the oldest is dropped (and counted).
FEEDBACK_BUFFER = 1000
#: The node closes a connection without a hello after 10 s; we wait as long for its welcome.
HANDSHAKE_TIMEOUT_S = 10.0
#: A send slower than this means the node stopped reading: drop the socket and reconnect.
SEND_TIMEOUT_S = 10.0
#: Best effort for the last feedback when closing; close() must not hang on a dead node.
FLUSH_TIMEOUT_S = 1.0
BEACON_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
#: How long close() lets a reconnect in progress deliver the feedback still queued (a node
#: that shed the socket under load comes back within the first backoffs), and waits for the
#: acks of the views and requests sent.
CLOSE_WAIT_S = 5.0
ACK_POLL_S = 0.02
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30.0)
#: How long a get keeps trying a node it cannot reach (see Agent._fetch_retrying).
FETCH_RETRY_S = 30.0
#: How long connect() keeps trying the nodes it knows before it gives up.
CONNECT_RETRY_S = 30.0
_AUTH_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.TOKEN_EXPIRED})
#: Closes after which the agent waits its longest backoff before coming back (a flood or a
#: frame the node could not read: coming back at once would only repeat it).
_LONG_BACKOFF_CODES = frozenset({CloseCode.POLICY, CloseCode.BAD_MESSAGE})
#: Failures counted for those: the exponential backoff is at its ceiling from the first retry.
_AT_CEILING = 64
_DATA = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
_Socket = aiohttp.ClientWebSocketResponse[bool]


class AgentError(Exception):
    """Base of the SDK's errors."""


class AgentAuthError(AgentError):
    """The token was refused (close 4001/4003/4004, HTTP 401/403): retrying it cannot help."""


class AgentConnectionError(AgentError):
    """No node welcomed the agent: unreachable, closed early, or too many redirects."""


class ContentNotFound(AgentError, LookupError):
    """The node does not know the content (HTTP 404)."""


class ContentCorrupt(AgentError):
    """The node's answer does not match its own digest or headers."""


@dataclass(slots=True)
class AgentStats:
    """Counters since the agent was made; ``hits`` counts every get answered locally."""

    pushes: int = 0
    updates: int = 0
    #: A version pushed to this agent a second time.
    duplicate_pushes: int = 0
    #: A push of a version the agent had already fetched itself (it came too late to help).
    late_pushes: int = 0
    rejected_pushes: int = 0
    bytes_pushed: int = 0
    hits: int = 0
    misses: int = 0
    unused: int = 0
    expired: int = 0
    reconnects: int = 0
    redirects: int = 0
    feedback_dropped: int = 0
    #: Feedback and views still queued when close() gave up on delivering them.
    feedback_unsent: int = 0
    #: Fetches tried again because no node could be reached.
    fetch_retries: int = 0
    #: Feedback delivered over HTTP at close, for want of a socket.
    beacons: int = 0
    #: Views and requests sent again on a new socket because no ack came on the old one.
    resent: int = 0
    #: Views and requests sent but never acked when close() gave up waiting (the node that
    #: took them still holds them in its producer, unless it died).
    unacked_at_close: int = 0


@dataclass(frozen=True, slots=True)
class GetResult:
    content_id: str
    body: bytes
    version: int
    content_type: str
    from_cache: bool
    latency_ms: float


class _Moved(Exception):
    """A node sent the agent elsewhere; ``redirect`` is None when its frame was lost."""

    def __init__(self, redirect: Redirect | None) -> None:
        super().__init__("moved")
        self.redirect = redirect


_RETRYABLE = (AgentConnectionError, aiohttp.ClientError, OSError, TimeoutError)


def _ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, "", ""))


def _http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.removesuffix(WS_PATH), "", ""))


class Agent:
    """One client's agent. Use as ``async with``, or call ``connect`` and ``close``."""

    def __init__(
        self,
        client_id: str,
        token: str,
        url: str,
        *,
        nodes: Sequence[str] = (),
        cache_bytes: int = 64 * 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        private: bool = False,
        unused_ttl_s: float | None = 600.0,
        on_push: Callable[[Push, float], None] | None = None,
        connect_retry_s: float = CONNECT_RETRY_S,
    ) -> None:
        """``url``: the node to connect to first; ``nodes``: other nodes to try when it is
        gone (as Kafka's bootstrap servers: any live node redirects to the client's owner).
        ``connect_retry_s``: how long connect() keeps trying (0: one round over the nodes).
        ``private``: Global Privacy Control, nothing this agent asks for is recorded.
        ``unused_ttl_s``: a pushed item unused this long is dropped and reported expired
        (None keeps it). ``on_push(push, received_at)`` is called for every push received."""
        if not is_identifier(client_id):
            raise ValueError(f"client_id must match ^{IDENTIFIER_PATTERN}$")
        self.client_id = client_id
        self.stats = AgentStats()
        self.cache = LocalCache(cache_bytes, on_drop=self._dropped)
        self._token = token
        self._bootstrap = url.rstrip("/")
        #: Base http(s) URL of the node believed to own the client.
        self._owner = self._bootstrap
        #: Every node heard of (in order): any of them can point the agent to its owner.
        self._nodes = dict.fromkeys([self._bootstrap, *(n.rstrip("/") for n in nodes)])
        self._session = session
        self._own_session = session is None
        self._backoff_s = (reconnect_min_s, reconnect_max_s)
        self._clock = clock
        self._rng = rng or random.Random()
        self._ws: _Socket | None = None
        self._node_id: str | None = None
        self._heartbeat_s = 25.0
        self._heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self._feedback: deque[Feedback | View] = deque(maxlen=FEEDBACK_BUFFER)
        # Views and requests (by id) sent but not acked yet: sent again after a reconnect.
        self._unacked: dict[str, View] = {}
        # Acks that came before the answer of the request they ack (a node acks on the
        # socket, and the socket may be faster than the HTTP response).
        self._early_acks: deque[str] = deque(maxlen=MAX_ACK_IDS)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._private = private
        self._unused_ttl_s = unused_ttl_s
        self._on_push = on_push
        self._connect_retry_s = connect_retry_s
        self._control: deque[Ping | Pong] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued to send
        self._drained.set()
        self._waiters: dict[str, list[tuple[int, asyncio.Future[int]]]] = {}
        self._error: AgentError | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def node_id(self) -> str | None:
        """The node that welcomed the agent last."""
        return self._node_id

    @property
    def owner_url(self) -> str:
        return self._owner

    @property
    def error(self) -> AgentError | None:
        """Why the agent stopped for good (a refused token), if it did."""
        return self._error

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
        if self._error is not None:
            raise self._error
        if self._task is not None and not self._task.done():
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws: _Socket | None = None
        failures: list[str] = []
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self._connect_retry_s, self._backoff_s[0]
        while ws is None:
            failures.clear()
            for node in list(self._nodes):  # the first url, then the other nodes it knows
                self._owner = node
                try:
                    ws = await self._establish(None)
                    break
                except _RETRYABLE as exc:
                    failures.append(f"{node}: {exc!r}")
            if ws is None:
                # Every node refused or redirected to one that is gone: the ring is still
                # dropping a dead owner. Try again for connect_retry_s.
                if loop.time() + delay > deadline:
                    raise AgentConnectionError(f"no welcome from any node: {'; '.join(failures)}")
                await asyncio.sleep(delay)
                delay = min(self._backoff_s[1], delay * 2)
        self._task = asyncio.create_task(self._run(ws), name=f"agent:{self.client_id}")
        await asyncio.sleep(0)  # the task takes the socket first: connected once this returns

    async def close(self) -> None:
        """Send the queued feedback and views (waiting up to CLOSE_WAIT_S for a reconnect in
        progress), stop reconnecting, close the socket. What could not be sent is counted in
        ``stats.feedback_unsent``."""
        task, self._task = self._task, None
        if task is not None:
            if (self._feedback or self._unacked) and not task.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_WAIT_S):
                        while self._feedback or self._unacked:
                            await self._drained.wait()
                            if self._unacked:
                                await asyncio.sleep(ACK_POLL_S)
            if not self.connected:
                self._requeue_unacked()
                if self._feedback:
                    await self._beacon()
            task.cancel()
            await asyncio.wait([task])
        self.stats.feedback_unsent += len(self._feedback)
        self.stats.unacked_at_close += len(self._unacked)
        self._feedback.clear()
        self._unacked.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, content_id: str) -> GetResult:
        """The content: from the local cache when held, else from the owner node over HTTP.

        Raises ContentNotFound, AgentAuthError, ContentCorrupt or AgentConnectionError.
        """
        if self._error is not None:
            raise self._error
        if not is_identifier(content_id):
            raise ValueError(f"content_id must match ^{IDENTIFIER_PATTERN}$")
        started = time.perf_counter()
        entry = self.cache.get(content_id)
        if entry is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            self.stats.hits += 1
            if entry.prefetched and entry.hits == 1:
                self._report(entry.content_id, entry.version, "hit", latency_ms)
            if not self._private:
                view = View(
                    content_id=content_id,
                    version=entry.version,
                    ts=self._clock(),
                    id=self._next_id(),
                )
                self._queue(view)
            return GetResult(
                content_id, entry.body, entry.version, entry.content_type, True, latency_ms
            )
        request_id = None if self._private else self._next_id()
        asked_at = self._clock()
        version, content_type, body, acked = await self._fetch_retrying(content_id, request_id)
        latency_ms = (time.perf_counter() - started) * 1000
        self.stats.misses += 1
        if request_id is not None and not acked:  # the node acks it on the socket
            request = View(
                content_id=content_id, version=version, ts=asked_at, id=request_id, kind="request"
            )
            self._expect_ack(request)
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

    # The connection: handshake, redirects, the reader and the reconnect loop.

    async def _establish(self, resume: Resume | None) -> _Socket:
        """A welcomed socket, following up to MAX_REDIRECTS redirects."""
        for _ in range(MAX_REDIRECTS + 1):
            try:
                return await self._handshake(resume)
            except _Moved as moved:
                resume = self._follow(moved.redirect)
        raise AgentConnectionError(f"more than {MAX_REDIRECTS} redirects without a welcome")

    def _follow(self, redirect: Redirect | None) -> Resume:
        """Take the new owner from a redirect; without one, ask any node again."""
        self.stats.redirects += 1
        self._owner = _http_base(redirect.url) if redirect else self._bootstrap
        self._nodes[self._owner] = None
        log.info("redirected to %s (%s)", self._owner, redirect.reason if redirect else "4010")
        return self._resume(redirected=True)

    def _resume(self, *, redirected: bool) -> Resume:
        return Resume(node_id=self._node_id, redirected=redirected, disconnected_at=self._clock())

    async def _handshake(self, resume: Resume | None) -> _Socket:
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(
                _ws_url(self._owner),
                headers={"Authorization": f"Bearer {self._token}"},
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise self._fail(f"token refused at the upgrade (HTTP {exc.status})") from exc
            raise
        holdings = [
            Holding(content_id=h.content_id, version=h.version, digest=h.digest)
            for h in self.cache.holdings()[:MAX_HOLDINGS]
        ]
        hello = Hello(
            client_id=self.client_id,
            holdings=holdings,
            agent=AGENT_NAME,
            cache_max_bytes=self.cache.max_bytes,
            resume=resume,
        )
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await ws.send_str(encode_message(hello).decode())
                while (msg := await ws.receive()).type in _DATA:
                    frame = self._decode(msg.data)
                    if isinstance(frame, Welcome):
                        self._node_id, self._heartbeat_s = frame.node_id, frame.heartbeat_s
                        return ws
                    if isinstance(frame, Redirect):
                        raise _Moved(frame)
                    if frame is not None:
                        self._on_frame(frame)
        except BaseException:
            await ws.close()
            raise
        code = ws.close_code
        if code in _AUTH_CODES:
            raise self._fail(f"token refused ({CloseCode(code).name}, close {code})")
        if code == CloseCode.MOVED:
            raise _Moved(None)
        raise AgentConnectionError(f"{self._owner} closed with {code} before a welcome")

    async def _run(self, ws: _Socket) -> None:
        """Serve the socket, then reconnect after each loss that a retry can mend."""
        try:
            while True:
                redirect, code = await self._serve(ws)
                if code in _AUTH_CODES:
                    self._fail(f"token refused ({CloseCode(code).name}, close {code})")
                    return
                if code == CloseCode.SUPERSEDED:
                    log.warning("a newer connection of %s took over; not reconnecting", self)
                    return
                if redirect is not None or code == CloseCode.MOVED:
                    resume, failures = self._follow(redirect), 0
                elif code in _LONG_BACKOFF_CODES:
                    log.warning("node %s closed %s; backing off for long", self._node_id, code)
                    resume, failures = self._resume(redirected=False), _AT_CEILING
                else:
                    log.info("lost node %s (close %s); reconnecting", self._node_id, code)
                    resume, failures = self._resume(redirected=False), 1
                ws = await self._reconnect(resume, failures)
                self.stats.reconnects += 1
        except AgentAuthError:
            return
        finally:
            if not ws.closed:
                await self._goodbye(ws)

    async def _reconnect(self, resume: Resume, failures: int) -> _Socket:
        """Try the last owner, then every other node heard of (the ring's owner is one
        redirect away from any), backing off between rounds; an auth error ends it."""
        owner = self._owner
        while True:
            if failures:
                low, high = self._backoff_s
                delay = min(high, low * 2 ** (failures - 1))
                await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            for target in dict.fromkeys((owner, *self._nodes)):
                self._owner = target
                try:
                    return await self._establish(resume)
                except _RETRYABLE as exc:
                    log.info("reconnect to %s failed: %r", self._owner, exc)
            failures += 1

    async def _serve(self, ws: _Socket) -> tuple[Redirect | None, int | None]:
        """Read the socket until it closes (this task alone reads it); a sender task writes."""
        self._ws, self._heard = ws, asyncio.get_running_loop().time()
        self._control.clear()
        self._requeue_unacked()
        self._wake.set()
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            while (msg := await ws.receive()).type in _DATA:
                self._heard = asyncio.get_running_loop().time()
                frame = self._decode(msg.data)
                if isinstance(frame, Redirect):
                    await ws.close()
                    return frame, CloseCode.MOVED
                if frame is not None:
                    self._on_frame(frame)
            return None, ws.close_code
        finally:
            self._ws = None
            sender.cancel()
            await asyncio.wait([sender])

    async def _send_loop(self, ws: _Socket) -> None:
        """The socket's one writer: pongs and pings first, then feedback; a ping per heartbeat.

        Silence from the node for two heartbeats, or a stuck send, closes the socket, which
        ends the reader and so leads to a reconnect.
        """
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self._heartbeat_s
        while True:
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancel that
                # arrives as the wait ends, and this task would outlive its socket.
                async with asyncio.timeout_at(next_ping):
                    await self._wake.wait()
            except TimeoutError:
                if loop.time() - self._heard >= 2 * self._heartbeat_s:
                    log.warning("node %s silent for two heartbeats", self._node_id)
                    await ws.close()
                    return
                self._control.append(Ping(ts=self._clock()))
                next_ping = loop.time() + self._heartbeat_s
                if self._unused_ttl_s is not None:
                    self._expire(self._unused_ttl_s)
            self._wake.clear()
            while self._control or self._feedback:
                message = self._control.popleft() if self._control else self._feedback.popleft()
                frame = encode_message(message).decode()
                try:
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await ws.send_str(frame)
                    if isinstance(message, View) and message.id is not None:
                        self._expect_ack(message)
                except BaseException as exc:
                    if not isinstance(message, Ping | Pong):  # not sent: first for the next
                        self._feedback.appendleft(message)
                    if not isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
                        raise
                    log.info("send to node %s failed: %r", self._node_id, exc)
                    await ws.close()
                    return
            self._drained.set()

    async def _goodbye(self, ws: _Socket) -> None:
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                while self._feedback:
                    await ws.send_str(encode_message(self._feedback[0]).decode())
                    self._feedback.popleft()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("%d feedback unsent at close: %r", len(self._feedback), exc)
        await ws.close()

    async def _beacon(self) -> None:
        """No socket: post the queued feedback and views to the first known node that takes
        them (any node records them; the owner may be the node that is gone)."""
        if self._session is None:
            return
        messages = [msgspec.to_builtins(m) for m in list(self._feedback)[:BEACON_MAX]]
        headers = {"Authorization": f"Bearer {self._token}"}
        for node in dict.fromkeys((self._owner, *self._nodes)):
            try:
                async with self._session.post(
                    node + BEACON_PATH, json=messages, headers=headers, timeout=BEACON_TIMEOUT
                ) as resp:
                    if resp.status in (401, 403):
                        return
                    if resp.status in (202, 400):  # 400: the refused ones will not pass anyway
                        for _ in messages:
                            self._feedback.popleft()
                        self.stats.beacons += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("beacon to %s failed: %r", node, exc)

    def _fail(self, reason: str) -> AgentAuthError:
        self._error = AgentAuthError(f"{reason}: get a new token for {self.client_id}")
        log.error("%s", self._error)
        return self._error

    # What the node says, and what the agent tells it.

    def _decode(self, raw: str | bytes) -> NodeMessage | None:
        try:
            return decode_from_node(raw)
        except InvalidRecord as exc:
            log.warning("ignored a frame from node %s: %s", self._node_id, exc.reason)
            return None

    def _on_frame(self, frame: NodeMessage) -> None:
        if isinstance(frame, Push | Update):
            self._store(frame)
        elif isinstance(frame, Ping):
            self._control.append(Pong(ts=frame.ts))
            self._wake.set()
        elif isinstance(frame, Error):
            log.warning("node %s refused a frame: %s (%d)", self._node_id, frame.reason, frame.code)
        elif isinstance(frame, Invalidate):
            self.cache.invalidate(frame.content_id, frame.version)
        elif isinstance(frame, Ack):
            for acked in frame.ids:
                if self._unacked.pop(acked, None) is None:
                    self._early_acks.append(acked)

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _expect_ack(self, view: View) -> None:
        assert view.id is not None
        if view.id in self._early_acks:
            self._early_acks.remove(view.id)
        else:
            self._unacked[view.id] = view

    def _requeue_unacked(self) -> None:
        """What a lost socket took without an ack goes first on the next one; a copy that
        did reach Kafka has the same id, and the worker drops it."""
        if self._unacked:
            self.stats.resent += len(self._unacked)
            self._feedback.extendleft(reversed(self._unacked.values()))
            self._unacked.clear()
            self._drained.clear()
            self._wake.set()

    def _store(self, msg: Push | Update) -> None:
        held = self.cache.peek(msg.content_id)
        self.stats.bytes_pushed += len(msg.body)
        if isinstance(msg, Update):
            self.stats.updates += 1
            if held is None:  # dropped meanwhile: the next hello tells the node
                return
        else:
            self.stats.pushes += 1
            if self._on_push is not None:
                self._on_push(msg, self._clock())
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
        self._queue(
            Feedback(content_id=content_id, version=version, outcome=outcome, latency_ms=ms, ts=now)
        )

    def _queue(self, message: Feedback | View) -> None:
        """Queue one feedback or view; the sender delivers it now or after the next reconnect."""
        if len(self._feedback) == FEEDBACK_BUFFER:
            self.stats.feedback_dropped += 1
        self._feedback.append(message)
        self._drained.clear()
        self._wake.set()

    async def _fetch_retrying(
        self, content_id: str, request_id: str | None = None
    ) -> tuple[int, str, bytes, bool]:
        """_fetch, tried again for up to FETCH_RETRY_S while the node cannot be reached: when
        the owner dies, the ring hands its clients to another node within its heartbeat
        timeout, and the socket's reconnect finds that node meanwhile."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + FETCH_RETRY_S, 0.25
        while True:
            try:
                return await self._fetch(content_id, request_id)
            except AgentConnectionError:
                if self._error is not None or loop.time() + delay > deadline:
                    raise
                self.stats.fetch_retries += 1
                # The next node heard of: it serves, or answers 421 with the owner it knows.
                known = list(self._nodes)
                if self._owner in known and len(known) > 1:
                    self._owner = known[(known.index(self._owner) + 1) % len(known)]
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _fetch(
        self, content_id: str, request_id: str | None = None
    ) -> tuple[int, str, bytes, bool]:
        """``(version, content_type, body, acked)`` from the owner; a 421 is followed once.
        ``acked``: the node had Kafka's ack for the request before it answered."""
        if self._session is None:
            raise AgentError("connect() first")
        headers = {"Authorization": f"Bearer {self._token}"}
        if self._private:
            headers["Sec-GPC"] = "1"
        if request_id is not None:
            headers[EVENT_HEADER] = request_id
        for attempt in range(2):
            url = f"{self._owner}/v1/content/{quote(content_id, safe='')}"
            try:
                async with self._session.get(
                    url, headers=headers, allow_redirects=False, timeout=HTTP_TIMEOUT
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status == 421 and location and attempt == 0:
                        self._owner = urljoin(url, location).rstrip("/")
                        self._nodes[self._owner] = None
                        log.info("content owner of %s is %s", self.client_id, self._owner)
                        continue
                    if resp.status == 421:
                        # Two nodes each name the other: their rings disagree for a moment (a
                        # node's heartbeats are catching up); _fetch_retrying tries again.
                        raise AgentConnectionError(f"{url}: misdirected twice")
                    if resp.status in (401, 403):
                        raise AgentAuthError(f"token refused by {self._owner} ({resp.status})")
                    if resp.status == 404:
                        raise ContentNotFound(content_id)
                    if resp.status != 200:
                        raise AgentError(f"{url} answered {resp.status} {resp.reason}")
                    body = await resp.read()
                    content_type = resp.headers.get("Content-Type", "application/octet-stream")
                    sent_digest = resp.headers.get("X-Content-Digest", digest(body))
                    version = int(resp.headers.get("X-Content-Version", ""))
                    acked = resp.headers.get(ACKED_HEADER) == "1"
            except aiohttp.ClientError as exc:
                raise AgentConnectionError(f"cannot fetch {content_id}: {exc!r}") from exc
            except ValueError as exc:
                raise ContentCorrupt(f"{url}: no integer X-Content-Version") from exc
            if sent_digest != digest(body):
                raise ContentCorrupt(f"{url}: body does not match X-Content-Digest")
            item = (content_id, version, sent_digest, content_type, body)
            self.cache.put(*item, pushed_at=self._clock(), prefetched=False)
            return version, content_type, body, acked
        raise AgentConnectionError(f"{content_id}: misdirected twice")

    def __repr__(self) -> str:
        return f"Agent({self.client_id!r}, node={self._node_id!r}, owner={self._owner!r})"
