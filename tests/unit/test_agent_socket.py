"""The agents' WebSocket on a cache node (consumers.agent_socket), as an integrator
writing an agent from docs/push-protocol.md meets it: what a connection gets for a bad first
frame, a frame of another protocol version, a flood of frames, a non-owner and a node failure.

The node runs in process over aiohttp's test server, without Kafka, Cassandra or a ring: its
producer, its content node and its ring are fakes, so each test sees exactly what the
handler does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

import consumers.agent_socket
import consumers.outbox
from consumers.agent_socket import agent_socket
from consumers.node import CacheNode
from consumers.ownership import NodeConfig, ws_url
from consumers.process import NODE, NodeProcess
from consumers.sessions import AgentSession
from foresight import tokens
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from schemas.protocol import (
    MAX_BAD_FRAMES,
    MAX_HOLDINGS,
    WS_PATH,
    CloseCode,
    Error,
    Hello,
    NodeMessage,
    Ping,
    Pong,
    Redirect,
    View,
    Welcome,
    decode_from_node,
    digest,
    encode_message,
)

SECRET = "unit-secret-0123456789abcdef-0123456789abcdef"
#: Far longer than any answer takes in process; a test waiting this long has failed.
ANSWER_S = 5.0
CLIENT = "client-1"
NODE_B_URL = "http://127.0.0.1:1"


class FakeProducer:
    """The node's Kafka producer, in memory: what was produced, acked at once."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.records: list[tuple[str, bytes]] = []

    def produce(self, topic: str, *, key: bytes | None = None, value: bytes, **kw: Any) -> None:
        self.records.append((topic, value))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeContentNode:
    """The parts of CacheNode the socket handler uses; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.fail: Exception | None = None

    async def deliver_pending(self, session: AgentSession) -> int:
        if self.fail is not None:
            raise self.fail
        return 0


class FakeRing:
    def __init__(self, *members: Member) -> None:
        self.members = list(members)
        self.polls = 0
        self._gone: dict[str, int] = {}  # node id -> polls after which it is no longer listed

    def forget(self, node_id: str, after: int) -> None:
        """List ``node_id`` for ``after`` more polls (its leaving record is on its way)."""
        self._gone[node_id] = self.polls + after

    def ring(self) -> HashRing:
        self.polls += 1
        listed = [m for m in self.members if self.polls <= self._gone.get(m.node_id, self.polls)]
        return HashRing(listed)


class Node:
    """A node process on a test server, and a client to talk to it."""

    def __init__(self, process: NodeProcess, client: TestClient[web.Request, web.Application]):
        self.process = process
        self.client = client
        self.content = cast(FakeContentNode, process.node)

    @property
    def producer(self) -> FakeProducer:
        return cast(FakeProducer, self.process.outbox.producer)

    def views_recorded(self) -> int:
        topic = self.process.settings.topic_interactions
        return sum(1 for t, _ in self.producer.records if t == topic)

    async def connect(
        self, client_id: str = CLIENT, headers: dict[str, str] | None = None, query: str = ""
    ) -> aiohttp.ClientWebSocketResponse:
        if headers is None:
            token = tokens.issue(SECRET, client_id, 600, time.time())
            headers = {"Authorization": f"Bearer {token}"}
        return await self.client.ws_connect(WS_PATH + query, headers=headers)

    async def welcomed(self, client_id: str = CLIENT) -> aiohttp.ClientWebSocketResponse:
        ws = await self.connect(client_id)
        await ws.send_str(hello(client_id))
        assert isinstance(await message(ws), Welcome)
        return ws


NodeFactory = Callable[..., Any]


def hello(client_id: str = CLIENT, **change: Any) -> str:
    raw = json.loads(encode_message(Hello(client_id=client_id, agent="test/1")))
    raw.update(change)
    return json.dumps(raw)


async def message(ws: aiohttp.ClientWebSocketResponse) -> NodeMessage:
    """The next frame the node sends, decoded; fails on a close or silence."""
    msg = await ws.receive(timeout=ANSWER_S)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return decode_from_node(msg.data)


async def closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    """The close code and reason the node sends next (frames before it fail the test)."""
    msg = await ws.receive(timeout=ANSWER_S)
    assert msg.type == aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
    return int(msg.data), msg.extra or ""


@pytest.fixture
async def make_node(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NodeFactory]:
    """``await make_node(*members, **settings)``: a node-0 whose ring is ``members``
    (empty: it owns every client)."""
    monkeypatch.setattr(consumers.outbox, "Producer", FakeProducer)
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(*members: Member, **settings: Any) -> Node:
        config = NodeConfig("node-0", 0, "127.0.0.1", 0)
        process = NodeProcess(Settings(agent_token_secrets=[SECRET], **settings), config)
        process.node = cast(CacheNode, FakeContentNode())
        monkeypatch.setattr(process.ownership, "watcher", FakeRing(*members))
        app = web.Application()
        app[NODE] = process
        app.router.add_get(WS_PATH, agent_socket)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        process.outbox.loop = asyncio.get_running_loop()
        clients.append(client)
        return Node(process, client)

    yield make
    for client in clients:
        await client.close()


def with_reason(reason: str, *fragments: str) -> bool:
    """A close reason that says what was wrong, and fits a close frame (RFC 6455)."""
    return bool(reason) and len(reason.encode()) <= 123 and all(f in reason for f in fragments)


# --- 1. The first frame ---------------------------------------------------------------------------

HOLDING = {"content_id": "p-1", "version": 1, "digest": digest(b"x")}


@pytest.mark.parametrize(
    ("first", "fragment"),
    [
        (hello(protocol_version=2), "protocol_version"),
        ("this is not JSON", "JSON"),
        (encode_message(Ping(ts=1.0)).decode(), "ping"),
        (hello(holdings=[HOLDING] * (MAX_HOLDINGS + 1)), "holdings"),
        (hello(holdings=None), "holdings"),
    ],
    ids=["unsupported-version", "not-json", "ping-first", "10001-holdings", "null-holdings"],
)
async def test_a_first_frame_that_is_not_a_valid_hello_gets_error_then_close_4009(
    make_node: NodeFactory, first: str, fragment: str
) -> None:
    node = await make_node()
    ws = await node.connect()
    await ws.send_str(first)
    error = await message(ws)
    assert isinstance(error, Error) and error.code == CloseCode.BAD_MESSAGE
    assert fragment in error.reason
    code, reason = await closed(ws)
    assert code == CloseCode.BAD_MESSAGE
    assert with_reason(reason, fragment), reason


async def test_no_hello_in_time_closes_4008_saying_so(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumers.agent_socket, "HELLO_TIMEOUT_S", 0.05)
    node = await make_node()
    ws = await node.connect()
    code, reason = await closed(ws)
    assert code == CloseCode.POLICY
    assert with_reason(reason, "no hello"), reason


async def test_two_different_tokens_close_4001(make_node: NodeFactory) -> None:
    node = await make_node()
    one = tokens.issue(SECRET, CLIENT, 600, time.time())
    other = tokens.issue(SECRET, CLIENT, 600, time.time() - 1)
    ws = await node.connect(headers={"Authorization": f"Bearer {one}"}, query=f"?token={other}")
    code, reason = await closed(ws)
    assert code == CloseCode.UNAUTHORIZED
    assert with_reason(reason, "two different tokens"), reason


# --- 2. Another protocol version after the welcome ------------------------------------------------


async def test_a_frame_of_another_protocol_version_after_the_welcome_closes_4009(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    ws = await node.welcomed()
    await ws.send_str(json.dumps({"type": "ping", "ts": 1.0, "protocol_version": 2}))
    await ws.send_str(encode_message(Ping(ts=2.0)).decode())  # not read: the node closes first
    error = await message(ws)
    assert isinstance(error, Error) and error.code == CloseCode.BAD_MESSAGE
    assert "protocol_version" in error.reason
    code, reason = await closed(ws)
    assert code == CloseCode.BAD_MESSAGE
    assert with_reason(reason, "protocol_version"), reason


async def test_a_bad_frame_of_this_version_gets_an_error_and_the_connection_stays(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    ws = await node.welcomed()
    await ws.send_str(json.dumps({"type": "ping"}))
    await ws.send_str(encode_message(Ping(ts=2.0)).decode())
    error = await message(ws)
    assert isinstance(error, Error) and error.code == CloseCode.BAD_MESSAGE
    assert await message(ws) == Pong(ts=2.0)
    await ws.close()


async def test_the_eleventh_bad_frame_gets_its_error_then_close_4009(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    ws = await node.welcomed()
    for _ in range(MAX_BAD_FRAMES + 1):
        await ws.send_str("{}")
    for _ in range(MAX_BAD_FRAMES + 1):
        error = await message(ws)
        assert isinstance(error, Error) and error.code == CloseCode.BAD_MESSAGE
    code, reason = await closed(ws)
    assert code == CloseCode.BAD_MESSAGE
    assert with_reason(reason, f"more than {MAX_BAD_FRAMES} bad frames"), reason


# --- 3. The redirect names the owner --------------------------------------------------------------

NODE_A = Member("node-0", url="http://127.0.0.1:2")
NODE_B = Member("node-1", url=NODE_B_URL)


def client_owned_by(ring: HashRing, node_id: str) -> str:
    return next(c for n in range(1000) if ring.owner(c := f"client-{n}").node_id == node_id)


async def test_a_non_owner_redirects_to_the_owner_by_its_node_id(make_node: NodeFactory) -> None:
    node = await make_node(NODE_A, NODE_B)
    client = client_owned_by(HashRing([NODE_A, NODE_B]), "node-1")
    ws = await node.connect(client)
    await ws.send_str(hello(client))
    redirect = await message(ws)
    assert redirect == Redirect(
        url=ws_url(NODE_B_URL), node_id="node-1", reason="another node owns this client"
    )
    code, reason = await closed(ws)
    assert code == CloseCode.MOVED and reason


async def test_a_leaving_node_redirects_its_agents_to_the_new_owner_by_its_node_id(
    make_node: NodeFactory,
) -> None:
    node = await make_node(NODE_A, NODE_B)
    client = client_owned_by(HashRing([NODE_A, NODE_B]), "node-0")
    ws = await node.welcomed(client)
    ring = cast(FakeRing, node.process.ownership.watcher)
    ring.forget("node-0", after=3)
    await node.process.leave()
    # It waited for its own ring to drop it, as the other nodes' rings then do too, so that
    # the new owner does not send the agent straight back.
    assert ring.polls > 3
    redirect = await message(ws)
    assert isinstance(redirect, Redirect)
    assert (redirect.node_id, redirect.url) == ("node-1", ws_url(NODE_B_URL))
    code, reason = await closed(ws)
    assert code == CloseCode.MOVED and reason


async def test_a_leaving_node_with_no_other_node_closes_1001(make_node: NodeFactory) -> None:
    node = await make_node(NODE_A)
    ws = await node.welcomed()
    cast(FakeRing, node.process.ownership.watcher).forget("node-0", after=0)
    await node.process.leave()
    code, reason = await closed(ws)
    assert code == CloseCode.GOING_AWAY and reason


# --- 6. Flood ---------------------------------------------------------------------------------

BURST = 20


async def test_a_flood_of_frames_is_cut_at_the_limit_with_error_then_close_4008(
    make_node: NodeFactory,
) -> None:
    # A sustained rate this low refills no frame while the test runs: exactly BURST pass.
    node = await make_node(agent_frames_per_s=0.001, agent_frame_burst=BURST)
    limited = "foresight_node_agents_rate_limited_total"
    before = REGISTRY.get_sample_value(limited) or 0.0
    ws = await node.welcomed()
    for n in range(BURST * 3):
        view = View(content_id=f"p-{n}", version=1, ts=1.0)
        await ws.send_str(encode_message(view).decode())
    error = await message(ws)
    assert isinstance(error, Error) and error.code == CloseCode.POLICY
    code, reason = await closed(ws)
    assert code == CloseCode.POLICY
    assert with_reason(reason, "rate"), reason
    assert node.views_recorded() == BURST
    assert REGISTRY.get_sample_value(limited) == before + 1


async def test_traffic_within_the_limit_is_all_recorded(make_node: NodeFactory) -> None:
    node = await make_node(agent_frames_per_s=0.001, agent_frame_burst=BURST)
    ws = await node.welcomed()
    for n in range(BURST - 1):
        view = View(content_id=f"p-{n}", version=1, ts=1.0)
        await ws.send_str(encode_message(view).decode())
    await ws.send_str(encode_message(Ping(ts=3.0)).decode())
    assert await message(ws) == Pong(ts=3.0)
    assert node.views_recorded() == BURST - 1
    await ws.close()


# --- 7. An unexpected error ---------------------------------------------------------------------


async def test_an_unexpected_error_closes_1011_and_forgets_the_agent(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node()
    node.content.fail = RuntimeError("store exploded")
    ws = await node.connect()
    await ws.send_str(hello())
    msg = await ws.receive(timeout=ANSWER_S)
    if msg.type == aiohttp.WSMsgType.TEXT:  # the welcome may leave before the failure
        assert isinstance(decode_from_node(msg.data), Welcome)
        msg = await ws.receive(timeout=ANSWER_S)
    assert msg.type == aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
    assert msg.data == CloseCode.INTERNAL_ERROR and msg.extra
    assert node.process.sessions.get(CLIENT) is None
    assert "store exploded" in caplog.text


# --- Secret rotation ------------------------------------------------------------------------------


async def test_a_token_signed_by_an_old_secret_is_welcome_and_logged(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node()
    # Rotated: a new current secret first, the one the agent's token was signed with second.
    node.process.secrets = ["rotated-secret-0123456789abcdef-0123456789", SECRET]
    with caplog.at_level(logging.INFO, logger="consumers.auth"):
        ws = await node.welcomed()
        await ws.close()
    assert any(
        "old secret #1" in r.getMessage() and CLIENT in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
