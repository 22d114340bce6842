"""The cache node process: `foresight cache-node --node-id N --port P`.

An aiohttp app around :class:`consumers.node.CacheNode`: the agents' WebSocket, content
served on demand (each request recorded as an Interaction), /healthz and /metrics; and, in the
background, the prefetch-commands consumer of the node's slot, the content-updates consumer,
and the ring-membership heartbeat. On shutdown the node leaves the ring and redirects its
agents to their new owners.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.fetcher import Fetcher, FetcherConfig, FetchFailed, FetchRefused
from consumers.metrics import (
    ACKS,
    AGENTS,
    BEACONS,
    COMMANDS,
    DEAD_LETTERS,
    DELIVERIES,
    EVENTS_OUT,
    FEEDBACK,
    PRODUCER_QUEUE,
    QUEUED,
    RATE_LIMITED,
    REQUESTS,
    RING_MEMBERS,
    STORE_WRITES,
)
from consumers.node import CacheNode
from consumers.sessions import AgentSession, SessionRegistry, TokenBucket
from consumers.static import add_agent_routes
from consumers.store import ContentStore
from foresight import tokens
from foresight.cassandra import connect
from foresight.kafka import producer_config
from foresight.membership import MembershipWatcher
from foresight.ring import EmptyRingError, Member
from foresight.settings import Settings
from schemas import (
    ContentUpdate,
    DeadLetter,
    Interaction,
    InvalidRecord,
    PrefetchCommand,
    RingMember,
    decode,
    encode,
)
from schemas import Feedback as FeedbackRecord
from schemas.protocol import (
    ACKED_HEADER,
    BEACON_MAX,
    BEACON_PATH,
    EVENT_HEADER,
    HELLO_TIMEOUT_S,
    MAX_ACK_IDS,
    MAX_BAD_FRAMES,
    MAX_ERROR_REASON,
    MAX_MESSAGE_BYTES,
    WS_PATH,
    Ack,
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
    agent_event_id,
    close_reason,
    decode_from_agent,
    decode_hello,
    encode_message,
)
from schemas.records import InteractionKind, MemberState, is_identifier

log = logging.getLogger(__name__)

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
#: Close codes of an agent saying goodbye (closed by its app, or its page going away).
GOODBYE_CODES = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
HEARTBEAT_S = 3.0
#: How long a leaving node waits to see its own leaving record before redirecting its agents.
LEAVE_SEEN_S = 3.0


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    slot: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + WS_PATH


#: Commands read from Kafka at once at most: what librdkafka has already fetched, taken in one
#: call instead of one call (and one thread hop) each.
COMMAND_BATCH = 500
#: How long one poll for the next command waits (the loop checks for a stop in between).
COMMAND_POLL_S = 0.1


def _next_batch(consumer: Consumer) -> list[Message]:
    """The next commands: wait for the first (returning at once when it comes: a batch call
    would wait out its timeout for a full batch), then take what else is already fetched."""
    first = consumer.poll(COMMAND_POLL_S)
    if first is None:
        return []
    return [first, *consumer.consume(COMMAND_BATCH - 1, 0)]


def _store_done(
    consumer: Consumer, started: deque[tuple[Message, asyncio.Task[None] | None]]
) -> None:
    """Store the offsets of the commands done, in order, up to the oldest one still running:
    a restart then redoes only what may not have been done (commands are idempotent)."""
    while started and (started[0][1] is None or started[0][1].done()):
        msg, _ = started.popleft()
        if msg.error() is None:
            consumer.store_offsets(msg)


def _delivery_report(err: KafkaError | None, msg: Message) -> None:
    """librdkafka's final word on each record: a failure here is a record lost for good."""
    if err is None:
        DELIVERIES.labels("delivered").inc()
        return
    DELIVERIES.labels("failed").inc()
    log.error("kafka did not take a record for %s (key %r): %s", msg.topic(), msg.key(), err)


#: How long a request from an agent with no socket here waits for Kafka's ack before the
#: answer goes without it (the agent then keeps the request until an ack or its close).
ACK_IN_RESPONSE_S = 5.0


def _answer(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


def _kafka_error(err: KafkaError) -> None:
    """Errors of the producer as a whole; a fatal one (idempotence broken) stops producing."""
    if err.fatal():
        log.critical("kafka producer failed for good: %s", err)
    elif err.code() == KafkaError._ALL_BROKERS_DOWN:
        log.warning("kafka producer: %s; records wait in its queue", err)
    else:  # one per connection attempt while a broker is away
        log.debug("kafka producer: %s", err)


class NodeProcess:
    """Everything one node process holds, started and stopped by the app's cleanup context."""

    def __init__(self, settings: Settings, config: NodeConfig) -> None:
        self.settings = settings
        self.config = config
        self.sessions = SessionRegistry()
        self.ring = MembershipWatcher(settings)
        self.producer = Producer(
            producer_config(
                settings,
                **{"linger.ms": 1, "on_delivery": _delivery_report, "error_cb": _kafka_error},
            )
        )
        self.secrets = settings.agent_token_secrets
        self.leaving = False
        self._stop = threading.Event()
        self.node: CacheNode
        self.loop: asyncio.AbstractEventLoop | None = None
        self._acks: dict[str, list[str]] = {}  # client -> agent ids to ack this loop turn
        self._serving = 0  # content requests being answered right now
        self._quiet = asyncio.Event()  # set while none is
        self._quiet.set()
        self._served_at = -math.inf  # loop time of the last content request's end
        # Held (besides a lane) by each command that starts while requests are coming.
        self._serving_lanes = asyncio.Semaphore(PREFETCH_CONCURRENCY_SERVING)

    # --- requests first -------------------------------------------------------------------
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

    # --- ownership ------------------------------------------------------------------------
    def owner(self, client_id: str) -> Member | None:
        """The client's owner when it is another node (this one, once leaving, owns none),
        else None: this node owns it, or no node is left to."""
        ring = self.ring.ring()
        if self.leaving:
            with contextlib.suppress(KeyError):
                ring = ring.without(self.config.node_id)
        try:
            owner = ring.owner(client_id)
        except EmptyRingError:
            return None
        return None if owner.node_id == self.config.node_id else owner

    def owner_url(self, client_id: str) -> str | None:
        """The base URL of the client's owner when it is another node, else None."""
        owner = self.owner(client_id)
        return None if owner is None else owner.url

    def owned_clients(self) -> set[str]:
        return {s.client_id for s in self.sessions.all() if self.owner_url(s.client_id) is None}

    # --- Kafka out ------------------------------------------------------------------------
    def announce(self, state: MemberState) -> None:
        member = RingMember(
            node_id=self.config.node_id,
            url=self.config.url,
            weight=1.0,
            slot=self.config.slot,
            state=state,
            heartbeat_ts=time.time(),
        )
        self.producer.produce(
            self.settings.topic_ring_membership, key=member.node_id.encode(), value=encode(member)
        )
        self.producer.poll(0)

    def record_request(
        self,
        client_id: str,
        content_id: str,
        kind: InteractionKind = "request",
        ts: float | None = None,
        agent_id: str | None = None,
        *,
        ack: bool = True,
        delivered: asyncio.Future[bool] | None = None,
    ) -> None:
        """Publish what the client asked for (served here, or from its agent's cache).

        With the agent's id for it, the event id is derived from client and id (a copy the
        agent sends again is recognisably the same event), and the agent gets an Ack once
        Kafka holds it (``ack``) on its socket, or ``delivered`` gets Kafka's answer.
        """
        if agent_id is None:
            event_id = f"{self.config.node_id}-{uuid.uuid4().hex}"
        else:
            event_id = agent_event_id(client_id, agent_id)
        event = Interaction(
            event_id=event_id,
            client_id=client_id,
            content_id=content_id,
            kind=kind,
            ts=time.time() if ts is None else ts,
        )
        self.producer.produce(
            self.settings.topic_interactions,
            key=client_id.encode(),
            value=encode(event),
            on_delivery=self._acker(client_id, agent_id if ack else None, delivered),
        )
        self.producer.poll(0)
        EVENTS_OUT.labels(kind).inc()

    def _acker(
        self, client_id: str, agent_id: str | None, delivered: asyncio.Future[bool] | None
    ) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback: acks the agent's id on its socket once Kafka holds the
        interaction, or answers ``delivered``. librdkafka calls it from whichever thread
        polls the producer."""

        def report(err: KafkaError | None, msg: Message) -> None:
            _delivery_report(err, msg)
            if self.loop is None:
                return
            if delivered is not None:
                self.loop.call_soon_threadsafe(_answer, delivered, err is None)
            if err is None and agent_id is not None:
                self.loop.call_soon_threadsafe(self._ack, client_id, agent_id)

        return report

    def _ack(self, client_id: str, agent_id: str) -> None:
        """Batch the acks of one loop turn per client into one frame."""
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._acks.setdefault(client_id, []).append(agent_id)

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for client_id, ids in acks.items():
            session = self.sessions.get(client_id)
            if session is None:  # gone: its agent sends the views again, wherever it is now
                ACKS.labels("agent gone").inc(len(ids))
                continue
            for at in range(0, len(ids), MAX_ACK_IDS):
                session.offer(encode_message(Ack(ids=ids[at : at + MAX_ACK_IDS])))
            ACKS.labels("sent").inc(len(ids))

    def relay_feedback(self, client_id: str, message: Feedback) -> None:
        record = FeedbackRecord(
            client_id=client_id,
            content_id=message.content_id,
            version=message.version,
            outcome=message.outcome,
            latency_ms=message.latency_ms,
            ts=message.ts,
        )
        self.producer.produce(
            self.settings.topic_feedback, key=client_id.encode(), value=encode(record)
        )
        self.producer.poll(0)
        EVENTS_OUT.labels("feedback").inc()
        FEEDBACK.labels(message.outcome).inc()

    def dead_letter(self, topic: str, msg: Any, reason: str) -> None:
        """Send a record that failed validation to its dead-letter topic and count it; the
        letter is bounded (DeadLetter.of), so it fits however big the record was."""
        letter = DeadLetter.of(
            topic=topic,
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            reason=reason,
            rejected_by=self.config.node_id,
            ts=time.time(),
        )
        self.producer.produce(self.settings.dead_letter_topic(topic), value=encode(letter))
        self.producer.poll(0)
        EVENTS_OUT.labels("dead-letter").inc()
        DEAD_LETTERS.labels(topic).inc()

    # --- background loops -----------------------------------------------------------------
    async def consume_commands(self) -> None:
        """The prefetch commands of this node's slot, as they come: each starts as soon as one
        of PREFETCH_CONCURRENCY lanes is free, without waiting for the rest of its batch, and
        one superseded by a newer click of its client, or too old to help, is shed without
        work. Offsets are stored in order, up to the oldest command not yet done."""
        topic = self.settings.topic_prefetch_commands
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"{self.settings.worker_group}-node-slot-{self.config.slot}",
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "logger": logging.getLogger("librdkafka"),
            }
        )
        consumer.assign([TopicPartition(topic, self.config.slot)])
        lane = asyncio.Semaphore(PREFETCH_CONCURRENCY)
        started: deque[tuple[Message, asyncio.Task[None] | None]] = deque()
        try:
            while not self._stop.is_set():
                _store_done(consumer, started)
                batch = await asyncio.to_thread(_next_batch, consumer)
                commands = [self._decoded(topic, msg) for msg in batch]
                self.node.note_clicks(c for c in commands if c is not None)
                for msg, command in zip(batch, commands, strict=True):
                    task = None
                    if command is not None and not self._shed(command):
                        await lane.acquire()
                        task = asyncio.create_task(self._command(command, lane))
                    started.append((msg, task))
                    _store_done(consumer, started)
            await asyncio.gather(*(task for _, task in started if task), return_exceptions=True)
            _store_done(consumer, started)
        finally:
            await asyncio.to_thread(consumer.close)

    def _decoded(self, topic: str, msg: Message) -> PrefetchCommand | None:
        """The command a record holds; None for a Kafka error or an invalid record (which is
        dead-lettered and counted)."""
        if msg.error() is not None:
            return None
        try:
            return decode(PrefetchCommand, msg.value() or b"")
        except InvalidRecord as exc:
            self.dead_letter(topic, msg, exc.reason)
            COMMANDS.labels("invalid").inc()
            return None

    def _shed(self, command: PrefetchCommand) -> bool:
        """Whether the command is shed before it takes a lane (see CacheNode.shed)."""
        outcome = self.node.shed(command, time.time())
        if outcome is None:
            return False
        COMMANDS.labels(outcome).inc()
        return True

    async def _command(self, command: PrefetchCommand, lane: asyncio.Semaphore) -> None:
        try:
            async with self.serving_lanes():
                await self.requests_first()
                outcome = await self.node.on_command(command, time.time())
        except Exception:  # one command's failure must not stop the node's prefetching
            log.exception("prefetch command %s failed", command.command_id)
            outcome = "error"
        finally:
            lane.release()
        COMMANDS.labels(outcome).inc()

    async def consume_updates(self) -> None:
        topic = self.settings.topic_content_updates
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"{self.settings.worker_group}-node-{self.config.node_id}-updates",
                "auto.offset.reset": "latest",
                "logger": logging.getLogger("librdkafka"),
            }
        )
        consumer.subscribe([topic])
        try:
            while not self._stop.is_set():
                for msg in await asyncio.to_thread(consumer.consume, 100, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        update = decode(ContentUpdate, msg.value() or b"")
                    except InvalidRecord as exc:
                        # Every node reads every update; the key's owner alone writes the letter.
                        key = (msg.key() or b"").decode(errors="replace")
                        if self.owner(key) is None:
                            self.dead_letter(topic, msg, exc.reason)
                        continue
                    await self.node.on_update(update, owns=self.owned_clients())
        finally:
            await asyncio.to_thread(consumer.close)

    async def heartbeat(self) -> None:
        while not self._stop.is_set():
            self.announce("up")
            AGENTS.set(len(self.sessions))
            RING_MEMBERS.set(len(self.ring.ring().members))
            PRODUCER_QUEUE.set(len(self.producer))
            QUEUED.set(sum(s.queued for s in self.sessions.all()))
            STORE_WRITES.set(self.node.writes_in_flight)
            await asyncio.sleep(HEARTBEAT_S)

    async def leave(self) -> None:
        """Leave the ring and send every agent to its new owner; nothing it holds is lost."""
        self.leaving = True
        self.announce("leaving")
        await asyncio.to_thread(self.producer.flush, 10)
        await self._seen_leaving()
        for session in self.sessions.all():
            owner = self.owner(session.client_id)
            if owner is None:  # no other node: the agent comes back when one is up
                session.shut(CloseCode.GOING_AWAY, "node leaving, no other node up")
                continue
            redirect = Redirect(url=ws_url(owner.url), node_id=owner.node_id, reason="node leaving")
            session.shut(CloseCode.MOVED, "node leaving", last=encode_message(redirect))

    async def _seen_leaving(self) -> None:
        """Wait (at most LEAVE_SEEN_S) until this node's own ring reader has read its leaving
        record: the other nodes read the same topic as fast, so an agent redirected now is
        not sent straight back by a new owner that still counts this node in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEAVE_SEEN_S
        # The ring reader is a thread that announces nothing: poll its ring.
        while loop.time() < deadline and any(  # noqa: ASYNC110
            m.node_id == self.config.node_id for m in self.ring.ring().members
        ):
            await asyncio.sleep(0.05)


NODE = web.AppKey("node", NodeProcess)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    process = app[NODE]
    process.loop = asyncio.get_running_loop()
    settings = process.settings
    cluster, session = await asyncio.to_thread(connect, settings, settings.cassandra_keyspace)
    http = aiohttp.ClientSession()
    fetcher = Fetcher(
        FetcherConfig(
            url_template=settings.origin_url_template,
            allowed_hosts=tuple(h.lower() for h in settings.origin_allowed_hosts),
            no_prefetch_patterns=tuple(settings.no_prefetch_patterns),
            max_bytes=settings.fetch_max_bytes,
            timeout_s=settings.fetch_timeout_s,
        ),
        http,
    )
    store = await asyncio.to_thread(
        ContentStore, session, settings.cassandra_keyspace, pending_ttl_s=settings.prefetch_ttl_s
    )
    process.node = CacheNode(
        process.config.node_id,
        store,
        fetcher,
        process.sessions,
        push_bytes_per_odds=settings.push_bytes_per_odds,
        body_cache_bytes=settings.node_body_cache_mb * 2**20,
        shed_after_s=settings.prefetch_shed_after_s,
    )
    process.ring.start()
    process.announce("up")
    await asyncio.to_thread(process.ring.wait_caught_up, 30.0)
    tasks = [
        asyncio.create_task(coro)
        for coro in (process.consume_commands(), process.consume_updates(), process.heartbeat())
    ]
    yield
    process._stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await process.node.drain()
    for agent in process.sessions.all():
        await process.sessions.remove(agent)
    await http.close()
    await asyncio.to_thread(process.producer.flush, 10)
    process.ring.stop()
    await asyncio.to_thread(cluster.shutdown)


async def _leave(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for open handlers: leave the ring and send every
    agent to its new owner, so their sockets close now instead of after the shutdown timeout."""
    await app[NODE].leave()


def _claims(request: web.Request, process: NodeProcess) -> tokens.TokenClaims:
    """The claims of the request's token (header or ``?token=``), or a TokenError. A token
    signed by an old secret is logged, so an operator rotating secrets sees who still uses it."""
    token = tokens.token_from(request.headers.get("Authorization"), request.query.get("token"))
    claims = tokens.verify(process.secrets, token, None, time.time())
    if claims.key_index > 0:
        log.info(
            "token of client %s (id %s) is signed by old secret #%d",
            claims.client_id,
            claims.token_id,
            claims.key_index,
        )
    return claims


def _client_of(request: web.Request, process: NodeProcess) -> str:
    """The client a request's token proves, or an HTTP error."""
    try:
        return _claims(request, process).client_id
    except tokens.WrongClient as exc:
        raise web.HTTPForbidden(reason=exc.reason) from None
    except tokens.TokenError as exc:
        raise web.HTTPUnauthorized(reason=exc.reason) from None


async def get_content(request: web.Request) -> web.StreamResponse:
    with request.app[NODE].serving_request():
        return await _get_content(request)


async def _get_content(request: web.Request) -> web.StreamResponse:
    process = request.app[NODE]
    client_id = _client_of(request, process)
    content_id = request.match_info["content_id"]
    agent_id = request.headers.get(EVENT_HEADER)
    if agent_id is not None and not is_identifier(agent_id):
        REQUESTS.labels("refused").inc()
        raise web.HTTPBadRequest(reason=f"{EVENT_HEADER} must be an identifier")
    owner = process.owner_url(client_id)
    if owner is not None:
        REQUESTS.labels("misdirected").inc()
        return web.Response(status=421, headers={"Location": owner})
    try:
        item = await process.node.ensure(content_id, prefetch=False)
    except FetchRefused as exc:
        REQUESTS.labels("refused").inc()
        raise web.HTTPNotFound(reason=str(exc)[:120]) from None
    except FetchFailed as exc:
        REQUESTS.labels("failed").inc()
        raise web.HTTPBadGateway(reason=str(exc)[:120]) from None
    headers = {
        "Content-Type": item.content_type,
        "ETag": item.etag or f'"{item.digest}"',
        "X-Content-Version": str(item.version),
        "X-Content-Digest": item.digest,
    }
    # Global Privacy Control: served, never recorded for the model.
    if request.headers.get("Sec-GPC") != "1":
        if agent_id is not None and process.sessions.get(client_id) is None:
            # No socket here to ack the request on: answer once Kafka holds it.
            delivered = asyncio.get_running_loop().create_future()
            process.record_request(
                client_id, content_id, agent_id=agent_id, ack=False, delivered=delivered
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_IN_RESPONSE_S):
                    if await delivered:
                        headers[ACKED_HEADER] = "1"
        else:
            process.record_request(client_id, content_id, agent_id=agent_id)
    session = process.sessions.get(client_id)
    if session is not None and session.holdings.get(content_id, -1) < item.version:
        # The agent keeps what it fetched: pushing it later would only waste its bytes.
        session.holdings[content_id] = item.version
    REQUESTS.labels("served").inc()
    return web.Response(body=item.body, headers=headers)


#: The WebSocket heartbeat (aiohttp's ping control frames) and the welcome's ``heartbeat_s``.
AGENT_HEARTBEAT_S = 25.0
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
        claims = _claims(request, process)
    except tokens.TokenError as exc:
        await ws.close(code=exc.close_code, message=close_reason(exc.reason))
        return
    hello = await _hello(ws)
    if hello is None:
        return
    if hello.client_id != claims.client_id:
        await ws.close(
            code=CloseCode.FORBIDDEN, message=close_reason("token is for another client")
        )
        return
    owner = process.owner(claims.client_id)
    if owner is not None:
        reason = "another node owns this client"
        redirect = Redirect(url=ws_url(owner.url), node_id=owner.node_id, reason=reason)
        await ws.send_str(encode_message(redirect).decode())
        await ws.close(code=CloseCode.MOVED, message=close_reason(f"moved to {owner.node_id}"))
        return
    await _session(process, claims.client_id, hello, ws)


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
            process.relay_feedback(client_id, message)
        elif isinstance(message, View):
            process.record_request(
                client_id, message.content_id, message.kind, message.ts, message.id
            )
        elif isinstance(message, Ping):
            agent.offer(encode_message(Pong(ts=message.ts)))  # echoed, as documented


async def beacon(request: web.Request) -> web.Response:
    """Feedback and views an agent could not send on a socket (it is closing, or its node is
    gone): recorded like the socket's, by any node. 202 when all were recorded; 400 with a
    reason per refused message (the others are still recorded)."""
    process = request.app[NODE]
    client_id = _client_of(request, process)
    try:
        items = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    if not isinstance(items, list) or len(items) > BEACON_MAX:
        return web.json_response(
            {"error": f"the body must be a JSON array of at most {BEACON_MAX} messages"},
            status=400,
        )
    errors: list[dict[str, object]] = []
    for index, item in enumerate(items):
        try:
            message = decode_from_agent(json.dumps(item))
        except InvalidRecord as exc:
            errors.append({"index": index, "reason": exc.reason})
            continue
        if isinstance(message, Feedback):
            process.relay_feedback(client_id, message)
        elif isinstance(message, View):
            process.record_request(
                client_id, message.content_id, message.kind, message.ts, message.id, ack=False
            )
        else:
            kind = type(message).__name__.lower()
            errors.append({"index": index, "reason": f"a {kind} message is not for a beacon"})
    BEACONS.labels("refused" if errors else "recorded").inc()
    payload: dict[str, object] = {"recorded": len(items) - len(errors), "refused": len(errors)}
    if errors:
        return web.json_response({**payload, "errors": errors}, status=400)
    return web.json_response(payload, status=202)


async def healthz(request: web.Request) -> web.Response:
    process = request.app[NODE]
    return web.json_response(
        {
            "node_id": process.config.node_id,
            "slot": process.config.slot,
            "agents": len(process.sessions),
            "ring": [m.node_id for m in process.ring.ring().members],
        }
    )


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def create_app(settings: Settings, config: NodeConfig) -> web.Application:
    tokens.check_secrets(settings.agent_token_secrets)
    app = web.Application()
    app[NODE] = NodeProcess(settings, config)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get(WS_PATH, agent_socket)
    app.router.add_post(BEACON_PATH, beacon)
    app.router.add_get("/v1/content/{content_id:.+}", get_content)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_agent_routes(app)
    app.on_shutdown.append(_leave)
    return app


def run(settings: Settings, config: NodeConfig) -> None:
    web.run_app(create_app(settings, config), host=config.host, port=config.port, print=None)
