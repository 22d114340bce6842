"""The HTTP collector: `POST /v1/events` turns a batch of JSON events into Kafka records.

The body is a JSON array or NDJSON. Valid events are published (and acked by Kafka) even when
others in the same batch are invalid; each invalid one goes to the dead-letter topic with its
reason and is listed in the 400 answer. 202 means every event of the batch was acked.
GET /metrics counts requests by status, events in by validity, records out and refused by
topic, dead letters, the records still waiting for Kafka's ack, and how long batches wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections import Counter as Counter_
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import msgspec
from aiohttp import web
from confluent_kafka import KafkaError, Message
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from foresight.settings import Settings
from producers.publisher import DeliveryCallback, InteractionPublisher
from schemas import Interaction, InvalidRecord, convert, decode

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    """The part of :class:`InteractionPublisher` the collector uses (with per-record acks)."""

    topic: str
    dead_letter_topic: str

    def publish(self, event: Interaction, on_delivery: DeliveryCallback | None = None) -> None: ...

    def reject(
        self, raw: Any, reason: str, on_delivery: DeliveryCallback | None = None
    ) -> None: ...


class CollectorMetrics:
    """The collector's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "foresight_collector_requests",
            "POST /v1/events requests, by answer status",
            ["status"],
            registry=self.registry,
        )
        self.events = Counter(
            "foresight_collector_events",
            "Events received in batches, by outcome: valid (published) or invalid",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "foresight_collector_dead_letters",
            "Invalid events sent to the dead-letter topic, by the topic they were meant for",
            ["topic"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "foresight_collector_delivered",
            "Records Kafka acked, by topic (the events topic or its dead-letter topic)",
            ["topic"],
            registry=self.registry,
        )
        self.refused = Counter(
            "foresight_collector_delivery_failures",
            "Records Kafka refused or did not ack in time, by topic",
            ["topic"],
            registry=self.registry,
        )
        self.unacked = Gauge(
            "foresight_collector_unacked_records",
            "Records handed to the Kafka producer and not yet acked or refused",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "foresight_collector_batch_ack_seconds",
            "From a batch's arrival to Kafka's answer for its last record",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "foresight_collector_rate_limited",
            "Batches refused with 429, by the limit they hit (ip or client)",
            ["by"],
            registry=self.registry,
        )


class RateLimits:
    """Events per IP address and per client_id over a sliding window (the ``limits`` library,
    in memory: each collector process limits what it receives)."""

    def __init__(self, settings: Settings) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._per_ip = (
            parse(settings.collector_limit_per_ip) if settings.collector_limit_per_ip else None
        )
        self._per_client = (
            parse(settings.collector_limit_per_client)
            if settings.collector_limit_per_client
            else None
        )

    def refusal(self, ip: str, clients: Counter_[str], events: int) -> tuple[str, str] | None:
        """(the limit hit, a reason) if the batch would go over a limit, else None; the
        batch's events count against the limits only when it is let through."""
        checks: list[tuple[str, RateLimitItem, str, int]] = []
        if self._per_ip is not None and events:
            checks.append(("ip", self._per_ip, ip, events))
        if self._per_client is not None:
            checks.extend(("client", self._per_client, c, n) for c, n in clients.items())
        for by, item, key, cost in checks:
            if not self._limiter.test(item, by, key, cost=cost):
                return by, f"rate limit of {item} per {by} reached for {by} {key!r}"
        for by, item, key, cost in checks:
            self._limiter.hit(item, by, key, cost=cost)
        return None


PUBLISHER = web.AppKey[EventPublisher]("publisher")
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", CollectorMetrics)
LIMITS = web.AppKey("limits", RateLimits)
#: Seconds a refused sender is told to wait (Retry-After) before sending the batch again.
RETRY_AFTER_S = 1


def split_body(body: bytes, content_type: str) -> list[Any] | None:
    """The batch's items: parsed objects for a JSON array, raw lines for NDJSON.

    Returns None when the body is neither (the whole request is then a 400).
    """
    stripped = body.lstrip()
    if stripped.startswith(b"[") and "ndjson" not in content_type:
        try:
            items = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return None
        return items if isinstance(items, list) else None
    return [line for line in (raw.strip() for raw in body.splitlines()) if line]


def validate_item(item: Any) -> Interaction:
    if isinstance(item, bytes):
        return decode(Interaction, item)
    return convert(Interaction, item)


async def post_events(request: web.Request) -> web.Response:
    started = time.perf_counter()
    settings = request.app[SETTINGS]
    publisher = request.app[PUBLISHER]
    metrics = request.app[METRICS]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        return web.json_response({"error": exc.text}, status=413)
    items = split_body(body, request.content_type)
    if items is None:
        return web.json_response({"error": "body is neither a JSON array nor NDJSON"}, status=400)
    if len(items) > settings.collector_max_batch:
        return web.json_response(
            {
                "error": f"batch of {len(items)} events is over the limit of "
                f"{settings.collector_max_batch}"
            },
            status=413,
        )
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[str | None]] = []

    def settle(future: asyncio.Future[str | None], outcome: str | None) -> None:
        if not future.done():
            future.set_result(outcome)

    def acked(future: asyncio.Future[str | None], topic: str) -> DeliveryCallback:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            metrics.unacked.dec()
            (metrics.delivered if err is None else metrics.refused).labels(topic).inc()
            loop.call_soon_threadsafe(settle, future, None if err is None else err.str())

        return on_delivery

    def hand_over(
        send: Callable[..., None], future: asyncio.Future[str | None], topic: str
    ) -> None:
        metrics.unacked.inc()  # before sending: the ack may come before send returns
        try:
            send(on_delivery=acked(future, topic))
        except BaseException:
            metrics.unacked.dec()
            raise

    checked: list[Interaction | InvalidRecord] = []
    for item in items:
        try:
            checked.append(validate_item(item))
        except InvalidRecord as exc:
            checked.append(exc)
    clients = collections.Counter(e.client_id for e in checked if isinstance(e, Interaction))
    refused = request.app[LIMITS].refusal(request.remote or "unknown", clients, len(items))
    if refused is not None:
        # Nothing of the batch is published: sent again after Retry-After, it is not doubled.
        by, reason = refused
        metrics.rate_limited.labels(by).inc()
        return web.json_response(
            {"error": reason}, status=429, headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    errors: list[dict[str, Any]] = []
    accepted = 0
    dead_letters = publisher.dead_letter_topic
    for index, (item, event) in enumerate(zip(items, checked, strict=True)):
        future: asyncio.Future[str | None] = loop.create_future()
        acks.append(future)
        if isinstance(event, InvalidRecord):
            errors.append({"index": index, "reason": event.reason})
            metrics.events.labels("invalid").inc()
            hand_over(partial(publisher.reject, item, event.reason), future, dead_letters)
            metrics.dead_letters.labels(publisher.topic).inc()
            continue
        metrics.events.labels("valid").inc()
        hand_over(partial(publisher.publish, event), future, publisher.topic)
        accepted += 1
    failures = [f for f in await asyncio.gather(*acks) if f is not None]
    if acks:
        metrics.batch_seconds.observe(time.perf_counter() - started)
    if failures:
        log.warning("collector: %d record(s) not acked by Kafka: %s", len(failures), failures[0])
        return web.json_response(
            {"error": f"Kafka did not ack {len(failures)} record(s): {failures[0]}"},
            status=503,
        )
    payload = {"accepted": accepted, "rejected": len(errors)}
    if errors:
        return web.json_response({**payload, "errors": errors}, status=400)
    return web.json_response(payload, status=202)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[METRICS].registry),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
    )


@web.middleware
async def count_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count every POST /v1/events by its answer, including those aiohttp refuses (413)."""
    if request.path != "/v1/events":
        return await handler(request)
    status = "error"
    try:
        response = await handler(request)
        status = str(response.status)
        return response
    except web.HTTPException as exc:
        status = str(exc.status)
        raise
    finally:
        request.app[METRICS].requests.labels(status).inc()


def _poller(publisher: InteractionPublisher, stop: threading.Event) -> None:
    """Serve the producer's delivery callbacks until asked to stop."""
    while not stop.is_set():
        publisher.poll(0.05)


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    publisher = InteractionPublisher(app[SETTINGS], source="collector", per_record_acks=True)
    app[PUBLISHER] = publisher
    stop = threading.Event()
    thread = threading.Thread(
        target=_poller, args=(publisher, stop), name="kafka-poll", daemon=True
    )
    thread.start()
    yield
    stop.set()
    await asyncio.to_thread(thread.join)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(publisher.close, 30.0)


def create_app(settings: Settings, publisher: EventPublisher | None = None) -> web.Application:
    """The collector application. Events go to ``publisher`` when one is given (the caller
    owns it); otherwise to an InteractionPublisher that lives as long as the app."""
    app = web.Application(
        client_max_size=settings.collector_max_body_bytes, middlewares=[count_requests]
    )
    app[SETTINGS] = settings
    app[METRICS] = CollectorMetrics()
    app[LIMITS] = RateLimits(settings)
    if publisher is not None:
        app[PUBLISHER] = publisher
    else:
        app.cleanup_ctx.append(_publisher_ctx)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


def run(settings: Settings) -> None:
    web.run_app(
        create_app(settings), host=settings.collector_host, port=settings.collector_port, print=None
    )
