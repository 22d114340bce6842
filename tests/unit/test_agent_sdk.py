"""The Python agent SDK against fake cache nodes on loopback: handshake, pushes served from the
local cache, feedback, HTTP misses, redirects, reconnects with holdings and refused tokens."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import fetch, sdk
from agents.sdk import (
    Agent,
    AgentAuthError,
    AgentConnectionError,
    ContentCorrupt,
    ContentNotFound,
)
from foresight import tokens
from schemas.protocol import (
    ACKED_HEADER,
    BEACON_PATH,
    EVENT_HEADER,
    MAX_MESSAGE_BYTES,
    WS_PATH,
    Ack,
    CloseCode,
    Feedback,
    Hello,
    Invalidate,
    Message,
    Ping,
    Pong,
    Push,
    Redirect,
    Update,
    View,
    Welcome,
    decode_from_agent,
    digest,
    encode_message,
)

SECRET = b"s" * 32
CLIENT = "client-7"
TOKEN = tokens.issue(SECRET, CLIENT, ttl_s=3600, now=time.time())
#: Long enough for a message to cross loopback; every wait ends as soon as its event happens.
DELIVERY_S = 2.0


def push(content_id: str, version: int = 1, body: bytes | None = None, **kw: Any) -> Push:
    body = body if body is not None else f"{content_id}@{version}".encode()
    fields: dict[str, Any] = {"digest": digest(body), "pushed_at": 1000.0} | kw
    return Push(
        content_id=content_id, version=version, content_type="text/plain", body=body, **fields
    )


class FakeNode:
    """A cache node that speaks the push protocol and does what the test says."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.hellos: list[Hello] = []
        self.feedback: asyncio.Queue[Feedback] = asyncio.Queue()
        self.views: list[View] = []
        self.gpc: list[str | None] = []
        self.pongs: asyncio.Queue[Pong] = asyncio.Queue()
        self.pings = 0
        self.sessions: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
        self.ws: web.WebSocketResponse | None = None
        self.content: dict[str, tuple[int, bytes]] = {}
        self.http_requests: list[str] = []
        #: Behaviour, set by the test: close after the hello, redirect, 421, a held welcome.
        self.refuse_with: int | None = None
        self.redirect_to: FakeNode | None = None
        self.misdirect_to: FakeNode | None = None
        self.welcome_gate = asyncio.Event()
        self.welcome_gate.set()
        self.heartbeat_s = 25.0
        self.answer_pings = True
        self.corrupt = False
        self.beacons: list[list[dict[str, Any]]] = []
        self.accept_beacons = True
        #: Ack views and requests with an id, as a node does once Kafka holds them.
        self.ack = True
        self.request_ids: list[str | None] = []
        self.server = TestServer(self._app(), host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + WS_PATH

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(WS_PATH, self._agent_ws)
        app.router.add_get("/v1/content/{content_id}", self._content)
        app.router.add_post(BEACON_PATH, self._beacon)
        return app

    async def send(self, *messages: Message) -> None:
        assert self.ws is not None
        for message in messages:
            await self.ws.send_str(encode_message(message).decode())

    async def close_session(self, code: int) -> None:
        assert self.ws is not None
        await self.ws.close(code=code)

    async def next_feedback(self) -> tuple[str, int, str]:
        fb = await asyncio.wait_for(self.feedback.get(), DELIVERY_S)
        return fb.content_id, fb.version, fb.outcome

    async def next_session(self) -> web.WebSocketResponse:
        return await asyncio.wait_for(self.sessions.get(), DELIVERY_S)

    async def _agent_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        hello = decode_from_agent((await ws.receive()).data)
        assert isinstance(hello, Hello)
        self.hellos.append(hello)
        try:
            token = tokens.token_from(request.headers.get("Authorization"), None)
            tokens.verify(SECRET, token, hello.client_id, now=time.time())
        except tokens.TokenError as exc:
            await ws.close(code=exc.close_code, message=exc.reason.encode())
            return ws
        if self.refuse_with is not None:
            await ws.close(code=self.refuse_with)
            return ws
        if self.redirect_to is not None:
            await ws.send_str(encode_message(self._redirect(self.redirect_to)).decode())
            await ws.close(code=CloseCode.MOVED)
            return ws
        await self.welcome_gate.wait()
        welcome = Welcome(
            node_id=self.node_id,
            client_id=hello.client_id,
            server_time=time.time(),
            heartbeat_s=self.heartbeat_s,
        )
        await ws.send_str(encode_message(welcome).decode())
        self.ws = ws
        await self.sessions.put(ws)
        async for msg in ws:
            frame = decode_from_agent(msg.data)
            if isinstance(frame, Feedback):
                self.feedback.put_nowait(frame)
            elif isinstance(frame, View):
                self.views.append(frame)
                if self.ack and frame.id is not None:
                    await ws.send_str(encode_message(Ack(ids=[frame.id])).decode())
            elif isinstance(frame, Pong):
                self.pongs.put_nowait(frame)
            elif isinstance(frame, Ping):
                self.pings += 1
                if self.answer_pings:
                    await ws.send_str(encode_message(Pong(ts=frame.ts)).decode())
        return ws

    def _redirect(self, to: FakeNode) -> Redirect:
        return Redirect(url=to.ws_url, node_id=to.node_id, reason="ring-change")

    async def redirect(self, to: FakeNode) -> None:
        await self.send(self._redirect(to))
        await self.close_session(CloseCode.MOVED)

    async def _beacon(self, request: web.Request) -> web.Response:
        if not self.accept_beacons:
            return web.Response(status=503)
        self.beacons.append(await request.json())
        return web.json_response({"recorded": len(self.beacons[-1]), "refused": 0}, status=202)

    async def _content(self, request: web.Request) -> web.Response:
        content_id = request.match_info["content_id"]
        self.http_requests.append(content_id)
        self.gpc.append(request.headers.get("Sec-GPC"))
        try:
            token = tokens.token_from(request.headers.get("Authorization"), None)
            tokens.verify(SECRET, token, None, now=time.time())
        except tokens.TokenError:
            return web.Response(status=401)
        if self.misdirect_to is not None:
            return web.Response(status=421, headers={"Location": self.misdirect_to.url})
        if content_id not in self.content:
            return web.Response(status=404)
        version, body = self.content[content_id]
        request_id = request.headers.get(EVENT_HEADER)
        self.request_ids.append(request_id)
        acked = {}
        if request_id is not None and self.ack:
            if self.ws is not None and not self.ws.closed:
                # Acked on the socket before the response leaves: the agent may hear it first.
                await self.ws.send_str(encode_message(Ack(ids=[request_id])).decode())
            else:  # no socket of the agent's here: a node answers once Kafka holds it
                acked = {ACKED_HEADER: "1"}
        headers = acked | {
            "X-Content-Version": str(version),
            "X-Content-Digest": digest(body + b"!" if self.corrupt else body),
            "ETag": f'"{version}"',
        }
        return web.Response(body=body, content_type="text/plain", headers=headers)


class Network:
    """Nodes and agents for one test; agents close first, then the nodes."""

    def __init__(self) -> None:
        self.nodes: list[FakeNode] = []
        self.agents: list[Agent] = []

    async def node(self, node_id: str) -> FakeNode:
        node = FakeNode(node_id)
        await node.server.start_server()
        self.nodes.append(node)
        return node

    def agent(self, node: FakeNode, token: str = TOKEN, **kw: Any) -> Agent:
        fast: dict[str, Any] = {"reconnect_min_s": 0.001, "reconnect_max_s": 0.01}
        agent = Agent(CLIENT, token, node.url, **(fast | {"rng": random.Random(7)} | kw))
        self.agents.append(agent)
        return agent

    async def connected(self, node: FakeNode, **kw: Any) -> Agent:
        agent = self.agent(node, **kw)
        await agent.connect()
        await node.next_session()
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close()
        for node in self.nodes:
            await node.server.close()


@pytest.fixture
async def net() -> AsyncIterator[Network]:
    network = Network()
    yield network
    await network.close()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait in small steps for a change of the agent's state that no event announces."""
    async with asyncio.timeout(DELIVERY_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def test_the_agent_says_hello_and_is_welcomed(net: Network) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node, cache_bytes=4096)
    assert agent.connected and agent.node_id == "node-a"
    (hello,) = node.hellos
    assert hello.client_id == CLIENT and hello.holdings == [] and hello.resume is None
    assert hello.cache_max_bytes == 4096 and hello.agent.startswith("foresight-python/")


async def test_the_agent_is_connected_as_soon_as_connect_returns(net: Network) -> None:
    node = await net.node("node-a")
    agent = net.agent(node)
    await agent.connect()
    assert agent.connected and agent.node_id == "node-a"


async def test_a_push_is_served_from_the_cache_and_its_hit_reported_once(net: Network) -> None:
    node = await net.node("node-a")
    node.content["other"] = (1, b"fetched")
    agent = await net.connected(node)
    await node.send(push("p/1", 3, b"predicted"))
    assert await agent.wait_for("p/1", DELIVERY_S) == 3

    first, second = await agent.get("p/1"), await agent.get("p/1")
    assert (first.body, first.version, first.from_cache) == (b"predicted", 3, True)
    assert first.content_type == "text/plain" and second.from_cache
    await agent.get("other")
    # Feedback keeps its order, so a second hit would come before the miss.
    assert await node.next_feedback() == ("p/1", 3, "hit")
    assert await node.next_feedback() == ("other", 1, "miss")
    assert (agent.stats.pushes, agent.stats.hits, agent.stats.bytes_pushed) == (1, 2, 9)
    assert node.http_requests == ["other"]


async def test_a_miss_is_fetched_from_the_node_then_served_locally(net: Network) -> None:
    node = await net.node("node-a")
    node.content.update({"a/1": (4, b"alpha"), "b": (1, b"beta")})
    agent = await net.connected(node)

    fetched = await agent.get("a/1")
    assert (fetched.body, fetched.version, fetched.from_cache) == (b"alpha", 4, False)
    assert fetched.content_type.startswith("text/plain")
    again = await agent.get("a/1")
    assert (again.body, again.from_cache) == (b"alpha", True)
    await agent.get("b")
    # Fetched on demand, so its local answer owes no hit.
    assert await node.next_feedback() == ("a/1", 4, "miss")
    assert await node.next_feedback() == ("b", 1, "miss")
    assert node.http_requests == ["a/1", "b"]
    assert (agent.stats.misses, agent.stats.hits) == (2, 1)


async def test_an_unknown_content_id_is_not_found(net: Network) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node)
    with pytest.raises(ContentNotFound):
        await agent.get("nowhere")
    assert "nowhere" not in agent.cache


async def test_a_push_that_does_not_match_its_digest_is_refused(net: Network) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node)
    await node.send(push("bad", body=b"tampered", digest=digest(b"original")), push("good"))
    await agent.wait_for("good", DELIVERY_S)
    assert "bad" not in agent.cache
    assert agent.stats.rejected_pushes == 1


async def test_a_fetched_body_that_does_not_match_its_digest_is_refused(net: Network) -> None:
    node = await net.node("node-a")
    node.content["x"] = (1, b"x")
    node.corrupt = True
    agent = await net.connected(node)
    with pytest.raises(ContentCorrupt):
        await agent.get("x")
    assert "x" not in agent.cache and agent.stats.misses == 0


async def test_an_unused_prefetch_that_is_evicted_is_reported_unused(net: Network) -> None:
    node = await net.node("node-a")
    node.content["marker"] = (1, b"m")
    agent = await net.connected(node, cache_bytes=10)
    await node.send(push("a", body=b"12345678"), push("b", body=b"abcdefgh"))
    await agent.wait_for("b", DELIVERY_S)
    assert "a" not in agent.cache
    assert await node.next_feedback() == ("a", 1, "unused")

    await agent.get("b")
    await node.send(push("c", body=b"ABCDEFGH"))
    await agent.wait_for("c", DELIVERY_S)
    await agent.get("marker")
    # b was used before its eviction: its hit is its only outcome.
    assert await node.next_feedback() == ("b", 1, "hit")
    assert await node.next_feedback() == ("marker", 1, "miss")
    assert agent.stats.unused == 1


async def test_a_redirect_at_connect_finds_the_owner(net: Network) -> None:
    a, b = await net.node("node-a"), await net.node("node-b")
    a.redirect_to = b
    b.content["p"] = (2, b"from b")
    agent = net.agent(a)
    await agent.connect()
    assert agent.node_id == "node-b" and agent.owner_url == b.url
    assert len(a.hellos) == 1 and len(b.hellos) == 1
    assert b.hellos[0].resume is not None and b.hellos[0].resume.redirected
    assert (agent.stats.redirects, agent.stats.reconnects) == (1, 0)
    assert (await agent.get("p")).body == b"from b"
    assert b.http_requests == ["p"] and a.http_requests == []


async def test_a_redirect_mid_session_moves_the_agent_with_its_holdings(net: Network) -> None:
    a, b = await net.node("node-a"), await net.node("node-b")
    # A long backoff: a redirect is followed at once, it is not a failure.
    agent = await net.connected(a, reconnect_min_s=30.0, reconnect_max_s=60.0)
    await a.send(push("x", 1), push("y", 5))
    await agent.wait_for("y", DELIVERY_S)
    await agent.get("x")
    assert await a.next_feedback() == ("x", 1, "hit")

    await a.redirect(b)
    await b.next_session()
    await eventually(lambda: agent.node_id == "node-b")  # b has sent the welcome; now read
    hello = b.hellos[-1]
    assert {(h.content_id, h.version, h.digest) for h in hello.holdings} == {
        ("x", 1, digest(b"x@1")),
        ("y", 5, digest(b"y@5")),
    }
    assert hello.resume is not None
    assert (hello.resume.node_id, hello.resume.redirected) == ("node-a", True)
    assert agent.node_id == "node-b" and len(a.hellos) == 1
    assert {"x", "y"} <= {h.content_id for h in agent.cache.holdings()}
    assert (agent.stats.redirects, agent.stats.reconnects) == (1, 1)
    # The new owner hears the next outcome.
    await agent.get("y")
    assert await b.next_feedback() == ("y", 5, "hit")


async def test_when_the_owner_dies_any_node_known_leads_to_the_new_owner(
    net: Network,
) -> None:
    a, b, c = await net.node("node-a"), await net.node("node-b"), await net.node("node-c")
    a.redirect_to = b
    agent = net.agent(a)
    await agent.connect()
    await b.next_session()
    await b.send(push("x", 4))
    await agent.wait_for("x", DELIVERY_S)

    a.redirect_to = c  # the ring without b
    await b.close_session(CloseCode.GOING_AWAY)
    await b.server.close()
    await c.next_session()
    await eventually(lambda: agent.node_id == "node-c")  # c has sent the welcome; now read
    hello = c.hellos[-1]
    assert [(h.content_id, h.version) for h in hello.holdings] == [("x", 4)]
    assert hello.resume is not None and hello.resume.node_id == "node-b"
    assert agent.node_id == "node-c" and agent.owner_url == c.url
    assert (await agent.get("x")).from_cache


async def test_more_than_three_redirects_without_a_welcome_fail_the_connect(
    net: Network,
) -> None:
    a, b = await net.node("node-a"), await net.node("node-b")
    a.redirect_to, b.redirect_to = b, a
    with pytest.raises(AgentConnectionError, match="redirects"):
        await net.agent(a, connect_retry_s=0).connect()
    assert len(a.hellos) + len(b.hellos) == 4


async def test_a_dropped_connection_is_resumed_with_holdings_and_buffered_feedback(
    net: Network,
) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node)
    await node.send(push("x", 2))
    await agent.wait_for("x", DELIVERY_S)

    node.welcome_gate.clear()
    await node.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(node.hellos) == 2)
    assert not agent.connected
    # Used while disconnected: the hit waits in the buffer until the welcome.
    assert (await agent.get("x")).from_cache
    node.welcome_gate.set()
    await node.next_session()
    assert await node.next_feedback() == ("x", 2, "hit")
    hello = node.hellos[-1]
    assert [(h.content_id, h.version) for h in hello.holdings] == [("x", 2)]
    assert hello.resume is not None
    assert (hello.resume.node_id, hello.resume.redirected) == ("node-a", False)
    assert agent.stats.reconnects == 1 and agent.stats.redirects == 0


async def test_a_node_that_goes_silent_is_left_for_a_new_connection(net: Network) -> None:
    node = await net.node("node-a")
    node.heartbeat_s, node.answer_pings = 0.02, False
    agent = await net.connected(node)
    await node.next_session()
    await eventually(lambda: agent.stats.reconnects >= 1)  # counted once the welcome is read
    assert node.pings >= 1


async def test_a_push_of_a_version_already_held_is_a_duplicate(net: Network) -> None:
    node = await net.node("node-a")
    node.content["marker"] = (1, b"m")
    agent = await net.connected(node)
    await node.send(push("x", 1), push("x", 1), push("done"))
    await agent.wait_for("done", DELIVERY_S)
    assert (agent.stats.pushes, agent.stats.duplicate_pushes) == (3, 1)
    await agent.get("marker")
    # The repeat neither replaced nor dropped the held copy.
    assert await node.next_feedback() == ("marker", 1, "miss")


async def test_a_push_of_an_item_the_agent_fetched_itself_is_late_not_duplicate(
    net: Network,
) -> None:
    node = await net.node("node-a")
    node.content["x"] = (1, b"x")
    agent = await net.connected(node)
    await agent.get("x")
    await node.send(push("x", 1, b"x"), push("done"))
    await agent.wait_for("done", DELIVERY_S)
    assert (agent.stats.late_pushes, agent.stats.duplicate_pushes) == (1, 0)
    # The copy it fetched stays its own: a later answer owes the push no hit.
    assert (await agent.get("x")).from_cache
    assert await node.next_feedback() == ("x", 1, "miss")
    assert node.feedback.empty()


async def test_every_local_answer_is_told_to_the_node_as_a_view(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (2, b"a")
    seen: list[tuple[str, float]] = []
    agent = await net.connected(node, on_push=lambda p, at: seen.append((p.content_id, at)))
    await node.send(push("p/1", 3))
    await agent.wait_for("p/1", DELIVERY_S)
    for item in ("p/1", "p/1", "a", "a"):
        await agent.get(item)
    await eventually(lambda: len(node.views) == 3)
    # Two answers of the pushed item and the second of the fetched one; the fetch itself
    # reached the node as a request.
    assert [(v.content_id, v.version) for v in node.views] == [("p/1", 3), ("p/1", 3), ("a", 2)]
    assert [item for item, _ in seen] == ["p/1"] and node.gpc == [None]


async def test_a_private_agent_sends_no_views_and_marks_its_fetches(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node, private=True)
    await agent.get("a")
    await agent.get("a")
    assert await node.next_feedback() == ("a", 1, "miss")
    assert node.views == [] and node.gpc == ["1"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (tokens.issue(b"w" * 32, CLIENT, ttl_s=3600, now=time.time()), 4001),
        (tokens.issue(SECRET, "client-8", ttl_s=3600, now=time.time()), 4003),
        (tokens.issue(SECRET, CLIENT, ttl_s=3600, now=time.time() - 7200), 4004),
    ],
)
async def test_a_refused_token_raises_and_is_not_retried(
    net: Network, token: str, code: int
) -> None:
    node = await net.node("node-a")
    agent = net.agent(node, token=token)
    with pytest.raises(AgentAuthError, match=f"close {code}"):
        await agent.connect()
    with pytest.raises(AgentAuthError):
        await agent.get("p")
    assert len(node.hellos) == 1 and node.http_requests == []


async def test_a_token_refused_mid_session_stops_the_agent(net: Network) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node)
    await node.close_session(CloseCode.TOKEN_EXPIRED)
    await eventually(lambda: agent.error is not None)
    with pytest.raises(AgentAuthError, match="4004"):
        await agent.get("p")
    await asyncio.sleep(0.02)  # ten backoffs' worth: a retry would have said hello by now
    assert len(node.hellos) == 1


async def test_a_misdirected_fetch_follows_location_once(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await net.node("node-a"), await net.node("node-b")
    a.misdirect_to = b
    b.content.update({"p": (1, b"p"), "q": (1, b"q")})
    agent = await net.connected(a)
    assert (await agent.get("p")).body == b"p"
    assert agent.owner_url == b.url
    await agent.get("q")
    assert a.http_requests == ["p"] and b.http_requests == ["p", "q"]

    b.misdirect_to = a
    monkeypatch.setattr(fetch, "FETCH_RETRY_S", 1.0)
    with pytest.raises(AgentConnectionError, match=r"(?i)misdirected"):
        await agent.get("r")
    # Nodes that name each other for a moment (one's ring is catching up after an outage):
    # the get tries again and is served once they agree.
    monkeypatch.setattr(fetch, "FETCH_RETRY_S", 10.0)
    b.content["s"] = (1, b"s")
    getting = asyncio.create_task(agent.get("s"))
    await asyncio.sleep(0.5)
    b.misdirect_to = None
    assert (await getting).body == b"s"


async def test_an_update_replaces_the_held_version(net: Network) -> None:
    node = await net.node("node-a")
    agent = await net.connected(node)
    await node.send(push("x", 1, b"old"))
    await agent.wait_for("x", DELIVERY_S)
    update = Update(
        content_id="x",
        version=2,
        digest=digest(b"new"),
        content_type="text/plain",
        body=b"new",
        pushed_at=1001.0,
        previous_version=1,
    )
    await node.send(update, Update(**{**_fields(update), "content_id": "not-held"}))
    assert await agent.wait_for("x", DELIVERY_S, min_version=2) == 2
    result = await agent.get("x")
    assert (result.body, result.version, result.from_cache) == (b"new", 2, True)
    assert await node.next_feedback() == ("x", 1, "unused")
    assert await node.next_feedback() == ("x", 2, "hit")
    assert "not-held" not in agent.cache and agent.stats.updates == 2


def _fields(message: Update) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__struct_fields__}


async def test_an_invalidate_drops_the_held_copy(net: Network) -> None:
    node = await net.node("node-a")
    node.content["x"] = (2, b"fresh")
    agent = await net.connected(node)
    await node.send(push("x", 1), push("y", 3))
    await agent.wait_for("y", DELIVERY_S)
    await node.send(Invalidate(content_id="x"), Invalidate(content_id="y", version=2))
    await node.send(Ping(ts=5.0))
    assert (await asyncio.wait_for(node.pongs.get(), DELIVERY_S)).ts == 5.0
    assert "x" not in agent.cache and "y" in agent.cache  # y is newer than the invalidation
    assert await node.next_feedback() == ("x", 1, "unused")
    result = await agent.get("x")
    assert (result.body, result.from_cache) == (b"fresh", False)


async def test_expired_prefetches_are_reported(net: Network) -> None:
    node = await net.node("node-a")
    now = [1000.0]
    agent = await net.connected(node, clock=lambda: now[0])
    await node.send(push("old", pushed_at=1000.0), push("new", pushed_at=1500.0))
    await agent.wait_for("new", DELIVERY_S)
    now[0] = 1700.0
    assert await agent.report_expired(600.0) == 1
    assert await node.next_feedback() == ("old", 1, "expired")
    assert "old" not in agent.cache and "new" in agent.cache


async def test_an_unreachable_node_fails_the_connect(net: Network) -> None:
    node = await net.node("node-a")
    agent = net.agent(node, connect_retry_s=0.05)  # it tries again, then gives up
    await node.server.close()
    net.nodes.remove(node)
    with pytest.raises(AgentConnectionError):
        await agent.connect()


async def test_close_sends_the_feedback_still_queued(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node)
    await agent.get("a")
    # A hang guard, not a timing: close() once waited out a heartbeat here.
    async with asyncio.timeout(DELIVERY_S):
        await agent.close()
    assert await node.next_feedback() == ("a", 1, "miss")
    assert not agent.connected


async def test_close_during_a_reconnect_delivers_the_queued_view_on_the_new_socket(
    net: Network,
) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node)
    await agent.get("a")
    assert await node.next_feedback() == ("a", 1, "miss")
    node.welcome_gate.clear()
    await node.close_session(CloseCode.TRY_AGAIN_LATER)  # shed under load: the agent retries
    await eventually(lambda: len(node.hellos) == 2)
    assert (await agent.get("a")).from_cache  # its view waits for the next socket
    closing = asyncio.create_task(agent.close())
    await asyncio.sleep(0.2)
    node.welcome_gate.set()  # the reconnect completes while close() waits for it
    async with asyncio.timeout(DELIVERY_S):
        await closing
    await eventually(lambda: [v.content_id for v in node.views] == ["a"])
    assert agent.stats.feedback_unsent == 0


async def test_close_gives_up_on_a_node_that_never_comes_back_and_counts_what_it_held(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk, "CLOSE_WAIT_S", 0.3)
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node)
    await agent.get("a")
    assert await node.next_feedback() == ("a", 1, "miss")
    node.welcome_gate.clear()
    node.accept_beacons = False
    await node.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(node.hellos) == 2)
    await agent.get("a")
    async with asyncio.timeout(DELIVERY_S):
        await agent.close()
    assert agent.stats.feedback_unsent == 1 and node.views == [] and node.beacons == []


async def test_close_without_a_socket_posts_what_it_holds_to_a_node_that_takes_it(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk, "CLOSE_WAIT_S", 0.3)
    a, b = await net.node("node-a"), await net.node("node-b")
    a.content["a"] = (1, b"a")
    agent = await net.connected(a, nodes=[b.url])
    await agent.get("a")
    assert await a.next_feedback() == ("a", 1, "miss")
    a.welcome_gate.clear()
    b.welcome_gate.clear()  # no socket anywhere: only a beacon can carry the view
    a.accept_beacons = False
    await a.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(a.hellos) + len(b.hellos) >= 2)
    await agent.get("a")
    async with asyncio.timeout(DELIVERY_S):
        await agent.close()
    assert [m["type"] for m in b.beacons[0]] == ["view"]
    assert b.beacons[0][0]["content_id"] == "a"
    assert agent.stats.feedback_unsent == 0 and agent.stats.beacons == 1


async def test_a_get_while_the_owner_is_gone_is_served_by_another_known_node(
    net: Network,
) -> None:
    a, b = await net.node("node-a"), await net.node("node-b")
    b.content["x"] = (3, b"xyz")
    agent = await net.connected(a, nodes=[b.url])
    await a.close_session(CloseCode.GOING_AWAY)
    await a.server.close()  # the owner is gone; node-b now serves its clients
    result = await agent.get("x")
    assert (result.body, result.version, result.from_cache) == (b"xyz", 3, False)
    assert b.http_requests  # served by node-b


async def test_a_view_without_an_ack_is_sent_again_on_the_next_socket(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    node.ack = False  # the node took the view, then died before Kafka held it
    agent = await net.connected(node)
    await agent.get("a")
    assert (await agent.get("a")).from_cache
    await eventually(lambda: len(node.views) == 1)
    node.ack = True
    await node.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(node.views) == 3)
    first, request, again = node.views
    # The miss had no ack either: it goes again, first, as a request with the GET's id.
    assert request.kind == "request" and request.id == node.request_ids[0]
    assert request.content_id == "a" and request.version == 1
    assert again.id == first.id and again.content_id == "a" and again.kind == "view"
    assert agent.stats.resent == 2
    # Acked now: another reconnect sends nothing again.
    seen = len(node.views)
    await node.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(node.hellos) == 3)
    await agent.close()
    assert len(node.views) == seen
    assert agent.stats.unacked_at_close == 0


async def test_an_ack_heard_before_its_response_is_not_lost(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node)
    await agent.get("a")  # the fake node acks on the socket before it answers
    await node.close_session(CloseCode.TRY_AGAIN_LATER)
    await eventually(lambda: len(node.hellos) == 2)
    await agent.close()
    assert node.views == []  # nothing was sent again: the early ack was kept
    assert agent.stats.resent == 0


async def test_close_waits_for_acks_and_counts_those_that_never_came(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk, "CLOSE_WAIT_S", 0.3)
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    node.ack = False
    agent = await net.connected(node)
    await agent.get("a")
    assert (await agent.get("a")).from_cache
    async with asyncio.timeout(DELIVERY_S):
        await agent.close()
    assert agent.stats.unacked_at_close == 2  # the request and the view
    assert agent.stats.feedback_unsent == 0


async def test_a_private_agent_sends_no_ids(net: Network) -> None:
    node = await net.node("node-a")
    node.content["a"] = (1, b"a")
    agent = await net.connected(node, private=True)
    await agent.get("a")
    await agent.close()
    assert node.request_ids == [None]


@pytest.mark.parametrize("code", [CloseCode.POLICY, CloseCode.BAD_MESSAGE])
async def test_after_a_policy_or_bad_message_close_the_agent_backs_off_for_long(
    net: Network, code: CloseCode
) -> None:
    node = await net.node("node-a")
    # Backoff from 1 ms to 0.6 s, jittered to half or more: at most 1 ms after a 1013, at
    # least 0.3 s after these.
    agent = await net.connected(node, reconnect_min_s=0.001, reconnect_max_s=0.6)
    await node.close_session(code)
    await asyncio.sleep(0.2)
    assert len(node.hellos) == 1, "the agent came straight back"
    await node.next_session()  # it does come back, after the long backoff
    await eventually(lambda: agent.stats.reconnects == 1)  # counted once the welcome is read
    assert len(node.hellos) == 2
