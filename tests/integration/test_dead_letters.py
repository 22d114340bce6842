"""A record near the broker's size limit that fails validation is dead-lettered, not lost.

The broker takes records up to about 1 MiB (message.max.bytes, Kafka's default: the local
services do not change it) and every Foresight producer up to 1,000,000 bytes. An invalid
record of 900 KiB fits; a dead letter carrying it whole in base64 (a third bigger) would not,
and the process that rejected it would lose it. Each test sends one such record to a real
process (the worker, a cache node) and finds its dead letter, with the original's size and
digest, and the process still handling what comes after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

from confluent_kafka import Producer

from foresight.kafka import producer_config
from foresight.migrate import migrate
from foresight.replay.measure import metric_sum, read_metrics
from foresight.settings import Settings
from foresight.stack import http_text
from producers.publisher import InteractionPublisher
from schemas import DeadLetter, Interaction, decode

from .conftest import read_all, settings_env
from .processes import delivery_settings, foresight_processes

SECRET = "integration-secret-0123456789abcdef-0123456789"
BIG = 900 * 1024  # under the producers' 1,000,000 bytes, over what fits once base64-encoded
# A record handled by a running process: both poll Kafka every fraction of a second, and a
# loaded two-core machine may take many times that.
HANDLED_TIMEOUT_S = 60.0


def _big_invalid(fields: dict[str, object], size: int = BIG) -> bytes:
    """A JSON object of exactly ``size`` bytes whose content_id is far too long (at most 256
    characters are allowed) and hard to compress (random base64)."""
    head = json.dumps({**fields, "content_id": ""})[:-3]  # ends with `"content_id": `
    filler = size - len(head) - len('"x"}') + 1
    content_id = base64.b64encode(os.urandom(filler)).decode()[:filler]
    value = f'{head}"{content_id}"}}'.encode()
    assert len(value) == size
    return value


def _send(settings: Settings, topic: str, value: bytes, partition: int | None = None) -> None:
    producer = Producer(producer_config(settings))
    if partition is None:
        producer.produce(topic, key=b"client-big", value=value)
    else:
        producer.produce(topic, key=b"client-big", value=value, partition=partition)
    assert producer.flush(30) == 0, f"the broker did not take the {len(value)}-byte record"


def _wait_metric(url: str, name: str, at_least: float, **labels: str) -> float:
    deadline = time.monotonic() + HANDLED_TIMEOUT_S
    value = 0.0
    while time.monotonic() < deadline:
        value = metric_sum(read_metrics(http_text(f"{url}/metrics")), name, **labels)
        if value >= at_least:
            break
        time.sleep(0.5)
    return value


def test_a_900_kib_invalid_interaction_is_dead_lettered_and_the_worker_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    migrate(mine)
    worker_url = f"http://127.0.0.1:{mine.worker_web_port}"
    with foresight_processes(
        settings_env(mine),
        {"worker": ["worker", "-l", "info"]},
        {"worker": f"{worker_url}/healthz"},
        tmp_path,
    ) as processes:
        big = _big_invalid(
            {"event_id": "e-big", "client_id": "client-big", "kind": "click", "ts": time.time()}
        )
        _send(mine, mine.topic_interactions, big)
        letters = read_all(
            mine, mine.dead_letter_topic(mine.topic_interactions), 1, HANDLED_TIMEOUT_S
        )
        assert letters, "no dead letter for the 900 KiB interaction:\n" + _tail(tmp_path)
        letter = decode(DeadLetter, letters[0])
        assert letter.topic == mine.topic_interactions and letter.offset == 0
        assert letter.value_size == BIG
        assert letter.value_sha256 == hashlib.sha256(big).hexdigest()
        assert big.startswith(letter.value) and "content_id" in letter.reason

        # The worker is alive and processes what came after.
        valid = Interaction(
            event_id="e-after", client_id="client-1", content_id="p1", kind="click", ts=time.time()
        )
        with InteractionPublisher(mine) as publisher:
            publisher.publish(valid)
        events = "foresight_worker_events_total"
        ok = _wait_metric(worker_url, events, 1, topic="interactions", outcome="ok")
        assert ok == 1, _tail(tmp_path)
        invalid = metric_sum(
            read_metrics(http_text(f"{worker_url}/metrics")),
            events,
            topic="interactions",
            outcome="invalid",
        )
        assert invalid == 1
        assert processes["worker"].poll() is None


def test_a_900_kib_invalid_prefetch_command_is_dead_lettered_and_the_node_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    migrate(mine)
    node_url = f"http://127.0.0.1:{mine.cache_node_base_port}"
    with foresight_processes(
        settings_env(mine),
        {"node-0": ["cache-node", "--node-id", "0", "--port", str(mine.cache_node_base_port)]},
        {"node-0": f"{node_url}/healthz"},
        tmp_path,
    ) as processes:
        now = time.time()
        big = _big_invalid(
            {
                "command_id": "c-big",
                "client_id": "client-big",
                "probability": 0.5,
                "rank": 1,
                "model": "test",
                "issued_at": now,
                "expires_at": now + 600,
            }
        )
        topic = mine.topic_prefetch_commands
        _send(mine, topic, big, partition=0)  # node-0's slot
        _send(mine, topic, b"not a command", partition=0)  # the node still reads its slot
        raw = read_all(mine, mine.dead_letter_topic(topic), 2, HANDLED_TIMEOUT_S)
        letters = sorted((decode(DeadLetter, r) for r in raw), key=lambda x: x.offset or 0)
        assert len(letters) == 2, f"{len(letters)} dead letters of 2:\n" + _tail(tmp_path)
        first, second = letters
        assert (first.topic, first.partition, first.offset) == (topic, 0, 0)
        assert first.value_size == BIG
        assert first.value_sha256 == hashlib.sha256(big).hexdigest()
        assert big.startswith(first.value)
        assert second.value == b"not a command" and second.offset == 1
        counted = _wait_metric(node_url, "foresight_node_commands_total", 2, outcome="invalid")
        assert counted == 2
        assert processes["node-0"].poll() is None


def _tail(folder: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(folder.glob("*.log"))
    )


def test_the_publishers_dead_letter_of_a_900_kib_line_keeps_its_size_and_digest(
    settings: Settings,
) -> None:
    big = _big_invalid({"event_id": "e-big", "client_id": "c", "kind": "view", "ts": 1.0})
    with InteractionPublisher(settings, source="test") as publisher:
        assert publisher.publish_raw(big) is None
    raw = read_all(settings, settings.dead_letter_topic(settings.topic_interactions), 1)
    letter = decode(DeadLetter, raw[0])
    assert (letter.topic, letter.partition, letter.offset) == (
        settings.topic_interactions,
        None,
        None,
    )
    assert letter.value_size == BIG
    assert letter.value_sha256 == hashlib.sha256(big).hexdigest()
    assert big.startswith(letter.value) and letter.rejected_by == "test"
