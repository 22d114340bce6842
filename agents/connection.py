"""The agent's connection to its owner node: the WebSocket, hello and welcome, redirects, close
codes and the reconnect loop with its backoff (docs/push-protocol.md is the contract).

:class:`Connection` runs one task per agent: it serves a welcomed socket (this task alone reads
it; one sender task writes pongs, pings and the outbox), then, after any close a retry can mend,
reconnects with a hello that resumes the session. A refused token ends it for good
(``Connection.error``); 4008 (superseded) ends it quietly. Frames about content (push, update,
invalidate) go to the cache-facing side through ``on_content``; acks go to the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable

import aiohttp

from agents.errors import AgentAuthError, AgentConnectionError
from agents.nodes import NodeDirectory, http_base, ws_url
from agents.outbox import Outbox
from agents.stats import AgentStats
from schemas.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    CloseCode,
    Error,
    Hello,
    Invalidate,
    NodeMessage,
    Ping,
    Pong,
    Push,
    Redirect,
    Resume,
    Update,
    Welcome,
    decode_from_node,
    encode_message,
)
from schemas.validation import InvalidRecord

log = logging.getLogger(__name__)

#: Redirects followed without a welcome before backing off (as after 1013).
MAX_REDIRECTS = 3
#: The node closes a connection without a hello after 10 s; we wait as long for its welcome.
HANDSHAKE_TIMEOUT_S = 10.0
#: A send slower than this means the node stopped reading: drop the socket and reconnect.
SEND_TIMEOUT_S = 10.0
#: Best effort for the last feedback when closing; close() must not hang on a dead node.
FLUSH_TIMEOUT_S = 1.0
_AUTH_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.TOKEN_EXPIRED})
#: Closes after which the agent waits its longest backoff before coming back (a flood or a
#: frame the node could not read: coming back at once would only repeat it).
_LONG_BACKOFF_CODES = frozenset({CloseCode.POLICY, CloseCode.BAD_MESSAGE})
#: Failures counted for those: the exponential backoff is at its ceiling from the first retry.
_AT_CEILING = 64
_DATA = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
_Socket = aiohttp.ClientWebSocketResponse[bool]
#: What a connection hands to the cache-facing side.
ContentFrame = Push | Update | Invalidate
#: Failures after which connect() and the reconnect loop try the next node.
RETRYABLE = (AgentConnectionError, aiohttp.ClientError, OSError, TimeoutError)


class _Moved(Exception):
    """A node sent the agent elsewhere; ``redirect`` is None when its frame was lost."""

    def __init__(self, redirect: Redirect | None) -> None:
        super().__init__("moved")
        self.redirect = redirect


class Connection:
    """One client's WebSocket to its owner node, kept up until ``stop`` or a refused token."""

    def __init__(
        self,
        client_id: str,
        token: str,
        nodes: NodeDirectory,
        outbox: Outbox,
        stats: AgentStats,
        *,
        hello: Callable[[Resume | None], Hello],
        on_content: Callable[[ContentFrame], None],
        on_heartbeat: Callable[[], None],
        backoff_s: tuple[float, float],
        connect_retry_s: float,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        """``hello(resume)``: the hello to send (it lists what the cache holds);
        ``on_heartbeat``: called once per heartbeat the node is quiet."""
        self._client_id = client_id
        self._token = token
        self._nodes = nodes
        self._outbox = outbox
        self._stats = stats
        self._hello = hello
        self._on_content = on_content
        self._on_heartbeat = on_heartbeat
        self._backoff_s = backoff_s
        self._connect_retry_s = connect_retry_s
        self._clock = clock
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._ws: _Socket | None = None
        self._node_id: str | None = None
        self._heartbeat_s = 25.0
        self._heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self._control: deque[Ping | Pong] = deque()
        self._error: AgentAuthError | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def running(self) -> bool:
        """The connection task is alive (connected, or reconnecting)."""
        return self._task is not None and not self._task.done()

    @property
    def started(self) -> bool:
        """``start`` succeeded and ``stop`` was not called since (the task may have ended)."""
        return self._task is not None

    @property
    def node_id(self) -> str | None:
        """The node that welcomed the agent last."""
        return self._node_id

    @property
    def error(self) -> AgentAuthError | None:
        """Why the connection stopped for good (a refused token), if it did."""
        return self._error

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Return once a node (the owner, after at most MAX_REDIRECTS redirects) welcomes us.

        Raises AgentAuthError for a refused token, AgentConnectionError when no node welcomes.
        """
        self._session = session
        ws: _Socket | None = None
        failures: list[str] = []
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self._connect_retry_s, self._backoff_s[0]
        while ws is None:
            failures.clear()
            for node in self._nodes.known():  # the first url, then the other nodes it knows
                self._nodes.owner = node
                try:
                    ws = await self._establish(None)
                    break
                except RETRYABLE as exc:
                    failures.append(f"{node}: {exc!r}")
            if ws is None:
                # Every node refused or redirected to one that is gone: the ring is still
                # dropping a dead owner. Try again for connect_retry_s.
                if loop.time() + delay > deadline:
                    raise AgentConnectionError(f"no welcome from any node: {'; '.join(failures)}")
                await asyncio.sleep(delay)
                delay = min(self._backoff_s[1], delay * 2)
        self._task = asyncio.create_task(self._run(ws), name=f"agent:{self._client_id}")
        await asyncio.sleep(0)  # the task takes the socket first: connected once this returns

    async def stop(self) -> None:
        """Stop reconnecting; send what the outbox holds for up to FLUSH_TIMEOUT_S; close."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def _fail(self, reason: str) -> AgentAuthError:
        self._error = AgentAuthError(f"{reason}: get a new token for {self._client_id}")
        log.error("%s", self._error)
        return self._error

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
        self._stats.redirects += 1
        self._nodes.moved_to(http_base(redirect.url) if redirect else self._nodes.bootstrap)
        log.info(
            "redirected to %s (%s)", self._nodes.owner, redirect.reason if redirect else "4010"
        )
        return self._resume(redirected=True)

    def _resume(self, *, redirected: bool) -> Resume:
        return Resume(node_id=self._node_id, redirected=redirected, disconnected_at=self._clock())

    async def _handshake(self, resume: Resume | None) -> _Socket:
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(
                ws_url(self._nodes.owner),
                headers={"Authorization": f"Bearer {self._token}"},
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise self._fail(f"token refused at the upgrade (HTTP {exc.status})") from exc
            raise
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await ws.send_str(encode_message(self._hello(resume)).decode())
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
        raise AgentConnectionError(f"{self._nodes.owner} closed with {code} before a welcome")

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
                self._stats.reconnects += 1
        except AgentAuthError:
            return
        finally:
            if not ws.closed:
                await self._goodbye(ws)

    async def _reconnect(self, resume: Resume, failures: int) -> _Socket:
        """Try the last owner, then every other node heard of (the ring's owner is one
        redirect away from any), backing off between rounds; an auth error ends it."""
        owner = self._nodes.owner
        while True:
            if failures:
                low, high = self._backoff_s
                delay = min(high, low * 2 ** (failures - 1))
                await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            for target in dict.fromkeys((owner, *self._nodes.known())):
                self._nodes.owner = target
                try:
                    return await self._establish(resume)
                except RETRYABLE as exc:
                    log.info("reconnect to %s failed: %r", self._nodes.owner, exc)
            failures += 1

    async def _serve(self, ws: _Socket) -> tuple[Redirect | None, int | None]:
        """Read the socket until it closes (this task alone reads it); a sender task writes."""
        self._ws, self._heard = ws, asyncio.get_running_loop().time()
        self._control.clear()
        self._outbox.requeue_unacked()
        self._outbox.wake.set()
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
        """The socket's one writer: pongs and pings first, then the outbox; a ping per heartbeat.

        Silence from the node for two heartbeats, or a stuck send, closes the socket, which
        ends the reader and so leads to a reconnect.
        """
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self._heartbeat_s
        outbox = self._outbox
        while True:
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancel that
                # arrives as the wait ends, and this task would outlive its socket.
                async with asyncio.timeout_at(next_ping):
                    await outbox.wake.wait()
            except TimeoutError:
                if loop.time() - self._heard >= 2 * self._heartbeat_s:
                    log.warning("node %s silent for two heartbeats", self._node_id)
                    await ws.close()
                    return
                self._control.append(Ping(ts=self._clock()))
                next_ping = loop.time() + self._heartbeat_s
                self._on_heartbeat()
            outbox.wake.clear()
            while self._control or outbox.queued:
                message = self._control.popleft() if self._control else outbox.pop()
                frame = encode_message(message).decode()
                try:
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await ws.send_str(frame)
                    if not isinstance(message, Ping | Pong):
                        outbox.sent(message)
                except BaseException as exc:
                    if not isinstance(message, Ping | Pong):  # not sent: first for the next
                        outbox.put_back(message)
                    if not isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
                        raise
                    log.info("send to node %s failed: %r", self._node_id, exc)
                    await ws.close()
                    return
            outbox.drained.set()

    async def _goodbye(self, ws: _Socket) -> None:
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                while self._outbox.queued:
                    await ws.send_str(encode_message(self._outbox.first()).decode())
                    self._outbox.pop()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("%d feedback unsent at close: %r", self._outbox.queued, exc)
        await ws.close()

    def _decode(self, raw: str | bytes) -> NodeMessage | None:
        try:
            return decode_from_node(raw)
        except InvalidRecord as exc:
            log.warning("ignored a frame from node %s: %s", self._node_id, exc.reason)
            return None

    def _on_frame(self, frame: NodeMessage) -> None:
        if isinstance(frame, Push | Update | Invalidate):
            self._on_content(frame)
        elif isinstance(frame, Ping):
            self._control.append(Pong(ts=frame.ts))
            self._outbox.wake.set()
        elif isinstance(frame, Error):
            log.warning("node %s refused a frame: %s (%d)", self._node_id, frame.reason, frame.code)
        elif isinstance(frame, Ack):
            self._outbox.acked(frame.ids)

    def __repr__(self) -> str:
        return f"Connection({self._client_id!r}, node={self._node_id!r})"
