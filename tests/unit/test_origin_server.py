"""The demo origin over HTTP: content with ETags and versions, 304s, 404s, bumps that publish
a ContentUpdate, the admin token, and metrics that tell prefetches from views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from foresight.settings import Settings
from origin import server
from origin.catalog import Kind, render, spec_of
from origin.server import (
    KafkaUpdatePublisher,
    OriginConfig,
    PublishFailed,
    UpdatePublisher,
    config_from,
    create_app,
    purpose_of,
)
from schemas import ContentUpdate, decode

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

TEST_CONFIG = OriginConfig(latency_s=0.0, missing=frozenset({"gone"}))


class RecordingPublisher:
    """Stands in for Kafka: keeps every update it is asked to publish."""

    def __init__(self) -> None:
        self.updates: list[ContentUpdate] = []

    async def publish(self, update: ContentUpdate) -> None:
        self.updates.append(update)


class RefusingPublisher:
    async def publish(self, update: ContentUpdate) -> None:
        raise PublishFailed("content-updates: Broker: Leader not available")


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[Client] = []

    async def make(
        config: OriginConfig = TEST_CONFIG, publisher: UpdatePublisher | None = None
    ) -> Client:
        client = TestClient(TestServer(create_app(config, publisher or RecordingPublisher())))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(make_client: MakeClient, publisher: RecordingPublisher) -> Client:
    return await make_client(TEST_CONFIG, publisher)


def id_of(kind: Kind) -> str:
    return next(str(n) for n in range(1000, 100_000) if spec_of(str(n)).kind == kind)


def requests_counted(metrics_text: str) -> dict[tuple[str, str], float]:
    """foresight_origin_requests_total by (kind, status)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "foresight_origin_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["kind"], sample.labels["status"]] = sample.value
    return counts


# --- GET /content ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "media_type"),
    [
        ("html", "text/html; charset=utf-8"),
        ("json", "application/json"),
        ("png", "image/png"),
        ("jpeg", "image/jpeg"),
    ],
)
async def test_content_comes_with_type_etag_version_and_no_cache(
    client: Client, kind: Kind, media_type: str
) -> None:
    content_id = id_of(kind)
    response = await client.get(f"/content/{content_id}")
    assert response.status == 200
    body = await response.read()
    expected = render(content_id, 1)
    assert body == expected.body and len(body) == spec_of(content_id).size
    assert response.headers["Content-Type"] == media_type
    assert response.headers["ETag"] == expected.etag
    assert response.headers["X-Content-Version"] == "1"
    assert response.headers["Cache-Control"] == "no-cache"


async def test_ids_with_slashes_and_symbols_are_served(client: Client) -> None:
    for content_id in ("shop/eu/214536502", "a+b=c@d:e-1.0"):
        response = await client.get(f"/content/{content_id}")
        assert response.status == 200
        assert await response.read() == render(content_id, 1).body


@pytest.mark.parametrize("form", ["{}", "W/{}", '"other", {}', "*"])
async def test_a_matching_if_none_match_gets_304_without_a_body(client: Client, form: str) -> None:
    first = await client.get("/content/214536502")
    etag = first.headers["ETag"]
    response = await client.get("/content/214536502", headers={"If-None-Match": form.format(etag)})
    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["ETag"] == etag
    assert response.headers["X-Content-Version"] == "1"


async def test_a_stale_if_none_match_gets_the_body(client: Client) -> None:
    response = await client.get("/content/214536502", headers={"If-None-Match": '"stale"'})
    assert response.status == 200
    assert await response.read() == render("214536502", 1).body


@pytest.mark.parametrize("path", ["/content/gone", "/content/bad%20id", "/content/a%2F..%2Fb"])
async def test_missing_and_malformed_ids_are_404(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert await response.json() == {"error": "no such content"}


@pytest.mark.parametrize(
    "path", ["/content/a/../../etc/passwd", "/content/a/./b", "/content/a//b", "/content/a/.."]
)
async def test_dot_segments_sent_as_is_are_refused(client: Client, path: str) -> None:
    # aiohttp's client normalises dot segments away, as browsers do; `curl --path-as-is` or an
    # attacker does not, so the request line is written by hand.
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert answer.endswith(b'{"error": "no such content"}')  # refused by the origin's check


# --- Latency ---------------------------------------------------------------------------------


async def test_the_configured_latency_is_added_to_content_requests(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def no_wait(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(server, "simulate_latency", no_wait)
    slow = await make_client(OriginConfig(latency_s=0.25))
    assert (await slow.get("/content/1")).status == 200
    assert waits == [0.25]
    fast = await make_client(TEST_CONFIG)
    assert (await fast.get("/content/1")).status == 200
    assert waits == [0.25]  # latency 0: no wait at all


def test_latency_defaults_to_a_realistic_cost_and_cannot_be_negative() -> None:
    assert 0 < OriginConfig().latency_s <= 0.2
    with pytest.raises(ValueError):
        OriginConfig(latency_s=-1)


# --- Bumps -----------------------------------------------------------------------------------


async def test_bump_makes_a_new_version_current_and_publishes_one_update(
    client: Client, publisher: RecordingPublisher
) -> None:
    before = await client.get("/content/214536502")
    old_etag = before.headers["ETag"]
    started = time.time()
    response = await client.post("/admin/content/214536502/bump")
    assert response.status == 200
    answer = await response.json()
    assert answer["content_id"] == "214536502" and answer["version"] == 2
    assert answer["etag"] != old_etag
    assert len(publisher.updates) == 1
    update = publisher.updates[0]
    assert (update.content_id, update.version, update.etag) == ("214536502", 2, answer["etag"])
    assert started <= update.ts <= time.time()
    after = await client.get("/content/214536502", headers={"If-None-Match": old_etag})
    assert after.status == 200  # the old version no longer matches
    assert after.headers["X-Content-Version"] == "2" and after.headers["ETag"] == answer["etag"]
    assert await after.read() == render("214536502", 2).body


async def test_bumps_count_up_per_item(client: Client, publisher: RecordingPublisher) -> None:
    for _ in range(3):
        await client.post("/admin/content/shop/7/bump")
    await client.post("/admin/content/8/bump")
    assert [(u.content_id, u.version) for u in publisher.updates] == [
        ("shop/7", 2),
        ("shop/7", 3),
        ("shop/7", 4),
        ("8", 2),
    ]


async def test_bumping_a_missing_item_is_404_and_publishes_nothing(
    client: Client, publisher: RecordingPublisher
) -> None:
    assert (await client.post("/admin/content/gone/bump")).status == 404
    assert publisher.updates == []


async def test_an_unpublished_bump_is_503_and_the_version_stays(make_client: MakeClient) -> None:
    client = await make_client(TEST_CONFIG, RefusingPublisher())
    response = await client.post("/admin/content/5/bump")
    assert response.status == 503
    answer = await response.json()
    assert answer["version"] == 2 and "Leader not available" in answer["error"]
    assert (await client.get("/content/5")).headers["X-Content-Version"] == "2"


async def test_the_admin_token_is_required_when_configured(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    config = OriginConfig(latency_s=0, admin_token="s3cret")
    client = await make_client(config, publisher)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = await client.post("/admin/content/9/bump", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert publisher.updates == []
    assert (await client.get("/content/9")).headers["X-Content-Version"] == "1"
    ok = await client.post("/admin/content/9/bump", headers={"Authorization": "Bearer s3cret"})
    assert ok.status == 200 and len(publisher.updates) == 1


# --- Health and metrics ----------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_metrics_tell_prefetches_from_views_and_count_statuses(client: Client) -> None:
    prefetch = {"Sec-Purpose": "prefetch"}
    await client.get("/content/1", headers=prefetch)
    await client.get("/content/2", headers={"Sec-Purpose": "prefetch;prerender"})
    await client.get("/content/1")
    await client.get("/content/gone", headers=prefetch)
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    assert requests_counted(await response.text()) == {
        ("prefetch", "200"): 2,
        ("view", "200"): 1,
        ("prefetch", "404"): 1,
    }


async def test_each_app_counts_on_its_own(make_client: MakeClient) -> None:
    first, second = await make_client(), await make_client()
    await first.get("/content/1")
    assert requests_counted(await (await second.get("/metrics")).text()) == {}


class GatedPublisher:
    """Stands in for a Kafka that answers only when the test says so."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.answer = asyncio.Event()

    async def publish(self, update: ContentUpdate) -> None:
        self.started.set()
        await self.answer.wait()


def sample(metrics_text: str, name: str) -> float:
    """The value of the one unlabelled sample called ``name``."""
    for family in text_string_to_metric_families(metrics_text):
        for found in family.samples:
            if found.name == name:
                return found.value
    raise AssertionError(f"no sample {name}")


async def test_metrics_show_updates_waiting_for_kafka_and_how_long_they_took(
    make_client: MakeClient,
) -> None:
    publisher = GatedPublisher()
    client = await make_client(TEST_CONFIG, publisher)
    bump = asyncio.create_task(client.post("/admin/content/5/bump"))
    await publisher.started.wait()
    during = await (await client.get("/metrics")).text()
    assert sample(during, "foresight_origin_updates_unacked") == 1
    assert sample(during, "foresight_origin_publish_seconds_count") == 0
    publisher.answer.set()
    assert (await bump).status == 200
    after = await (await client.get("/metrics")).text()
    assert sample(after, "foresight_origin_updates_unacked") == 0
    assert sample(after, "foresight_origin_publish_seconds_count") == 1


async def test_a_refused_update_is_timed_too(make_client: MakeClient) -> None:
    client = await make_client(TEST_CONFIG, RefusingPublisher())
    assert (await client.post("/admin/content/5/bump")).status == 503
    after = await (await client.get("/metrics")).text()
    assert sample(after, "foresight_origin_updates_unacked") == 0
    assert sample(after, "foresight_origin_publish_seconds_count") == 1


@pytest.mark.parametrize(
    ("headers", "purpose"),
    [
        ({}, "view"),
        ({"Sec-Purpose": "prefetch"}, "prefetch"),
        ({"Sec-Purpose": "Prefetch; anonymous-client-ip"}, "prefetch"),
        ({"Purpose": "prefetch"}, "prefetch"),
        ({"Sec-Purpose": "prerender"}, "view"),
    ],
)
def test_purpose_of(headers: dict[str, str], purpose: str) -> None:
    assert purpose_of(headers) == purpose


# --- The Kafka publisher ---------------------------------------------------------------------


class FakeProducer:
    """Stands in for confluent_kafka.Producer: flush() reports each record's delivery."""

    def __init__(self, error: KafkaError | None = None, deliver: bool = True) -> None:
        self.error = error
        self.deliver = deliver
        self.records: list[tuple[str, bytes | str | None, bytes | str | None]] = []
        self._pending: list[Any] = []

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        *,
        on_delivery: Any = None,
    ) -> None:
        self.records.append((topic, key, value))
        self._pending.append(on_delivery)

    def flush(self, timeout: float = -1) -> int:
        if not self.deliver:
            return len(self._pending)
        for callback in self._pending:
            callback(self.error, None)
        self._pending.clear()
        return 0


async def test_kafka_publisher_sends_the_update_keyed_by_content_id() -> None:
    producer = FakeProducer()
    publisher = KafkaUpdatePublisher(producer, "content-updates", timeout_s=1.0)
    update = ContentUpdate(content_id="shop/7", version=3, etag='"abc"', ts=1_700_000_000.0)
    await publisher.publish(update)
    [(topic, key, value)] = producer.records
    assert topic == "content-updates" and key == b"shop/7"
    assert isinstance(value, bytes) and decode(ContentUpdate, value) == update


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({"error": KafkaError(KafkaError._MSG_TIMED_OUT)}, "Message timed out"),
        ({"deliver": False}, "not acknowledged within 1 s"),
    ],
)
async def test_kafka_publisher_raises_when_kafka_does_not_ack(
    behaviour: dict[str, Any], reason: str
) -> None:
    publisher = KafkaUpdatePublisher(FakeProducer(**behaviour), "content-updates", timeout_s=1.0)
    update = ContentUpdate(content_id="1", version=2, ts=1_700_000_000.0)
    with pytest.raises(PublishFailed, match=reason):
        await publisher.publish(update)


async def test_a_kafka_refusal_reaches_the_operator_as_503(make_client: MakeClient) -> None:
    producer = FakeProducer(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    client = await make_client(TEST_CONFIG, KafkaUpdatePublisher(producer, "content-updates", 1))
    response = await client.post("/admin/content/1/bump")
    assert response.status == 503
    assert "content-updates" in (await response.json())["error"]


# --- Configuration ---------------------------------------------------------------------------


def test_create_app_needs_somewhere_to_publish() -> None:
    with pytest.raises(ValueError, match="publisher"):
        create_app(OriginConfig())


def test_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_ORIGIN_PORT", "18701")
    monkeypatch.setenv("FORESIGHT_TOPIC_CONTENT_UPDATES", "cu-test")
    monkeypatch.setenv("FORESIGHT_KAFKA_BOOTSTRAP_SERVERS", "k1:19092")
    config = config_from(Settings())
    assert (config.port, config.topic_content_updates) == (18701, "cu-test")
    assert config.kafka is not None
    assert config.kafka["bootstrap.servers"] == "k1:19092"
    assert config.kafka["partitioner"] == "murmur2_random"  # keyed topic: same as the JVM
    assert config.latency_s > 0  # a demo origin costs something to reach
