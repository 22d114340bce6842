"""Events published through the library and the CLI arrive in Kafka; bad ones in the DLQ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from foresight.settings import Settings
from producers.publisher import InteractionPublisher
from schemas import DeadLetter, Interaction, decode

from .conftest import end_offsets, read_all, settings_env

FORESIGHT = [sys.executable, "-m", "foresight"]


def _cli_env(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


def test_library_publishes_validated_events_keyed_by_client(settings: Settings) -> None:
    events = [
        Interaction(
            event_id=f"e{i}",
            client_id=f"c{i % 3}",
            content_id=f"item-{i}",
            kind="view",
            ts=1_700_000_000.0 + i,
        )
        for i in range(30)
    ]
    with InteractionPublisher(settings) as publisher:
        for event in events:
            publisher.publish(event)
    assert publisher.counts.delivered == 30
    received = [
        decode(Interaction, raw) for raw in read_all(settings, settings.topic_interactions, 30)
    ]
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in events)


def test_same_client_lands_on_one_partition(settings: Settings) -> None:
    from confluent_kafka import Consumer

    with InteractionPublisher(settings) as publisher:
        for i in range(20):
            publisher.publish(
                Interaction(
                    event_id=f"e{i}",
                    client_id="same-client",
                    content_id=f"x{i}",
                    kind="click",
                    ts=float(i + 1),
                )
            )
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "partition-probe",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic_interactions])
    partitions: set[int] = set()
    seen = 0
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=0.5):
                partition = msg.partition()
                if msg.error() is None and partition is not None:
                    partitions.add(partition)
                    seen += 1
            if seen >= 20:
                break
    finally:
        consumer.close()
    assert seen == 20
    assert len(partitions) == 1


def test_malformed_event_goes_to_the_dead_letter_topic_with_its_reason(
    settings: Settings,
) -> None:
    with InteractionPublisher(settings, source="test") as publisher:
        ok = publisher.publish_raw(
            b'{"event_id":"good","client_id":"c","content_id":"x","kind":"view","ts":1.0}'
        )
        bad = publisher.publish_raw(b'{"event_id":"bad","client_id":"c","kind":"teleport"}')
    assert ok is not None and bad is None
    letters = [
        decode(DeadLetter, raw)
        for raw in read_all(settings, settings.dead_letter_topic(settings.topic_interactions), 1)
    ]
    assert len(letters) == 1
    assert b'"teleport"' in letters[0].value
    assert "content_id" in letters[0].reason or "kind" in letters[0].reason
    assert letters[0].topic == settings.topic_interactions
    assert end_offsets(settings, settings.topic_interactions) == 1


def test_cli_produces_the_yoochoose_test_split(settings: Settings, yoochoose_dir: Path) -> None:
    before = end_offsets(settings, settings.topic_interactions)
    result = subprocess.run(
        [*FORESIGHT, "produce", "--dataset", "yoochoose", str(yoochoose_dir / "test.tsv")],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "sent=13568 rejected=0"
    assert end_offsets(settings, settings.topic_interactions) - before == 13568


def test_cli_jsonl_rejects_bad_lines_and_exits_non_zero(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(
        '{"event_id":"a","client_id":"c1","content_id":"x","kind":"view","ts":1.5}\n'
        '{"event_id":"b","client_id":"c1","content_id":"y","kind":"view","ts":"yesterday"}\n'
        '{"event_id":"c","client_id":"c2","content_id":"z","kind":"purchase","ts":2.5}\n'
    )
    result = subprocess.run(
        [*FORESIGHT, "produce", str(source)],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "sent=2 rejected=1"
    assert "ts" in result.stderr
    assert len(read_all(settings, settings.topic_interactions, 2)) == 2
    letters = read_all(settings, settings.dead_letter_topic(settings.topic_interactions), 1)
    assert b"yesterday" in decode(DeadLetter, letters[0]).value


def test_cli_reads_stdin(settings: Settings) -> None:
    line = '{"event_id":"s1","client_id":"c1","content_id":"x","kind":"view","ts":1.5}\n'
    result = subprocess.run(
        [*FORESIGHT, "produce", "-"],
        input=line,
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("sent=1 rejected=0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["produce", "/no/such/file.jsonl"], "no such file"),
        (["produce", "--dataset", "yoochoose", "-"], "reads a file"),
        (["produce", "--dataset", "movielens", "x.tsv"], "Invalid value"),
    ],
)
def test_cli_bad_arguments_get_one_line(settings: Settings, args: list[str], message: str) -> None:
    result = subprocess.run(
        [*FORESIGHT, *args],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
