"""Every close code of docs/push-protocol.md's table, sent by a live cache node.

The table is read from the document itself, and each code has a scenario that leads a real
`foresight cache-node` (on the real Kafka and Cassandra, on this test's topics and keyspace)
to close an agent's WebSocket with it; the test fails if the table names a code no scenario
reaches, a scenario's code is not in the table, or the node closes with another code or
without a reason. An integrator writes an agent from that table: it must be true.

One node runs the scenarios that need one node, most of them at once; a second node starts
for the redirect (4010) and stops again; the last scenarios break the first node's store
(1011) and shut it down with no other node up (1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType

from consumers.ownership import ws_url
from foresight import tokens
from foresight.cassandra import connect
from foresight.migrate import migrate
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from foresight.stack import free_port
from origin.catalog import MAX_SIZE, spec_of
from schemas import PrefetchCommand, encode
from schemas.protocol import (
    MAX_MESSAGE_BYTES,
    WS_PATH,
    Error,
    Hello,
    NodeMessage,
    Redirect,
    View,
    Welcome,
    decode_from_node,
    encode_message,
)
from tests.fuzz.stack import produce_all

from .conftest import settings_env
from .processes import delivery_settings, foresight_processes

SPEC = Path(__file__).resolve().parents[2] / "docs" / "push-protocol.md"
SECRET = "close-codes-secret-0123456789abcdef-0123456789"
# The node's hello timeout is 10 s; everything else it answers within a few hundred ms on a
# loaded two-core machine. Past this, the scenario has failed.
ANSWER_S = 20.0
# A node's shutdown: it announces it leaves, flushes its producer (up to 10 s), then closes.
SHUTDOWN_S = 30.0
# Until the other node's heartbeat or leave record reaches a node's ring.
RING_S = 30.0
# The rate limit of this test's nodes: the defaults (burst 2000) work the same, with a longer
# flood.
FLOOD_BURST = 100
FLOOD_RATE = 1.0
# The slow agent: its socket's receive buffer, and the pushes that pile up behind it. Big
# items fill the buffers between the node and the agent (kernel and aiohttp's 512 KiB), the
# small ones then fill the agent's outbox (256 frames) while the sender waits.
SLOW_RCVBUF = 16 * 1024
BIG_PUSHES = 24
SMALL_PUSHES = 300

#: Each scenario, and the close code the table says it leads to.
SCENARIOS: dict[str, int] = {
    "no token": 4001,
    "two different tokens": 4001,
    "a newer connection of the client": 4002,
    "a hello for another client than the token's": 4003,
    "an expired token": 4004,
    "no hello within 10 s": 4008,
    "a flood of views": 4008,
    "a ping as first frame": 4009,
    "a frame of protocol_version 2 after the welcome": 4009,
    "a continuation frame with nothing to continue": 1002,
    "a text frame that is not UTF-8": 1007,
    "a frame over 4 MiB": 1009,
    "an agent that stops reading while pushes pile up": 1013,
    "a hello to a node that does not own the client": 4010,
    "a failure in the node's store": 1011,
    "the node shuts down, no other node up": 1001,
}


def table_codes() -> set[int]:
    """The codes of the close-code table in docs/push-protocol.md."""
    section = SPEC.read_text(encoding="utf-8").split("## Close codes", 1)[1]
    return {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, flags=re.MULTILINE)}


def test_every_code_in_the_table_has_a_scenario_and_every_scenario_a_code_in_it() -> None:
    codes = table_codes()
    assert codes, "no close-code table in docs/push-protocol.md"
    assert set(SCENARIOS.values()) == codes, (
        f"codes without a scenario: {sorted(codes - set(SCENARIOS.values()))}; "
        f"scenarios with a code not in the table: {sorted(set(SCENARIOS.values()) - codes)}"
    )


@dataclass
class Closed:
    """How a connection ended, as the agent saw it."""

    code: int | None
    reason: str
    before: list[NodeMessage] = field(default_factory=list)

    def errors(self) -> list[int]:
        return [m.code for m in self.before if isinstance(m, Error)]


@dataclass
class Node:
    node_id: str
    url: str

    def token(self, client: str, ttl: float = 600.0, issued: float | None = None) -> str:
        return tokens.issue(SECRET, client, ttl, time.time() if issued is None else issued)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body


async def until_closed(ws: aiohttp.ClientWebSocketResponse, wait_s: float = ANSWER_S) -> Closed:
    """Read what the node sends until it closes; None as the code if it never does."""
    before: list[NodeMessage] = []
    async with asyncio.timeout(wait_s):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                before.append(decode_from_node(msg.data))
                continue
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return Closed(int(msg.data), msg.extra or "", before)
            return Closed(None, f"{msg.type.name} without a close frame", before)


async def open_ws(
    session: aiohttp.ClientSession, node: Node, token: str | None, query: str = ""
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await session.ws_connect(f"{node.url}{WS_PATH}{query}", headers=headers)


def hello(client: str) -> str:
    return encode_message(Hello(client_id=client, agent="close-codes/1")).decode()


async def welcomed(
    session: aiohttp.ClientSession, node: Node, client: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await open_ws(session, node, node.token(client))
    await ws.send_str(hello(client))
    msg = await ws.receive(timeout=ANSWER_S)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    assert isinstance(decode_from_node(msg.data), Welcome), msg.data
    return ws


Scenario = Callable[[aiohttp.ClientSession, Node], Awaitable[Closed]]


async def no_token(session: aiohttp.ClientSession, node: Node) -> Closed:
    return await until_closed(await open_ws(session, node, None))


async def two_tokens(session: aiohttp.ClientSession, node: Node) -> Closed:
    other = node.token("cc-two", issued=time.time() - 5)
    return await until_closed(await open_ws(session, node, node.token("cc-two"), f"?token={other}"))


async def superseded(session: aiohttp.ClientSession, node: Node) -> Closed:
    first = await welcomed(session, node, "cc-twice")
    second = await welcomed(session, node, "cc-twice")
    closed = await until_closed(first)
    await second.close()
    return closed


async def other_client(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await open_ws(session, node, node.token("cc-mine"))
    await ws.send_str(hello("cc-someone-else"))
    return await until_closed(ws)


async def expired(session: aiohttp.ClientSession, node: Node) -> Closed:
    token = node.token("cc-late", ttl=60, issued=time.time() - 3600)
    return await until_closed(await open_ws(session, node, token))


async def silent(session: aiohttp.ClientSession, node: Node) -> Closed:
    return await until_closed(await open_ws(session, node, node.token("cc-silent")))


async def flood(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await welcomed(session, node, "cc-flood")
    for n in range(FLOOD_BURST * 3):
        view = View(content_id=f"flood-{n}", version=1, ts=time.time())
        await ws.send_str(encode_message(view).decode())
    return await until_closed(ws)


async def ping_first(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await open_ws(session, node, node.token("cc-ping"))
    await ws.send_str(json.dumps({"type": "ping", "protocol_version": 1, "ts": time.time()}))
    return await until_closed(ws)


async def other_version(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await welcomed(session, node, "cc-v2")
    await ws.send_str(json.dumps({"type": "ping", "protocol_version": 2, "ts": time.time()}))
    return await until_closed(ws)


async def broken_framing(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await open_ws(session, node, node.token("cc-framing"))
    await ws.send_frame(b"{}", aiohttp.WSMsgType.CONTINUATION)
    return await until_closed(ws)


async def not_utf8(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await welcomed(session, node, "cc-latin1")
    await ws.send_frame("caf\xe9".encode("latin-1"), aiohttp.WSMsgType.TEXT)
    return await until_closed(ws)


async def too_big(session: aiohttp.ClientSession, node: Node) -> Closed:
    ws = await welcomed(session, node, "cc-big")
    # The node closes as soon as it reads the frame's length, and may reset the connection
    # while the rest is still being sent; its close frame came first.
    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
        await ws.send_str("x" * (MAX_MESSAGE_BYTES + 1))
    return await until_closed(ws)


ONE_NODE: dict[str, Scenario] = {
    "no token": no_token,
    "two different tokens": two_tokens,
    "a newer connection of the client": superseded,
    "a hello for another client than the token's": other_client,
    "an expired token": expired,
    "no hello within 10 s": silent,
    "a flood of views": flood,
    "a ping as first frame": ping_first,
    "a frame of protocol_version 2 after the welcome": other_version,
    "a continuation frame with nothing to continue": broken_framing,
    "a text frame that is not UTF-8": not_utf8,
    "a frame over 4 MiB": too_big,
}


async def one_node(node: Node) -> dict[str, Closed]:
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(run(session, node) for run in ONE_NODE.values()))
    return dict(zip(ONE_NODE, results, strict=True))


def small_receive_buffer(addr: AddrInfoType) -> socket.socket:
    """A client socket that holds little: a node pushing to it blocks soon."""
    family, type_, proto, _, _ = addr
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    return sock


def items(prefix: str, count: int, big: bool) -> list[str]:
    """Content ids the origin serves at its largest size (big) or below 20 KB."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        content_id = f"{prefix}-{n}"
        size = spec_of(content_id).size
        if (size >= MAX_SIZE // 2) if big else (size < 20_000):
            found.append(content_id)
        n += 1
    return found


def publish_commands(settings: Settings, client: str, content_ids: list[str]) -> None:
    """Prefetch commands for ``client`` on slot 0 (node-0's partition), as the worker sends."""
    now = time.time()
    commands = [
        PrefetchCommand(
            command_id=f"cc-{client}-{n}",
            client_id=client,
            content_id=content_id,
            probability=0.9,
            rank=1,
            model="close-codes",
            issued_at=now,
            expires_at=now + 600,
        )
        for n, content_id in enumerate(content_ids)
    ]
    records: list[tuple[bytes | None, bytes | None]] = [
        (client.encode(), encode(c)) for c in commands
    ]
    produce_all(settings, settings.topic_prefetch_commands, records, partition=0)


async def wait_for(condition: Callable[[], bool], wait_s: float, what: str) -> None:
    deadline = time.monotonic() + wait_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"{what}: not in {wait_s} s"
        await asyncio.sleep(0.2)


async def slow_agent(node: Node, settings: Settings) -> Closed:
    """An agent that stops reading while pushes for it pile up at its node."""
    client = "cc-slow"
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await welcomed(session, node, client)
        # From here on nothing reads the socket: aiohttp stops reading it once 512 KiB wait.
        content = items("cc-big", BIG_PUSHES, True) + items("cc-small", SMALL_PUSHES, False)
        await asyncio.to_thread(publish_commands, settings, client, content)
        # The node gives up on the agent (its session leaves the count) before we read again;
        # reading earlier would drain the buffers and let the node's sender go on.
        await wait_for(lambda: node.health()["agents"] == 0, ANSWER_S, "the slow agent closed")
        return await until_closed(ws)


def owned_by(ring: HashRing, node_id: str, prefix: str) -> str:
    return next(c for n in range(10_000) if ring.owner(c := f"{prefix}-{n}").node_id == node_id)


async def moved(first: Node, second: Node) -> Closed:
    """A hello at node-0 for a client node-1 owns."""
    ring = HashRing([Member(first.node_id, url=first.url), Member(second.node_id, url=second.url)])
    client = owned_by(ring, second.node_id, "cc-moved")
    await wait_for(
        lambda: set(first.health()["ring"]) == {first.node_id, second.node_id},
        RING_S,
        "node-1 in node-0's ring",
    )
    async with aiohttp.ClientSession() as session:
        ws = await open_ws(session, first, first.token(client))
        await ws.send_str(hello(client))
        return await until_closed(ws)


def break_the_store(settings: Settings, client: str) -> None:
    """A push kept for ``client`` whose content the node can no longer read: its store lost
    the table of content versions while it ran."""
    cluster, session = connect(settings)
    try:
        ks = settings.cassandra_keyspace  # a keyspace name cannot be a bound value
        session.execute(
            f"INSERT INTO {ks}.pending_pushes (client_id, content_id, version, queued_at) "
            "VALUES (%s, %s, %s, toTimestamp(now()))",
            (client, "cc-lost", 1),
        )
        session.execute(f"DROP TABLE {ks}.content_versions")
    finally:
        cluster.shutdown()


async def last_scenarios(node: Node, settings: Settings, stop: Callable[[], None]) -> list[Closed]:
    """A store failure (1011), then the node's shutdown with an agent connected (1001)."""
    await wait_for(lambda: node.health()["ring"] == [node.node_id], RING_S, "node-1 gone")
    async with aiohttp.ClientSession() as session:
        keeper = await welcomed(session, node, "cc-keeper")
        await asyncio.to_thread(break_the_store, settings, "cc-broken")
        ws = await open_ws(session, node, node.token("cc-broken"))
        await ws.send_str(hello("cc-broken"))
        failed = await until_closed(ws)
        await asyncio.to_thread(stop)
        return [failed, await until_closed(keeper, SHUTDOWN_S)]


def bounded(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, SHUTDOWN_S + ANSWER_S))


def test_a_live_node_closes_with_each_code_of_the_table(settings: Settings, tmp_path: Path) -> None:
    mine = delivery_settings(settings, tmp_path, SECRET).model_copy(
        update={"agent_frame_burst": FLOOD_BURST, "agent_frames_per_s": FLOOD_RATE}
    )
    migrate(mine)
    env = settings_env(mine)
    nodes = [Node(f"node-{n}", f"http://127.0.0.1:{free_port()}") for n in range(2)]

    def command(n: int) -> list[str]:
        return ["cache-node", "--node-id", str(n), "--port", nodes[n].url.rsplit(":", 1)[1]]

    origin = {"origin": ["origin"]}
    origin_health = {"origin": f"http://127.0.0.1:{mine.origin_port}/healthz"}
    seen: dict[str, Closed] = {}
    with foresight_processes(
        env,
        origin | {"node-0": command(0)},
        origin_health | {"node-0": f"{nodes[0].url}/healthz"},
        tmp_path,
    ) as processes:
        seen |= bounded(one_node(nodes[0]))
        seen["an agent that stops reading while pushes pile up"] = bounded(
            slow_agent(nodes[0], mine)
        )
        with foresight_processes(
            env, {"node-1": command(1)}, {"node-1": f"{nodes[1].url}/healthz"}, tmp_path
        ):
            closed = bounded(moved(nodes[0], nodes[1]))
            seen["a hello to a node that does not own the client"] = closed

        def stop_node_0() -> None:  # SIGTERM, as a supervisor stops it
            processes["node-0"].terminate()
            processes["node-0"].wait(SHUTDOWN_S)

        failed, shut = bounded(last_scenarios(nodes[0], mine, stop_node_0))
        seen["a failure in the node's store"] = failed
        seen["the node shuts down, no other node up"] = shut

    wrong = {
        name: (SCENARIOS[name], closed.code, closed.reason)
        for name, closed in seen.items()
        if closed.code != SCENARIOS[name] or not closed.reason
    }
    assert not wrong, f"scenario: (code in the table, code and reason the node sent): {wrong}"
    assert set(seen) == set(SCENARIOS)
    # What the table says comes before some of the closes.
    for name in ("a ping as first frame", "a frame of protocol_version 2 after the welcome"):
        assert seen[name].errors() == [4009], (name, seen[name].before)
    assert seen["a flood of views"].errors() == [4008], seen["a flood of views"].before
    redirect = seen["a hello to a node that does not own the client"].before
    assert redirect == [
        Redirect(
            url=ws_url(nodes[1].url),
            node_id=nodes[1].node_id,
            reason="another node owns this client",
        )
    ]
