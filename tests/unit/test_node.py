"""The cache node's command path over in-memory fakes of its store and origin fetcher: the push
rule weighs a command's probability against the item's size once the node knows it, and
prefetch work waits while a person's request is being answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import cast

import pytest
from cassandra.cluster import NoHostAvailable

import consumers.gate
from consumers.fetcher import Fetched, Fetcher
from consumers.gate import RequestGate
from consumers.node import CacheNode
from consumers.sessions import AgentSession, SessionRegistry
from consumers.store import ContentStore, StoredVersion
from foresight.settings import Settings
from schemas import PrefetchCommand

CLIENT = "client-1"
SIZES = {"small": 10_000, "big": 200_000}
K = 100_000.0  # p = 0.2 pays for up to 25 kB: the small item, not the big one


class MemoryStore:
    """The parts of ContentStore the command path uses, in memory."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], StoredVersion] = {}
        self.holdings: dict[str, dict[str, int]] = {}
        self.pending: dict[str, dict[str, int]] = {}
        self.holding_writes: list[int] = []  # pairs per record_holdings request

    async def latest(self, content_id: str) -> StoredVersion | None:
        return None

    async def put_version(self, item: StoredVersion) -> None:
        self.versions[(item.content_id, item.version)] = item

    async def record_holding(self, client_id: str, item: StoredVersion) -> None:
        self.holdings.setdefault(client_id, {})[item.content_id] = item.version

    async def record_holdings(self, held: list[tuple[str, StoredVersion]]) -> None:
        self.holding_writes.append(len(held))
        for client_id, item in held:
            await self.record_holding(client_id, item)

    async def queue_pending(self, client_id: str, content_id: str, version: int) -> None:
        self.pending.setdefault(client_id, {})[content_id] = version


class Origin:
    """Serves ``SIZES`` bytes of each item and counts the fetches."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def fetch(
        self, content_id: str, *, etag: str | None = None, prefetch: bool = True
    ) -> Fetched:
        self.fetched.append(content_id)
        body = b"x" * SIZES[content_id]
        return Fetched(content_id, 200, body, '"v1"', "text/plain", 1)


def command(content_id: str, probability: float) -> PrefetchCommand:
    return PrefetchCommand(
        command_id=f"cmd-{content_id}",
        client_id=CLIENT,
        content_id=content_id,
        probability=probability,
        rank=1,
        model="test",
        issued_at=100.0,
        expires_at=700.0,
    )


def node(store: MemoryStore, origin: Origin, push_bytes_per_odds: float | None) -> CacheNode:
    return CacheNode(
        "node-0",
        cast(ContentStore, store),
        cast(Fetcher, origin),
        SessionRegistry(),
        push_bytes_per_odds=push_bytes_per_odds,
    )


async def test_at_the_same_probability_a_small_item_is_pushed_and_a_big_one_is_not() -> None:
    store, origin = MemoryStore(), Origin()
    cache_node = node(store, origin, K)

    async def send(frame: bytes) -> None:
        pass

    async def close(code: int, reason: str) -> None:
        pass

    agent = AgentSession(CLIENT, send, close)
    await cache_node.sessions.add(agent)
    try:
        assert await cache_node.on_command(command("big", 0.2), now=200.0) == "not-worth-bytes"
        assert await cache_node.on_command(command("small", 0.2), now=200.0) == "pushed"
        await cache_node.drain()
    finally:
        await cache_node.sessions.remove(agent)
    assert agent.holdings == {"small": 1} and store.holdings == {CLIENT: {"small": 1}}
    assert (cache_node.counters.not_worth_bytes, cache_node.counters.pushes) == (1, 1)
    # Both were fetched (only then is the size known) and stored for whoever asks next.
    assert origin.fetched == ["big", "small"]
    assert set(store.versions) == {("big", 1), ("small", 1)}


async def test_a_likely_enough_big_item_is_pushed() -> None:
    cache_node = node(MemoryStore(), Origin(), K)
    # p / (1 - p) = 2.33 >= 200 kB / 100 kB: worth it; the agent is away, so it is kept for it.
    assert await cache_node.on_command(command("big", 0.7), now=200.0) == "pending"


async def test_an_unworthy_item_is_not_kept_for_an_absent_agent_either() -> None:
    store = MemoryStore()
    cache_node = node(store, Origin(), K)
    assert await cache_node.on_command(command("big", 0.2), now=200.0) == "not-worth-bytes"
    assert await cache_node.on_command(command("small", 0.2), now=200.0) == "pending"
    await cache_node.drain()  # the pending row is written in the background
    assert store.pending == {CLIENT: {"small": 1}}


async def test_without_k_every_commanded_item_goes_out() -> None:
    store = MemoryStore()
    cache_node = node(store, Origin(), None)
    assert await cache_node.on_command(command("big", 0.01), now=200.0) == "pending"
    assert cache_node.counters.not_worth_bytes == 0


def test_k_comes_from_the_settings_and_empty_means_no_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FORESIGHT_PUSH_BYTES_PER_ODDS", "250000")
    assert Settings().push_bytes_per_odds == 250_000.0
    for off in ("", "none", "None"):
        monkeypatch.setenv("FORESIGHT_PUSH_BYTES_PER_ODDS", off)
        assert Settings().push_bytes_per_odds is None
    # A child process given these settings has no rule too (unset would mean the default).
    for name, value in Settings(push_bytes_per_odds=None).as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings().push_bytes_per_odds is None


async def test_a_departed_client_gets_no_fetch_and_nothing_kept_until_it_returns() -> None:
    store, origin = MemoryStore(), Origin()
    cache_node = node(store, origin, None)
    cache_node.sessions.depart(CLIENT)
    assert await cache_node.on_command(command("small", 0.9), now=200.0) == "departed"
    await cache_node.drain()
    assert origin.fetched == [] and store.pending == {}
    assert cache_node.counters.departed == 1

    async def send(frame: bytes) -> None:
        pass

    async def close(code: int, reason: str) -> None:
        pass

    agent = AgentSession(CLIENT, send, close)
    await cache_node.sessions.add(agent)  # back again: prefetches flow once more
    try:
        assert not cache_node.sessions.departed(CLIENT)
        assert await cache_node.on_command(command("big", 0.9), now=200.0) == "pushed"
    finally:
        await cache_node.sessions.remove(agent)


async def test_a_burst_of_pushes_is_recorded_in_a_few_shared_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, origin = MemoryStore(), Origin()
    cache_node = node(store, origin, None)
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        pass

    agent = AgentSession(CLIENT, send, close)
    await cache_node.sessions.add(agent)
    try:
        for n in range(12):
            monkeypatch.setitem(SIZES, f"item-{n}", 100)
            assert await cache_node.on_command(command(f"item-{n}", 0.9), now=200.0) == "pushed"
        await cache_node.drain()
    finally:
        await cache_node.sessions.remove(agent)
    assert store.holdings == {CLIENT: {f"item-{n}": 1 for n in range(12)}}
    assert store.holding_writes == [5, 5, 2]


class DownStore(MemoryStore):
    """Cassandra not answering: every read fails as the driver fails."""

    async def latest(self, content_id: str) -> StoredVersion | None:
        raise NoHostAvailable("no host", {})


async def test_with_cassandra_down_a_request_is_still_served_from_the_origin() -> None:
    origin = Origin()
    cache_node = node(DownStore(), origin, None)
    item = await cache_node.ensure("small", prefetch=False)
    assert item.body == b"x" * SIZES["small"] and item.version == 1
    assert origin.fetched == ["small"]
    assert cache_node.counters.store_failures == 1


async def test_prefetch_work_waits_while_a_request_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = RequestGate()
    await asyncio.wait_for(gate.requests_first(), 1.0)  # nothing served: no wait
    with gate.serving_request():
        waiting = asyncio.create_task(gate.requests_first())
        await asyncio.sleep(0.02)
        assert not waiting.done(), "a command started while a request was being answered"
    await asyncio.wait_for(waiting, 1.0)  # the request done: the command goes on
    # A node answering requests without a pause still carries out its commands.
    monkeypatch.setattr(consumers.gate, "REQUESTS_FIRST_S", 0.01)
    with gate.serving_request():
        await asyncio.wait_for(gate.requests_first(), 1.0)


async def test_while_requests_come_prefetch_work_runs_in_fewer_lanes() -> None:
    gate = RequestGate()
    # No request lately: a command holds nothing besides its lane (all lanes are free to it).
    assert isinstance(gate.serving_lanes(), contextlib.nullcontext)
    with gate.serving_request():
        assert gate.serving_lanes() is gate._serving_lanes
    # Just after a request, still: the next person is likely on the way.
    lanes = gate.serving_lanes()
    assert lanes is gate._serving_lanes
    for _ in range(consumers.gate.PREFETCH_CONCURRENCY_SERVING):
        await lanes.__aenter__()
    assert gate._serving_lanes.locked(), "a third command would wait while requests come"
