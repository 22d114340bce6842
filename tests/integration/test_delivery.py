"""End to end on real Kafka and Cassandra: origin, worker and cache node as real processes.

An interaction published for a client leads to a push of a predicted item to its connected
agent; a version bump reaches the agent holding the item and no other; forged or foreign
tokens and ids outside the origin are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.sdk import Agent
from foresight import tokens
from foresight.migrate import migrate
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from foresight.stack import free_port
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction
from schemas.protocol import (
    CloseCode,
    Hello,
    Push,
    Update,
    Welcome,
    decode_from_node,
    encode_message,
)

from .conftest import settings_env
from .processes import delivery_settings, foresight_processes

SECRET = "integration-secret-0123456789abcdef-0123456789"
# From a published interaction to a push: the worker and the node each poll Kafka.
PUSH_TIMEOUT_S = 30.0
# A whole scenario; past it the scenario is cancelled, and the failure shows the await it was
# stuck in (pytest-timeout's dump shows only the event loop's select).
SCENARIO_TIMEOUT_S = 150.0


@dataclass
class Delivery:
    settings: Settings
    processes: dict[str, subprocess.Popen[bytes]]
    node_urls: list[str]
    origin_url: str
    worker_port: int

    @property
    def node_url(self) -> str:
        return self.node_urls[0]

    def owner(self, client_id: str) -> str:
        """The base URL of the node that owns a client, as every process computes it."""
        ring = HashRing(
            Member(f"node-{n}", url=url, slot=n) for n, url in enumerate(self.node_urls)
        )
        return ring.owner(client_id).url

    def token(self, client_id: str, secret: str = SECRET, ttl: float = 600.0) -> str:
        return tokens.issue(secret, client_id, ttl, time.time())


@pytest.fixture
def delivery(settings: Settings, tmp_path: Path) -> Iterator[Delivery]:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    origin_port, node_port = mine.origin_port, mine.cache_node_base_port
    worker_port = mine.worker_web_port
    migrate(mine)
    env = settings_env(mine)
    node_ports = [node_port, free_port()]  # each bound on its own: base + 1 may be taken
    node_urls = [f"http://127.0.0.1:{port}" for port in node_ports]
    commands = {
        "origin": ["origin"],
        "node-0": ["cache-node", "--node-id", "0", "--port", str(node_ports[0])],
        "node-1": ["cache-node", "--node-id", "1", "--port", str(node_ports[1])],
        "worker": ["worker", "-l", "info"],
    }
    health = {
        "origin": f"http://127.0.0.1:{origin_port}/healthz",
        "node-0": f"{node_urls[0]}/healthz",
        "node-1": f"{node_urls[1]}/healthz",
        "worker": f"http://127.0.0.1:{worker_port}/healthz",
    }
    with foresight_processes(env, commands, health, tmp_path) as processes:
        yield Delivery(mine, processes, node_urls, f"http://127.0.0.1:{origin_port}", worker_port)


def _warm(settings: Settings, data: Path, count: int = 3000) -> list[Interaction]:
    events = sorted(read_yoochoose(data / "train_valid.tsv"), key=lambda e: e.ts)[:count]
    with InteractionPublisher(settings) as publisher:
        publisher.publish_batch(events)
    return events


def _warm_worker(d: Delivery, data: Path) -> list[str]:
    """Teach the worker real sessions; return the items, most clicked first, whose successors
    the model then knows (a click on one leads to confident predictions)."""
    warm = _warm(d.settings, data)
    deadline = time.monotonic() + 120  # 3000 events on a loaded two-core machine
    while _processed(d.worker_port) < len(warm) and time.monotonic() < deadline:
        time.sleep(0.5)
    items = [e.content_id for e in warm]
    return sorted(sorted(set(items)), key=items.count, reverse=True)


def _processed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('foresight_worker_events_total{outcome="ok"'):
                return float(line.split()[-1])
    return 0.0


async def _connect(
    session: aiohttp.ClientSession, d: Delivery, client: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        f"{d.owner(client)}/v1/agents/ws", headers={"Authorization": f"Bearer {token}"}
    )
    await ws.send_str(encode_message(Hello(client_id=client, agent="test/1")).decode())
    return ws


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: type, wait_s: float) -> object:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        frame = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket ended: {frame.type} {frame.data} {frame.extra}")
        message = decode_from_node(frame.data)
        if isinstance(message, kind):
            return message
    raise AssertionError(f"no {kind.__name__} in {wait_s} s")


async def _bounded(scenario: Coroutine[Any, Any, None]) -> None:
    await asyncio.wait_for(scenario, SCENARIO_TIMEOUT_S)


def _read(request: str | urllib.request.Request) -> bytes:
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body


def test_a_click_leads_to_a_push_and_a_bump_reaches_only_the_holder(
    delivery: Delivery, yoochoose_dir: Path
) -> None:
    d = delivery
    popular, *others = _warm_worker(d, yoochoose_dir)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            holder = await _connect(session, d, "agent-1", d.token("agent-1"))
            other = await _connect(session, d, "agent-2", d.token("agent-2"))
            assert isinstance(await _next(holder, Welcome, 10), Welcome)
            assert isinstance(await _next(other, Welcome, 10), Welcome)
            _click(d, "e2e-1", "agent-1", popular)
            push = await _next(holder, Push, PUSH_TIMEOUT_S)
            assert isinstance(push, Push)
            assert hashlib.sha256(push.body).hexdigest() == push.digest
            view = await asyncio.to_thread(
                _read, f"http://127.0.0.1:{d.worker_port}/clients/agent-1"
            )
            predicted = [item for item, _ in json.loads(view)["predictions"]]
            assert push.content_id in predicted
            # The origin bumps the pushed item: only its holder gets the new version.
            request = urllib.request.Request(
                f"{d.origin_url}/admin/content/{push.content_id}/bump", method="POST"
            )
            await asyncio.to_thread(_read, request)
            update = await _next(holder, Update, PUSH_TIMEOUT_S)
            assert isinstance(update, Update)
            assert update.content_id == push.content_id and update.version > push.version
            assert update.previous_version == push.version
            with pytest.raises((AssertionError, TimeoutError)):
                await _next(other, Update, 3)
            await holder.close()  # a goodbye: agent-1 departed
            await other.close()
            # A click after the goodbye: its prefetches are dropped, nothing is fetched or
            # kept for a next connect.
            owner = d.owner("agent-1")
            before = _commands(owner)
            # Another item than the first click's: its successors were not commanded yet.
            _click(d, "e2e-2", "agent-1", others[0])
            await _until(lambda: _commands(owner)["departed"] > before["departed"], 30)
            after = _commands(owner)
            assert after["departed"] > before["departed"]
            assert after["pending"] == before["pending"]
            assert after["pushed"] == before["pushed"]

    asyncio.run(_bounded(scenario()))


def _click(d: Delivery, event_id: str, client_id: str, content_id: str) -> None:
    with InteractionPublisher(d.settings) as publisher:
        publisher.publish(
            Interaction(
                event_id=event_id,
                client_id=client_id,
                content_id=content_id,
                kind="click",
                ts=time.time(),
            )
        )


def _commands(node_url: str) -> dict[str, float]:
    """The node's prefetch commands by outcome, from its /metrics."""
    counts = {"departed": 0.0, "pending": 0.0, "pushed": 0.0}
    with urllib.request.urlopen(f"{node_url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("foresight_node_commands_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                counts[outcome] = float(line.split()[-1])
    return counts


def test_forged_and_foreign_tokens_and_escaping_ids_are_refused(delivery: Delivery) -> None:
    d = delivery

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            forged = d.token("agent-3", secret="another-secret-0123456789abcdef-xyz")
            ws = await _connect(session, d, "agent-3", forged)
            await ws.receive(timeout=10)
            assert ws.close_code == CloseCode.UNAUTHORIZED
            foreign = await _connect(session, d, "agent-3", d.token("agent-4"))
            await foreign.receive(timeout=10)
            assert foreign.close_code == CloseCode.FORBIDDEN
            expired = tokens.issue(SECRET, "agent-3", 1.0, time.time() - 3600)
            late = await _connect(session, d, "agent-3", expired)
            await late.receive(timeout=10)
            assert late.close_code == CloseCode.TOKEN_EXPIRED
            good = {"Authorization": f"Bearer {d.token('agent-3')}"}
            node = d.owner("agent-3")
            async with session.get(f"{node}/v1/content/214536502") as missing:
                assert missing.status == 401
            async with session.get(
                f"{node}/v1/content/214536502", headers={"Authorization": f"Bearer {forged}"}
            ) as bad:
                assert bad.status == 401
            async with session.get(f"{node}/v1/content/214536502", headers=good) as ok:
                assert ok.status == 200
                assert hashlib.sha256(await ok.read()).hexdigest() == ok.headers["X-Content-Digest"]
            for escape in (
                "a/../../etc/passwd",
                "a%2F..%2F..%2Fetc",
                "..%2Fsecret",
                "http:%2F%2Fevil.example%2Fx",
            ):
                async with session.get(f"{node}/v1/content/{escape}", headers=good) as refused:
                    assert refused.status in (400, 404), escape

    asyncio.run(_bounded(scenario()))


async def _until(condition: Callable[[], bool], wait_s: float) -> None:
    """Poll a condition of the agent's state, which no event signals, for up to wait_s."""
    deadline = time.monotonic() + wait_s
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_an_agent_is_served_from_its_cache_and_keeps_it_when_its_node_stops(
    delivery: Delivery, yoochoose_dir: Path, stop: str
) -> None:
    """SIGTERM: the node leaves the ring and redirects its agents at once. kill -9: nothing
    is said; the agent's socket dies, and the other node takes the client once the dead
    node's heartbeats stop (FORESIGHT_RING_HEARTBEAT_TIMEOUT_S)."""
    d = delivery
    popular = _warm_worker(d, yoochoose_dir)[0]
    client = "sdk-1"
    owner = d.owner(client)
    other = next(url for url in d.node_urls if url != owner)

    async def scenario() -> None:
        # Connect through the node that does not own the client: it redirects.
        async with Agent(client, d.token(client), other) as agent:
            assert agent.owner_url == owner
            with InteractionPublisher(d.settings) as publisher:
                publisher.publish(
                    Interaction(
                        event_id="sdk-e1",
                        client_id=client,
                        content_id=popular,
                        kind="click",
                        ts=time.time(),
                    )
                )
            await _until(lambda: bool(agent.cache.holdings()), PUSH_TIMEOUT_S)
            held = agent.cache.holdings()
            assert held, "a predicted item should have been pushed"
            item = held[0].content_id
            first = await agent.get(item)
            assert first.from_cache and first.version == held[0].version
            # The owner stops: the agent moves to the other node and keeps what it holds.
            name = "node-0" if owner == d.node_urls[0] else "node-1"
            getattr(d.processes[name], stop)()
            await asyncio.to_thread(d.processes[name].wait, 60)
            moved_within = PUSH_TIMEOUT_S + d.settings.ring_heartbeat_timeout_s
            await _until(lambda: agent.owner_url == other and agent.connected, moved_within)
            assert agent.owner_url == other
            again = await agent.get(item)
            assert again.from_cache and again.body == first.body
            # What it does not hold now comes from the new owner.
            fetched = await agent.get(f"not-pushed-{stop}")
            assert not fetched.from_cache and fetched.body
            assert agent.stats.duplicate_pushes == 0

    asyncio.run(_bounded(scenario()))
