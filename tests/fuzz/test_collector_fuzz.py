"""10,000 hostile request bodies against the HTTP collector, on the real Kafka.

Every answer must be 202, 400 or 413 with a JSON reason (never a 5xx, never a hang); each
invalid item of a batch must be in the dead-letter topic with its reason and counted; each
valid one in the interactions topic. Bodies whose items are known (a clean JSON array, NDJSON)
are also checked item by item against the schema: the collector accepts exactly the items
that validate as Interaction.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import strategies as st

from foresight.settings import Settings
from producers.collector import create_app
from schemas import DeadLetter, Interaction, InvalidRecord, convert, decode
from tests.integration.conftest import end_offsets, read_all

from . import strategies as fz
from .conftest import Figure

pytestmark = pytest.mark.integration

PAYLOADS = 10_000
IN_FLIGHT = 16
# A request waits for Kafka's acks of each of its records; half a minute means it hangs.
REQUEST_TIMEOUT_S = 30.0
CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "application/json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "",
    "multipart/form-data; boundary=x",
]


@dataclass(frozen=True)
class Payload:
    """One request body; the large kinds are built when sent, not kept in memory."""

    kind: str
    content_type: str
    raw: bytes = b""
    size: int = 0

    def body(self) -> bytes:
        if self.kind == "too-big":
            return b"[" + b" " * self.size + b"]"
        if self.kind == "big-item":
            return b"x" * self.size + b"\n"
        return self.raw


def expected_items(payload: Payload, max_batch: int) -> tuple[int, int] | None:
    """(valid, invalid) items of a body whose shape this test built, by the schema alone;
    None when only the general rules apply."""
    if payload.kind == "array":
        try:
            items = msgspec.json.decode(payload.raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if not isinstance(items, list) or len(items) > max_batch:
            return None
        valid = 0
        for item in items:
            try:
                convert(Interaction, item)
                valid += 1
            except InvalidRecord:
                pass
        return valid, len(items) - valid
    if payload.kind == "ndjson":
        lines = [line.strip() for line in payload.raw.splitlines() if line.strip()]
        if len(lines) > max_batch:
            return None
        valid = 0
        for line in lines:
            try:
                decode(Interaction, line)
                valid += 1
            except InvalidRecord:
                pass
        return valid, len(lines) - valid
    return None


valid_items = fz.interactions()
hostile_lines = fz.hostile_bytes(valid_items)


def array_items() -> st.SearchStrategy[Any]:
    valid = fz.pooled(valid_items)
    return st.one_of(valid, fz.mutated(valid), fz.mutated(valid), fz.any_json())


@st.composite
def payloads(draw: st.DrawFn, max_batch: int, max_body: int) -> Payload:
    kind = draw(
        st.sampled_from(
            ["array"] * 40
            + ["ndjson"] * 40
            + ["garbage"] * 8
            + ["deep"] * 5
            + ["empty"] * 3
            + ["too-many"] * 2
            + ["too-big", "big-item"]
        )
    )
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if kind == "array":
        items = draw(st.lists(array_items(), max_size=6))
        array_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
        return Payload(kind, array_type, fz.dumps(items))
    if kind == "ndjson":
        lines = draw(st.lists(hostile_lines, max_size=6))
        return Payload(kind, "application/x-ndjson", b"\n".join(lines))
    if kind == "garbage":
        return Payload(kind, content_type, draw(st.binary(max_size=2000)))
    if kind == "deep":
        return Payload(kind, content_type, b"[" + draw(fz.deep_nesting()) + b"]")
    if kind == "empty":
        return Payload(kind, content_type, draw(st.sampled_from([b"", b" ", b"\n\n", b"[]"])))
    if kind == "too-many":
        event = b'{"event_id":"e","client_id":"c","content_id":"p","kind":"view","ts":1}'
        count = max_batch + draw(st.integers(min_value=1, max_value=50))
        return Payload(kind, "application/x-ndjson", b"\n".join([event] * count))
    if kind == "too-big":
        return Payload(kind, content_type, size=max_body + draw(st.integers(1, 100_000)))
    # One invalid item of up to the whole body limit: its dead letter must still fit Kafka.
    size = draw(st.integers(min_value=max_body // 2, max_value=max_body - 2))
    return Payload(kind, "application/x-ndjson", size=size)


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: int = 0
    rejected: int = 0
    hangs: int = 0
    server_errors: list[tuple[str, int, str]] = field(default_factory=list)
    broken_answers: list[tuple[str, int, str]] = field(default_factory=list)
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)
    connection_errors: list[tuple[str, str]] = field(default_factory=list)


def check_answer(payload: Payload, status: int, text: str, max_batch: int, tally: Tally) -> None:
    tally.statuses[status] += 1
    tally.kinds[f"{payload.kind}:{status}"] += 1
    sample = (payload.kind, status, text[:200])
    if status >= 500:
        tally.server_errors.append(sample)
        return
    try:
        answer = msgspec.json.decode(text)
    except msgspec.DecodeError:
        tally.broken_answers.append(sample)
        return
    if status not in (202, 400, 413) or not isinstance(answer, dict):
        tally.broken_answers.append(sample)
        return
    if "error" in answer:
        if status == 202 or not (isinstance(answer["error"], str) and answer["error"]):
            tally.broken_answers.append(sample)
        if payload.kind in ("array", "ndjson") and expected_items(payload, max_batch):
            tally.mismatches.append((payload.kind, expected_items(payload, max_batch), answer))
        return
    accepted, rejected = answer.get("accepted"), answer.get("rejected")
    if not (isinstance(accepted, int) and isinstance(rejected, int)):
        tally.broken_answers.append(sample)
        return
    errors = answer.get("errors", [])
    reasons_ok = len(errors) == rejected and all(
        isinstance(e, dict) and isinstance(e.get("reason"), str) and e["reason"] for e in errors
    )
    if (status == 202) != (rejected == 0) or not reasons_ok:
        tally.broken_answers.append(sample)
    tally.accepted += accepted
    tally.rejected += rejected
    expected = expected_items(payload, max_batch)
    if expected is not None and expected != (accepted, rejected):
        tally.mismatches.append((payload.kind, expected, answer))


async def send_all(
    session: aiohttp.ClientSession, url: str, batch: list[Payload], max_batch: int, tally: Tally
) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def send(payload: Payload) -> None:
        async with gate:
            try:
                async with session.post(
                    url, data=payload.body(), headers={"Content-Type": payload.content_type}
                ) as response:
                    text = await response.text(errors="replace")
                    check_answer(payload, response.status, text, max_batch, tally)
            except TimeoutError:
                tally.hangs += 1
            except aiohttp.ClientError as exc:
                tally.connection_errors.append((payload.kind, repr(exc)[:200]))

    await asyncio.gather(*(send(p) for p in batch))


def counter(metrics_text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_hostile_bodies_get_an_answer_with_a_reason_and_every_rejected_item_a_dead_letter(
    settings: Settings, figure: Figure
) -> None:
    max_batch, max_body = settings.collector_max_batch, settings.collector_max_body_bytes
    batch = fz.generate(payloads(max_batch, max_body), PAYLOADS)
    tally = Tally()
    # The rate limits are tested on their own (tests/unit/test_collector_server.py); here
    # 10,000 bodies from one address would mostly measure them.
    settings = settings.model_copy(
        update={"collector_limit_per_ip": None, "collector_limit_per_client": None}
    )
    async with TestServer(create_app(settings)) as server:
        url = str(server.make_url("/v1/events"))
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await send_all(session, url, batch, max_batch, tally)
            async with session.get(server.make_url("/metrics")) as response:
                metrics_text = await response.text()
    interactions = end_offsets(settings, settings.topic_interactions)
    dlq_topic = settings.dead_letter_topic(settings.topic_interactions)
    dead_lettered = end_offsets(settings, dlq_topic)
    letters = [decode(DeadLetter, raw) for raw in read_all(settings, dlq_topic, dead_lettered)]
    fives = sum(n for status, n in tally.statuses.items() if status >= 500)
    figure(
        "collector",
        f"{len(batch)} payloads, {tally.statuses[202]} answered 202, {tally.statuses[400]} 400, "
        f"{tally.statuses[413]} 413, {fives} 5xx, {tally.hangs} hangs, "
        f"{len(tally.connection_errors)} connection errors; items: {tally.accepted} accepted, "
        f"{tally.rejected} rejected, {dead_lettered} dead letters in Kafka",
        payloads=len(batch),
        statuses=dict(tally.statuses),
        by_kind=dict(tally.kinds),
        hangs=tally.hangs,
        connection_errors=len(tally.connection_errors),
        items_accepted=tally.accepted,
        items_rejected=tally.rejected,
        interactions_in_kafka=interactions,
        dead_letters_in_kafka=dead_lettered,
        broken_answers=len(tally.broken_answers),
        schema_mismatches=len(tally.mismatches),
    )
    assert not tally.server_errors, f"{fives} answers were 5xx, e.g. {tally.server_errors[:3]}"
    assert tally.hangs == 0, f"{tally.hangs} requests got no answer in {REQUEST_TIMEOUT_S} s"
    assert not tally.connection_errors, tally.connection_errors[:3]
    assert not tally.broken_answers, f"answers without a JSON reason: {tally.broken_answers[:3]}"
    assert not tally.mismatches, f"accepted other items than the schema: {tally.mismatches[:3]}"
    assert sum(tally.statuses.values()) == len(batch)
    assert interactions == tally.accepted
    assert dead_lettered == tally.rejected == len(letters)
    assert all(letter.reason and letter.topic == settings.topic_interactions for letter in letters)
    assert counter(metrics_text, "foresight_collector_events_total", outcome="valid") == (
        tally.accepted
    )
    assert counter(metrics_text, "foresight_collector_events_total", outcome="invalid") == (
        tally.rejected
    )
    assert counter(metrics_text, "foresight_collector_dead_letters_total") == tally.rejected
    for status, n in tally.statuses.items():
        assert counter(metrics_text, "foresight_collector_requests_total", status=str(status)) == n
