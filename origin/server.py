"""The demo origin's HTTP server: `foresight origin`.

``GET /content/{id}`` serves the current version of a catalogue item with a strong ETag and
its version number, and answers ``If-None-Match`` with 304. ``POST /admin/content/{id}/bump``
makes a new version current and announces it on the content-updates topic, so that the cache
nodes re-fetch it and push it to the agents that hold it. An optional artificial latency gives
"fetch from the origin" a realistic cost in demos.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from aiohttp import hdrs, web
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from foresight.kafka import producer_config
from foresight.settings import Settings
from origin.catalog import Catalog, Content, read_sizes
from schemas import ContentUpdate, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OriginConfig:
    """What the origin needs to run; ``config_from`` makes one from the settings."""

    host: str = "127.0.0.1"
    port: int = 8701
    latency_s: float = 0.02  # added to every GET /content, as a remote origin would cost
    missing: frozenset[str] = frozenset()  # ids that answer 404, to demo misses
    sizes: Mapping[str, int] | None = None  # a site's own items and sizes (catalog.read_sizes)
    admin_token: str | None = None  # when set, bumps need "Authorization: Bearer <token>"
    topic_content_updates: str = "content-updates"
    kafka: Mapping[str, Any] | None = None  # confluent-kafka producer config; None: no Kafka
    publish_timeout_s: float = 10.0  # how long a bump waits for Kafka's ack

    def __post_init__(self) -> None:
        if self.latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if self.publish_timeout_s <= 0:
            raise ValueError("publish_timeout_s must be > 0")


def config_from(settings: Settings) -> OriginConfig:
    """The origin's configuration from Foresight's settings."""
    kafka = producer_config(settings, **{"linger.ms": 0})  # one record per bump: no batching
    token = settings.origin_admin_token
    return OriginConfig(
        host=settings.origin_host,
        port=settings.origin_port,
        latency_s=settings.origin_latency_ms / 1000.0,
        missing=frozenset(settings.origin_missing_ids),
        sizes=None
        if settings.origin_sizes_file is None
        else read_sizes(settings.origin_sizes_file),
        admin_token=token.get_secret_value() if token is not None else None,
        topic_content_updates=settings.topic_content_updates,
        kafka=MappingProxyType(kafka),
        publish_timeout_s=settings.origin_publish_timeout_s,
    )


# --- Publishing content updates ---------------------------------------------------------------


class PublishFailed(RuntimeError):
    """A content update was not acknowledged by Kafka."""


class UpdatePublisher(Protocol):
    """Announces new versions. ``publish`` returns once the update is delivered and raises
    PublishFailed when it is not; updates of one item are delivered in the order given."""

    async def publish(self, update: ContentUpdate) -> None: ...


class KafkaProducer(Protocol):
    """The part of confluent_kafka.Producer that the publisher uses."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        *,
        on_delivery: Any = None,
    ) -> None: ...

    def flush(self, timeout: float = -1) -> int: ...


class KafkaUpdatePublisher:
    """Publishes ContentUpdate records keyed by content_id and waits for each ack.

    Publishes run one at a time (a lock): bumps are rare operator actions, and one flusher
    means the delivery callback of a record is served by the flush that waits for it.
    """

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = producer
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: OriginConfig) -> KafkaUpdatePublisher:
        if config.kafka is None:
            raise ValueError("OriginConfig.kafka is not set: no Kafka to publish to")
        # librdkafka gives up when the bump does, so a refused update is never sent late
        settings = {**config.kafka, "message.timeout.ms": int(config.publish_timeout_s * 1000)}
        return cls(Producer(settings), config.topic_content_updates, config.publish_timeout_s)

    async def publish(self, update: ContentUpdate) -> None:
        outcome: list[str | None] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(None if err is None else err.str())

        async with self._lock:
            try:
                self._producer.produce(
                    self.topic,
                    value=encode(update),
                    key=update.content_id.encode(),
                    on_delivery=on_delivery,
                )
            except (BufferError, KafkaException) as exc:
                raise PublishFailed(f"{self.topic}: {exc}") from exc
            # A little past message.timeout.ms, so librdkafka reports a timeout itself.
            await asyncio.to_thread(self._producer.flush, self.timeout_s + 1.0)
        if not outcome:
            raise PublishFailed(f"{self.topic}: not acknowledged within {self.timeout_s:g} s")
        if outcome[0] is not None:
            raise PublishFailed(f"{self.topic}: {outcome[0]}")

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is still queued; return how many records were not."""
        return self._producer.flush(timeout)


# --- Metrics -----------------------------------------------------------------------------------


class OriginMetrics:
    """The origin's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "foresight_origin_requests",
            "GET /content requests, by purpose (prefetch when Sec-Purpose says so) and status",
            ["kind", "status"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "foresight_origin_bytes",
            "Content body bytes sent, by purpose",
            ["kind"],
            registry=self.registry,
        )
        self.bumps = Counter(
            "foresight_origin_bumps",
            "Version bumps, by whether the content update was published",
            ["outcome"],
            registry=self.registry,
        )
        self.publishing = Gauge(
            "foresight_origin_updates_unacked",
            "Content updates handed to the publisher and not yet acked or refused",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "foresight_origin_publish_seconds",
            "From a bump's content update being handed to the publisher to Kafka's answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )


CONFIG = web.AppKey("config", OriginConfig)
CATALOG = web.AppKey("catalog", Catalog)
METRICS = web.AppKey("metrics", OriginMetrics)
PUBLISHER = web.AppKey[UpdatePublisher]("publisher")


# --- Handlers ----------------------------------------------------------------------------------


def purpose_of(headers: Mapping[str, str]) -> str:
    """The request's purpose: prefetch when Sec-Purpose (or the older Purpose header some
    browsers still send) says so, else view."""
    for name in ("Sec-Purpose", "Purpose"):
        value = headers.get(name, "")
        first = value.split(",")[0].split(";")[0].strip().lower()
        if first == "prefetch":
            return "prefetch"
    return "view"


def _not_modified(request: web.Request, content: Content) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x" (RFC 9110, 13.1.2)."""
    tags = request.if_none_match
    if not tags:
        return False
    current = content.etag.strip('"')
    return any(tag.value in ("*", current) for tag in tags)


def _content_headers(content: Content) -> dict[str, str]:
    return {
        hdrs.ETAG: content.etag,
        hdrs.CACHE_CONTROL: "no-cache",
        "X-Content-Version": str(content.version),
    }


async def simulate_latency(seconds: float) -> None:
    """Stand in for the round trip to a remote origin."""
    await asyncio.sleep(seconds)


async def get_content(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    metrics = request.app[METRICS]
    purpose = purpose_of(request.headers)
    if config.latency_s > 0:
        await simulate_latency(config.latency_s)
    content = request.app[CATALOG].get(request.match_info["content_id"])
    response: web.StreamResponse
    if content is None:
        response = web.json_response({"error": "no such content"}, status=404)
    elif _not_modified(request, content):
        response = web.Response(status=304, headers=_content_headers(content))
    else:
        headers = _content_headers(content) | {hdrs.CONTENT_TYPE: content.media_type}
        response = web.Response(body=content.body, headers=headers)
        if request.method != hdrs.METH_HEAD:
            metrics.bytes.labels(kind=purpose).inc(content.size)
    metrics.requests.labels(kind=purpose, status=str(response.status)).inc()
    return response


def _authorised(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def bump_content(request: web.Request) -> web.Response:
    """Make a new version current and publish a ContentUpdate for it.

    The new version stays current even when Kafka refuses the update (503): versions only go
    forward, and bumping again publishes the next one.
    """
    if not _authorised(request, request.app[CONFIG].admin_token):
        return web.json_response(
            {"error": "admin token required"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="foresight-origin"'},
        )
    content = request.app[CATALOG].bump(request.match_info["content_id"])
    if content is None:
        return web.json_response({"error": "no such content"}, status=404)
    payload = {"content_id": content.content_id, "version": content.version, "etag": content.etag}
    update = ContentUpdate(
        content_id=content.content_id, version=content.version, etag=content.etag, ts=time.time()
    )
    metrics = request.app[METRICS]
    try:
        with metrics.publishing.track_inprogress(), metrics.publish_seconds.time():
            await request.app[PUBLISHER].publish(update)
    except PublishFailed as exc:
        metrics.bumps.labels(outcome="unpublished").inc()
        log.warning(
            "origin: version %d of %s not published: %s", content.version, content.content_id, exc
        )
        return web.json_response({**payload, "error": f"update not published: {exc}"}, status=503)
    metrics.bumps.labels(outcome="published").inc()
    log.info("origin: %s is now version %d", content.content_id, content.version)
    return web.json_response(payload)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[METRICS].registry),
        headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4},
    )


# --- The application ---------------------------------------------------------------------------


async def _kafka_publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    publisher = KafkaUpdatePublisher.from_config(app[CONFIG])
    app[PUBLISHER] = publisher
    yield
    unsent = await asyncio.to_thread(publisher.close, app[CONFIG].publish_timeout_s)
    if unsent:
        log.warning("origin: %d content update(s) not delivered at shutdown", unsent)


def create_app(config: OriginConfig, publisher: UpdatePublisher | None = None) -> web.Application:
    """The origin application.

    Content updates go to ``publisher`` when one is given (the caller owns it); otherwise to a
    Kafka producer built from ``config.kafka`` that lives as long as the app.
    """
    app = web.Application()
    app[CONFIG] = config
    app[CATALOG] = Catalog(missing=config.missing, sizes=config.sizes)
    app[METRICS] = OriginMetrics()
    if publisher is not None:
        app[PUBLISHER] = publisher
    elif config.kafka is not None:
        app.cleanup_ctx.append(_kafka_publisher_ctx)
    else:
        raise ValueError("create_app needs a publisher or OriginConfig.kafka")
    # {content_id:.+}: ids may hold "/"; the catalogue refuses ".." and other unsafe segments
    app.router.add_get("/content/{content_id:.+}", get_content)
    app.router.add_post("/admin/content/{content_id:.+}/bump", bump_content)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


def run(settings: Settings) -> None:
    """Serve the origin until SIGINT or SIGTERM (aiohttp's run_app stops cleanly on both)."""
    config = config_from(settings)
    log.info("origin on http://%s:%d/content/{content_id}", config.host, config.port)
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)
