"""Fresh versions everywhere, on real Kafka and Cassandra with two real cache nodes: once the
origin's content-updates record is out, every node serves the newest version, Cassandra's
content_latest names it even for an item nobody held, and an agent that listed the old version
in its hello gets an update, connected at bump time or connecting later."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.request

import aiohttp

from foresight.cassandra import connect
from schemas.protocol import Hello, Holding, Update, Welcome, encode_message

from .test_delivery import Delivery, _bounded, _next, _read, delivery

__all__ = ["delivery"]  # the fixture, imported for pytest

# From the bump to every node having consumed its content-updates record (each polls Kafka).
UPDATE_TIMEOUT_S = 30.0


def _client_of(d: Delivery, node_url: str, prefix: str) -> str:
    """A client id that the given node owns."""
    return next(f"{prefix}-{n}" for n in range(1000) if d.owner(f"{prefix}-{n}") == node_url)


def _fetch(d: Delivery, node_url: str, client: str, content_id: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{node_url}/v1/content/{content_id}",
        headers={"Authorization": f"Bearer {d.token(client)}", "Sec-GPC": "1"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["X-Content-Version"]), response.read()


def _content_latest(d: Delivery, content_id: str) -> int | None:
    cluster, session = connect(d.settings, d.settings.cassandra_keyspace)
    try:
        row = session.execute(
            "SELECT version FROM content_latest WHERE content_id = %s", (content_id,)
        ).one()
        return None if row is None else int(row.version)
    finally:
        cluster.shutdown()


async def _hello(
    session: aiohttp.ClientSession, d: Delivery, client: str, holdings: list[Holding]
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        f"{d.owner(client)}/v1/agents/ws", headers={"Authorization": f"Bearer {d.token(client)}"}
    )
    hello = Hello(client_id=client, agent="test/1", holdings=holdings)
    await ws.send_str(encode_message(hello).decode())
    assert isinstance(await _next(ws, Welcome, 10), Welcome)
    return ws


def test_after_a_bump_every_node_serves_and_sends_only_the_new_version(delivery: Delivery) -> None:
    d = delivery
    held, unheld = "article-17", "article-42"
    client_0 = _client_of(d, d.node_urls[0], "reader")
    client_1 = _client_of(d, d.node_urls[1], "reader")
    # Both nodes load version 1 of both items into memory (and Cassandra).
    for node_url, client in ((d.node_urls[0], client_0), (d.node_urls[1], client_1)):
        for item in (held, unheld):
            assert _fetch(d, node_url, client, item)[0] == 1
    version_1, body_1 = _fetch(d, d.node_urls[0], client_0, held)
    digest_1 = hashlib.sha256(body_1).hexdigest()
    holding = Holding(content_id=held, version=version_1, digest=digest_1)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            # An agent that lists version 1 in its hello, and has had nothing pushed.
            connected = await _hello(session, d, client_0, [holding])
            for item in (held, unheld):
                request = urllib.request.Request(
                    f"{d.origin_url}/admin/content/{item}/bump", method="POST"
                )
                await asyncio.to_thread(_read, request)
            update = await _next(connected, Update, UPDATE_TIMEOUT_S)
            assert isinstance(update, Update)
            assert (update.content_id, update.version, update.previous_version) == (held, 2, 1)
            # An agent that was away at bump time connects with version 1 in its hello.
            later = await _hello(session, d, client_1, [holding])
            update = await _next(later, Update, UPDATE_TIMEOUT_S)
            assert isinstance(update, Update)
            assert (update.content_id, update.version) == (held, 2)
            await connected.close()
            await later.close()

    asyncio.run(_bounded(scenario()))
    # Every node serves version 2 of both items, the one nobody held included.
    deadline = time.monotonic() + UPDATE_TIMEOUT_S
    served: dict[tuple[str, str], int] = {}
    while time.monotonic() < deadline:
        served = {
            (node_url, item): _fetch(d, node_url, client, item)[0]
            for node_url, client in ((d.node_urls[0], client_0), (d.node_urls[1], client_1))
            for item in (held, unheld)
        }
        if set(served.values()) == {2}:
            break
        time.sleep(0.5)
    assert set(served.values()) == {2}, served
    assert _content_latest(d, unheld) == 2
    assert _content_latest(d, held) == 2
