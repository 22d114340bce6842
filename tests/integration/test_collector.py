"""The HTTP collector: valid items go through even beside invalid ones, which land in the DLQ."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from foresight.settings import Settings
from producers.collector import create_app
from schemas import DeadLetter, Interaction, decode

from .conftest import read_all

Client = TestClient[web.Request, web.Application]


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"h{i}",
        "client_id": f"c{i}",
        "content_id": f"p{i}",
        "kind": "view",
        "ts": 1_700_000_000.0 + i,
    }


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    small = settings.model_copy(update={"collector_max_batch": 5, "collector_max_body_bytes": 4096})
    async with TestClient(TestServer(create_app(small))) as test_client:
        yield test_client


async def test_valid_batch_is_accepted_and_in_kafka(
    client: Client,
    settings: Settings,
) -> None:
    response = await client.post("/v1/events", json=[_event(i) for i in range(3)])
    assert response.status == 202
    assert await response.json() == {"accepted": 3, "rejected": 0}
    got = [decode(Interaction, raw) for raw in read_all(settings, settings.topic_interactions, 3)]
    assert sorted(e.event_id for e in got) == ["h0", "h1", "h2"]


async def test_ndjson_body(client: Client, settings: Settings) -> None:
    body = "\n".join(json.dumps(_event(i)) for i in range(2)) + "\n"
    response = await client.post(
        "/v1/events", data=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status == 202
    assert (await response.json())["accepted"] == 2


async def test_mixed_batch_gets_400_with_reasons_and_valid_items_still_go_through(
    client: Client,
    settings: Settings,
) -> None:
    bad = _event(9) | {"kind": "teleport"}
    response = await client.post("/v1/events", json=[_event(1), bad, _event(2)])
    assert response.status == 400
    payload = await response.json()
    assert payload["accepted"] == 2 and payload["rejected"] == 1
    assert payload["errors"][0]["index"] == 1
    assert "kind" in payload["errors"][0]["reason"]
    assert len(read_all(settings, settings.topic_interactions, 2)) == 2
    letters = read_all(settings, settings.dead_letter_topic(settings.topic_interactions), 1)
    letter = decode(DeadLetter, letters[0])
    assert b"teleport" in letter.value and letter.rejected_by == "collector"


async def test_over_the_batch_limit_is_413(client: Client) -> None:
    response = await client.post("/v1/events", json=[_event(i) for i in range(6)])
    assert response.status == 413


async def test_over_the_size_limit_is_413(client: Client) -> None:
    response = await client.post("/v1/events", data=b"[" + b" " * 10_000 + b"]")
    assert response.status == 413


async def test_garbage_body_is_400(client: Client) -> None:
    response = await client.post(
        "/v1/events", data=b"[{broken", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
