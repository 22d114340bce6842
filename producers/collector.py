"""The HTTP collector: `POST /v1/events` turns a batch of JSON events into Kafka records.

The body is a JSON array or NDJSON. Valid events are published (and acked by Kafka) even when
others in the same batch are invalid; each invalid one goes to the dead-letter topic with its
reason and is listed in the 400 answer. 202 means every event of the batch was acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web
from confluent_kafka import KafkaError, Message

from foresight.settings import Settings
from producers.publisher import InteractionPublisher
from schemas import Interaction, InvalidRecord, convert, decode

log = logging.getLogger(__name__)

PUBLISHER = web.AppKey("publisher", InteractionPublisher)
SETTINGS = web.AppKey("settings", Settings)


def split_body(body: bytes, content_type: str) -> list[Any] | None:
    """The batch's items: parsed objects for a JSON array, raw lines for NDJSON.

    Returns None when the body is neither (the whole request is then a 400).
    """
    stripped = body.lstrip()
    if stripped.startswith(b"[") and "ndjson" not in content_type:
        try:
            items = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        return items if isinstance(items, list) else None
    return [line for line in (raw.strip() for raw in body.splitlines()) if line]


def validate_item(item: Any) -> Interaction:
    if isinstance(item, bytes):
        return decode(Interaction, item)
    return convert(Interaction, item)


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    publisher = request.app[PUBLISHER]
    body = await request.read()  # aiohttp answers 413 past client_max_size
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

    def acked(future: asyncio.Future[str | None]) -> Any:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(settle, future, None if err is None else err.str())

        return on_delivery

    errors: list[dict[str, Any]] = []
    accepted = 0
    for index, item in enumerate(items):
        future: asyncio.Future[str | None] = loop.create_future()
        acks.append(future)
        try:
            event = validate_item(item)
        except InvalidRecord as exc:
            errors.append({"index": index, "reason": exc.reason})
            publisher.reject(item, exc.reason, on_delivery=acked(future))
            continue
        publisher.publish(event, on_delivery=acked(future))
        accepted += 1
    failures = [f for f in await asyncio.gather(*acks) if f is not None]
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


def create_app(settings: Settings) -> web.Application:
    """The collector application; the publisher lives as long as the app."""
    app = web.Application(client_max_size=settings.collector_max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_publisher_ctx)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    return app


def run(settings: Settings) -> None:
    web.run_app(
        create_app(settings), host=settings.collector_host, port=settings.collector_port, print=None
    )
