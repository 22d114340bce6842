"""The collector over HTTP, with Kafka stood in for: what its /metrics says about each batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError, Message
from prometheus_client.parser import text_string_to_metric_families

from foresight.settings import Settings
from producers.collector import create_app
from producers.publisher import DeliveryCallback
from schemas import Interaction

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}


class HeldPublisher:
    """Stands in for Kafka: keeps each record's delivery callback until the test answers."""

    topic = "interactions"
    dead_letter_topic = "interactions-dlq"

    def __init__(self) -> None:
        self.waiting: list[DeliveryCallback] = []
        self.handed = asyncio.Event()

    def publish(self, event: Interaction, on_delivery: DeliveryCallback | None = None) -> None:
        self._hold(on_delivery)

    def reject(self, raw: Any, reason: str, on_delivery: DeliveryCallback | None = None) -> None:
        self._hold(on_delivery)

    def _hold(self, on_delivery: DeliveryCallback | None) -> None:
        assert on_delivery is not None, "the collector asks for every record's ack"
        self.waiting.append(on_delivery)
        self.handed.set()

    def answer(self, error: KafkaError | None = None) -> None:
        """Kafka's answer to every record waiting: acked, or refused with ``error``."""
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback(error, cast(Message, None))


def event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "client_id": "c1",
        "content_id": f"item-{n}",
        "kind": "click",
        "ts": time.time(),
    }


@pytest.fixture
def publisher() -> HeldPublisher:
    return HeldPublisher()


@pytest.fixture
async def client(publisher: HeldPublisher) -> AsyncIterator[Client]:
    settings = Settings(collector_max_body_bytes=1024)
    client = TestClient(TestServer(create_app(settings, publisher)))
    await client.start_server()
    yield client
    await client.close()


async def metrics_of(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every foresight_collector_* sample, by name and labels."""
    response = await client.get("/metrics")
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name.startswith("foresight_collector_"):
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_a_batch_is_counted_in_out_dead_lettered_and_queued_until_acked(
    client: Client, publisher: HeldPublisher
) -> None:
    batch = [event(1), event(2), {"event_id": "broken"}]
    posting = asyncio.create_task(client.post("/v1/events", json=batch))
    await publisher.handed.wait()
    assert len(publisher.waiting) == 3  # the handler hands a whole batch over at once
    during = await metrics_of(client)
    assert during["foresight_collector_unacked_records", ()] == 3
    assert during["foresight_collector_events_total", (("outcome", "valid"),)] == 2
    assert during["foresight_collector_events_total", (("outcome", "invalid"),)] == 1
    assert during["foresight_collector_dead_letters_total", (("topic", "interactions"),)] == 1
    assert ("foresight_collector_requests_total", (("status", "400"),)) not in during

    publisher.answer()
    response = await posting
    assert response.status == 400
    assert (await response.json())["accepted"] == 2
    after = await metrics_of(client)
    assert after["foresight_collector_unacked_records", ()] == 0
    assert after["foresight_collector_delivered_total", (("topic", "interactions"),)] == 2
    assert after["foresight_collector_delivered_total", (("topic", "interactions-dlq"),)] == 1
    assert after["foresight_collector_requests_total", (("status", "400"),)] == 1
    assert after["foresight_collector_batch_ack_seconds_count", ()] == 1


async def test_records_kafka_refuses_are_counted_as_failures(
    client: Client, publisher: HeldPublisher
) -> None:
    posting = asyncio.create_task(client.post("/v1/events", json=[event(1)]))
    await publisher.handed.wait()
    publisher.answer(KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"))
    assert (await posting).status == 503
    after = await metrics_of(client)
    assert after["foresight_collector_delivery_failures_total", (("topic", "interactions"),)] == 1
    assert after["foresight_collector_unacked_records", ()] == 0
    assert after["foresight_collector_requests_total", (("status", "503"),)] == 1


async def test_requests_refused_whole_are_counted_by_status(client: Client) -> None:
    assert (await client.post("/v1/events", data=b"[" + b" " * 2048 + b"]")).status == 413
    assert (await client.post("/v1/events", data=b"[1, 2", headers=JSON)).status == 400
    after = await metrics_of(client)
    assert after["foresight_collector_requests_total", (("status", "413"),)] == 1
    assert after["foresight_collector_requests_total", (("status", "400"),)] == 1
    assert not any(name == "foresight_collector_events_total" for name, _ in after)


def client_event(n: int, client_id: str) -> dict[str, Any]:
    return {**event(n), "client_id": client_id}


async def limited(publisher: HeldPublisher, per_client: str, per_ip: str) -> Client:
    settings = Settings(collector_limit_per_client=per_client, collector_limit_per_ip=per_ip)
    client = TestClient(TestServer(create_app(settings, publisher)))
    await client.start_server()
    return client


async def post_acked(client: Client, publisher: HeldPublisher, batch: list[Any]) -> int:
    """POST a batch, let Kafka ack whatever was handed over, return the status."""
    posting = asyncio.create_task(client.post("/v1/events", json=batch))
    while not posting.done():
        publisher.answer()
        await asyncio.sleep(0.01)
    response = await posting
    return response.status


async def test_a_client_over_its_rate_gets_429_and_nothing_of_its_batch_is_published(
    publisher: HeldPublisher,
) -> None:
    client = await limited(publisher, per_client="5/minute", per_ip="1000/minute")
    try:
        assert await post_acked(client, publisher, [client_event(n, "c1") for n in range(4)]) == 202
        handed = len(publisher.waiting)
        # One more from c1 would be fine, two are over: the whole batch waits, c2's event too.
        refused = await client.post(
            "/v1/events",
            json=[client_event(5, "c1"), client_event(6, "c1"), client_event(7, "c2")],
        )
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert "per client" in (await refused.json())["error"]
        assert len(publisher.waiting) == handed == 0  # nothing handed over to Kafka
        # Another client is not held back by c1.
        assert await post_acked(client, publisher, [client_event(8, "c2")]) == 202
        after = await metrics_of(client)
        assert after["foresight_collector_rate_limited_total", (("by", "client"),)] == 1
        assert after["foresight_collector_requests_total", (("status", "429"),)] == 1
        assert after["foresight_collector_events_total", (("outcome", "valid"),)] == 5
    finally:
        await client.close()


async def test_an_ip_over_its_rate_gets_429_whatever_the_clients(
    publisher: HeldPublisher,
) -> None:
    client = await limited(publisher, per_client="1000/minute", per_ip="10/minute")
    try:
        batch = [client_event(n, f"c{n}") for n in range(8)]
        assert await post_acked(client, publisher, batch) == 202
        refused = await client.post("/v1/events", json=[client_event(n, f"d{n}") for n in range(3)])
        assert refused.status == 429
        assert "per ip" in (await refused.json())["error"]
        after = await metrics_of(client)
        assert after["foresight_collector_rate_limited_total", (("by", "ip"),)] == 1
    finally:
        await client.close()


def test_a_rate_that_does_not_parse_is_refused_and_empty_means_no_limit() -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        Settings(collector_limit_per_ip="lots")
    assert Settings(collector_limit_per_client="").collector_limit_per_client is None
