"""The supervisor of a cache node's background tasks: a task that ends while the node runs is
never silent. It is named by /healthz (503) and in an ERROR line with its traceback, and the
node stops after the grace; a task ending because the node stops is no failure. In process,
without Kafka or Cassandra: the node's producer and ring are fakes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError

import consumers.outbox
from consumers.ownership import NodeConfig
from consumers.process import COMMANDS_TASK, NODE, RING_READER_TASK, NodeProcess
from consumers.supervisor import Supervisor
from consumers.web import healthz
from foresight.ring import HashRing
from foresight.settings import Settings

#: Far longer than anything here takes; a test waiting this long has failed.
ANSWER_S = 5.0


class Calls:
    """``on_failure``: counts its calls and lets a test wait for the first."""

    def __init__(self) -> None:
        self.count = 0
        self.called = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.called.set()


async def broken() -> None:
    raise RuntimeError("poll exploded")


async def finished() -> None:
    return None


async def until_stopped(stop: asyncio.Event, error: Exception | None = None) -> None:
    await stop.wait()
    if error is not None:
        raise error


async def test_a_task_that_raises_is_a_failure_logged_with_its_traceback_then_the_node_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_failure = Calls()
    supervisor = Supervisor(on_failure, grace_s=0.0)
    with caplog.at_level(logging.ERROR, logger="consumers.supervisor"):
        task = supervisor.watch("prefetch-commands consumer", broken())
        await asyncio.gather(task, return_exceptions=True)
    assert supervisor.failures == {"prefetch-commands consumer": "RuntimeError: poll exploded"}
    assert not supervisor.healthy
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "prefetch-commands consumer" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    await asyncio.wait_for(on_failure.called.wait(), ANSWER_S)
    await supervisor.stop(lambda: None)
    assert on_failure.count == 1


async def test_a_task_that_returns_while_the_node_runs_is_a_failure() -> None:
    supervisor = Supervisor()
    await supervisor.watch("ring heartbeat", finished())
    assert supervisor.failures == {"ring heartbeat": "returned"}


async def test_a_task_cancelled_from_elsewhere_while_the_node_runs_is_a_failure() -> None:
    supervisor = Supervisor()
    task = supervisor.watch("content-updates consumer", until_stopped(asyncio.Event()))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert supervisor.failures == {"content-updates consumer": "cancelled"}


async def test_tasks_that_end_because_the_node_stops_are_no_failure() -> None:
    on_failure = Calls()
    supervisor = Supervisor(on_failure, grace_s=0.0)
    stop = asyncio.Event()
    supervisor.watch("quiet", until_stopped(stop))
    supervisor.watch("noisy at its end", until_stopped(stop, RuntimeError("closing failed")))
    await asyncio.wait_for(supervisor.stop(stop.set), ANSWER_S)
    assert supervisor.failures == {} and supervisor.healthy
    assert on_failure.count == 0


async def test_a_node_stopped_during_the_grace_does_not_stop_twice() -> None:
    on_failure = Calls()
    supervisor = Supervisor(on_failure, grace_s=0.0)
    supervisor.fail("ring heartbeat", "returned")
    supervisor.stopping()  # a SIGTERM came first: the node is leaving, the pending stop dropped
    for _ in range(3):
        await asyncio.sleep(0)  # a loop turn or three: the grace (0 s) is over
    assert on_failure.count == 0


async def test_every_failure_is_named_and_the_node_stops_once() -> None:
    on_failure = Calls()
    supervisor = Supervisor(on_failure, grace_s=0.0)
    supervisor.fail("prefetch-commands consumer", "KafkaException: fatal")
    supervisor.fail("content-updates consumer", "returned")
    supervisor.fail("prefetch-commands consumer", "again")  # the first reason stays
    await asyncio.wait_for(on_failure.called.wait(), ANSWER_S)
    assert supervisor.failures == {
        "prefetch-commands consumer": "KafkaException: fatal",
        "content-updates consumer": "returned",
    }
    assert on_failure.count == 1


# --- The node's /healthz ------------------------------------------------------------------------


class FakeProducer:
    """The node's Kafka producer: keeps its config (librdkafka's callbacks), takes nothing."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def produce(self, topic: str, **kw: Any) -> None:
        pass

    def poll(self, _timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeRing:
    """A ring-membership reader with no member, whose thread runs until ``running`` is False."""

    def __init__(self) -> None:
        self.running = True

    def ring(self) -> HashRing:
        return HashRing([])


Client = TestClient[web.Request, web.Application]


@dataclass
class Node:
    process: NodeProcess
    ring: FakeRing
    client: Client

    async def health(self) -> tuple[int, dict[str, Any]]:
        response = await self.client.get("/healthz")
        body: dict[str, Any] = await response.json()
        return response.status, body


@pytest.fixture
async def node(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    """A node-0 serving /healthz, alone on its ring, its producer and ring reader fakes."""
    monkeypatch.setattr(consumers.outbox, "Producer", FakeProducer)
    process = NodeProcess(Settings(), NodeConfig("node-0", 0, "127.0.0.1", 0))
    process.outbox.loop = asyncio.get_running_loop()
    ring = FakeRing()
    monkeypatch.setattr(process, "ring", ring)
    monkeypatch.setattr(process.ownership, "watcher", ring)
    app = web.Application()
    app[NODE] = process
    app.router.add_get("/healthz", healthz)
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield Node(process, ring, client)
    await client.close()


async def test_healthz_answers_200_then_503_naming_the_dead_command_consumer(node: Node) -> None:
    status, body = await node.health()
    assert (status, body["node_id"], body["failed"]) == (200, "node-0", {})
    task = node.process.supervisor.watch(COMMANDS_TASK, broken())
    await asyncio.gather(task, return_exceptions=True)
    status, body = await node.health()
    assert status == 503
    assert body["failed"] == {COMMANDS_TASK: "RuntimeError: poll exploded"}


async def test_a_dead_ring_membership_reader_makes_the_node_unhealthy(node: Node) -> None:
    node.ring.running = False  # its thread ended (it logs why itself)
    task = node.process.supervisor.watch(RING_READER_TASK, node.process.watch_ring_reader())
    await asyncio.gather(task, return_exceptions=True)
    status, body = await node.health()
    assert status == 503 and RING_READER_TASK in body["failed"], body


async def test_a_fatal_kafka_producer_error_makes_the_node_unhealthy(node: Node) -> None:
    producer = node.process.outbox.producer
    assert isinstance(producer, FakeProducer)
    report_error = producer.config["error_cb"]  # as librdkafka calls it, from its thread
    report_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "brokers away"))  # waits, not fatal
    status, _ = await node.health()
    assert status == 200
    report_error(KafkaError(KafkaError._FATAL, "idempotence broken", fatal=True))
    await asyncio.sleep(0)  # one loop turn: the report is handed to the loop
    status, body = await node.health()
    assert status == 503
    assert list(body["failed"]) == ["kafka producer"], body
