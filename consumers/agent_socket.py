"""An agent's WebSocket on a cache node: token, hello, welcome, then the agent's frames.

docs/push-protocol.md is the contract: each refusal closes with its code and a reason, every
close frame (also those aiohttp sends by itself) carries one, and an unexpected error closes
the connection with 1011 while the node and its other agents go on. The handler reads the
socket; the agent's session (consumers.sessions) alone writes to it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from consumers.auth import claims
from consumers.metrics import RATE_LIMITED
from consumers.ownership import ws_url
from consumers.process import NODE, NodeProcess
from consumers.sessions import AgentSession, TokenBucket
from foresight import tokens
from schemas import InvalidRecord
from schemas.protocol import (
    HELLO_TIMEOUT_S,
    MAX_BAD_FRAMES,
    MAX_ERROR_REASON,
    MAX_MESSAGE_BYTES,
    CloseCode,
    Error,
    Feedback,
    Hello,
    Ping,
    Pong,
    Redirect,
    UnsupportedVersion,
    View,
    Welcome,
    close_reason,
    decode_from_agent,
    decode_hello,
    encode_message,
)

log = logging.getLogger(__name__)

#: The WebSocket heartbeat (aiohttp's ping control frames) and the welcome's ``heartbeat_s``.
AGENT_HEARTBEAT_S = 25.0
#: Close codes of an agent saying goodbye (closed by its app, or its page going away).
GOODBYE_CODES = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
_DATA_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY)
#: Reasons for the closes aiohttp sends by itself, without one.
_AIOHTTP_CLOSES: dict[int, str] = {
    WSCloseCode.OK: "closing",
    WSCloseCode.PROTOCOL_ERROR: "WebSocket protocol error",
    WSCloseCode.INVALID_TEXT: "text frame is not UTF-8",
    WSCloseCode.MESSAGE_TOO_BIG: f"frame over {MAX_MESSAGE_BYTES} bytes",
}


class AgentWebSocket(web.WebSocketResponse):
    """An agent's socket, whose every close frame carries a reason: also those aiohttp sends
    by itself (a frame over the limit, broken framing, text that is not UTF-8, the answer to
    the agent's own close)."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        reason = message or close_reason(_AIOHTTP_CLOSES.get(code, "closing"))
        return await super().close(code=code, message=reason, drain=drain)


def _error(code: int, reason: str) -> bytes:
    return encode_message(Error(code=code, reason=reason[:MAX_ERROR_REASON]))


async def agent_socket(request: web.Request) -> web.StreamResponse:
    """An agent's connection (docs/push-protocol.md): token, hello, welcome, then the agent's
    frames until either side closes. An unexpected error is logged and closes it 1011."""
    process = request.app[NODE]
    ws = AgentWebSocket(heartbeat=AGENT_HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    try:
        await _handshake(process, request, ws)
    except ConnectionError as exc:  # the agent went away while the node wrote to it
        log.debug("agent socket lost: %r", exc)
    except Exception:
        log.exception("agent socket failed; closing it with 1011")
        await ws.close(code=CloseCode.INTERNAL_ERROR, message=close_reason("internal error"))
    return ws


async def _handshake(process: NodeProcess, request: web.Request, ws: AgentWebSocket) -> None:
    """Token, hello, owner: each refusal closes with its code and a reason."""
    try:
        token = claims(request, process.secrets)
    except tokens.TokenError as exc:
        await ws.close(code=exc.close_code, message=close_reason(exc.reason))
        return
    hello = await _hello(ws)
    if hello is None:
        return
    if hello.client_id != token.client_id:
        await ws.close(
            code=CloseCode.FORBIDDEN, message=close_reason("token is for another client")
        )
        return
    owner = process.ownership.owner(token.client_id)
    if owner is not None:
        reason = "another node owns this client"
        redirect = Redirect(url=ws_url(owner.url), node_id=owner.node_id, reason=reason)
        await ws.send_str(encode_message(redirect).decode())
        await ws.close(code=CloseCode.MOVED, message=close_reason(f"moved to {owner.node_id}"))
        return
    await _session(process, token.client_id, hello, ws)


async def _hello(ws: AgentWebSocket) -> Hello | None:
    """The first frame, a hello; else None once the connection is closed: 4008 when none came
    in time, error then 4009 for a frame that is not a valid hello."""
    try:
        first = await ws.receive(timeout=HELLO_TIMEOUT_S)
    except TimeoutError:
        reason = f"no hello within {HELLO_TIMEOUT_S:g} s"
        await ws.close(code=CloseCode.POLICY, message=close_reason(reason))
        return None
    if first.type not in _DATA_FRAMES:
        return None  # the agent closed, or aiohttp did (a frame over the limit)
    try:
        return decode_hello(first.data)
    except InvalidRecord as exc:
        await ws.send_str(_error(CloseCode.BAD_MESSAGE, exc.reason).decode())
        await ws.close(code=CloseCode.BAD_MESSAGE, message=close_reason(exc.reason))
        return None


async def _session(process: NodeProcess, client_id: str, hello: Hello, ws: AgentWebSocket) -> None:
    """A welcomed agent: its session's sender writes to it, this task reads it."""
    settings = process.settings

    async def send(frame: bytes) -> None:
        await ws.send_str(frame.decode())

    async def close(code: int, reason: str) -> None:
        await ws.close(code=code, message=close_reason(reason))

    agent = AgentSession(client_id, send, close)
    agent.holdings = {h.content_id: h.version for h in hello.holdings}
    now = asyncio.get_running_loop().time()
    limit = TokenBucket(settings.agent_frames_per_s, settings.agent_frame_burst, now)
    await process.sessions.add(agent)
    try:
        welcome = Welcome(
            node_id=process.config.node_id,
            client_id=client_id,
            server_time=time.time(),
            heartbeat_s=AGENT_HEARTBEAT_S,
        )
        agent.offer(encode_message(welcome))
        await process.node.deliver_pending(agent)
        await _read_frames(process, agent, ws, limit)
    finally:
        await process.sessions.remove(agent)
        await agent.wait_closed()
    if ws.close_code in GOODBYE_CODES and process.sessions.get(client_id) is None:
        process.sessions.depart(client_id)


async def _read_frames(
    process: NodeProcess, agent: AgentSession, ws: AgentWebSocket, limit: TokenBucket
) -> None:
    """Record the agent's views and feedback, answer its pings, refuse what does not decode;
    return when the connection closes, or once the node closes it (after an error frame):
    a frame over the rate limit (4008), of another protocol version, or one bad frame more
    than MAX_BAD_FRAMES (4009)."""
    loop = asyncio.get_running_loop()
    client_id = agent.client_id
    bad = 0
    async for frame in ws:
        if frame.type not in _DATA_FRAMES:
            continue
        if not limit.take(loop.time()):
            reason = f"over the rate limit of {limit.rate_per_s:g} frames/s, burst {limit.burst}"
            RATE_LIMITED.inc()
            log.warning("agent %s sent frames %s; closing it", client_id, reason)
            agent.shut(CloseCode.POLICY, reason, _error(CloseCode.POLICY, reason), flush=True)
            return
        try:
            message = decode_from_agent(frame.data)
            if isinstance(message, Hello):
                raise InvalidRecord("hello after welcome")
        except UnsupportedVersion as exc:
            error = _error(CloseCode.BAD_MESSAGE, exc.reason)
            agent.shut(CloseCode.BAD_MESSAGE, exc.reason, error, flush=True)
            return
        except InvalidRecord as exc:
            bad += 1
            error = _error(CloseCode.BAD_MESSAGE, exc.reason)
            if bad > MAX_BAD_FRAMES:
                reason = f"more than {MAX_BAD_FRAMES} bad frames"
                agent.shut(CloseCode.BAD_MESSAGE, reason, error, flush=True)
                return
            agent.offer(error)
            continue
        if isinstance(message, Feedback):
            process.outbox.relay_feedback(client_id, message)
        elif isinstance(message, View):
            process.outbox.record_request(
                client_id, message.content_id, message.kind, message.ts, message.id
            )
        elif isinstance(message, Ping):
            agent.offer(encode_message(Pong(ts=message.ts)))  # echoed, as documented
