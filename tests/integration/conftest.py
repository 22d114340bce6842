"""Fixtures for tests against the real Kafka and Cassandra.

By default the services are the ones `foresight services up` started (`make test` starts
them). With FORESIGHT_TEST_BACKEND=docker the same fixtures start them with testcontainers.
When they do not answer, every integration test FAILS: a green run must have exercised them.
Each test gets its own topics and keyspace, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from foresight.migrate import drop_keyspaces
from foresight.settings import Settings
from foresight.stack import free_port
from foresight.topics import admin_client, create_topics

from .backends import docker_services, local_services

# Long enough for a cold Cassandra query or a Kafka metadata round trip on a loaded 2-core
# machine; short enough that a dead service fails the run quickly.
SERVICE_TIMEOUT_S = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    backend = os.environ.get("FORESIGHT_TEST_BACKEND", "local")
    if backend == "docker":
        with docker_services() as settings:
            yield settings
    elif backend == "local":
        yield local_services(SERVICE_TIMEOUT_S)
    else:
        pytest.fail(f"FORESIGHT_TEST_BACKEND={backend!r}: expected local or docker")


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings with topic names and a keyspace of this test's own, topics created; the
    keyspace is dropped afterwards (each one's tables cost Cassandra heap)."""
    tag = uuid.uuid4().hex[:10]
    mine = base_settings.with_topic_prefix(f"t{tag}").model_copy(
        update={"cassandra_keyspace": f"t{tag}"}
    )
    create_topics(mine)
    yield mine
    drop_keyspaces(mine, f"t{tag}")


def settings_env(settings: Settings) -> dict[str, str]:
    """This process's environment with exactly these settings, for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    return env | settings.as_environment()


def replay_settings(settings: Settings) -> Settings:
    """A replay's processes on ports of their own (the test's settings otherwise)."""
    return settings.model_copy(
        update={
            "worker_web_port": free_port(),
            "origin_port": (origin := free_port()),
            "origin_url_template": f"http://127.0.0.1:{origin}/content/{{content_id}}",
            "cache_node_base_port": free_port(span=4),  # node n listens on base + n
        }
    )


def small_train(source: Path, target: Path, lines: int = 4000) -> Path:
    """The first ``lines`` clicks of a training TSV: enough to warm a replay's model fast."""
    with source.open() as handle:
        target.write_text("".join(next(handle) for _ in range(lines)))
    return target


def end_offsets(settings: Settings, topic: str) -> int:
    """Sum of the high watermarks of every partition of a topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"probe-{uuid.uuid4().hex}",
        }
    )
    try:
        meta = admin_client(settings).list_topics(topic, timeout=SERVICE_TIMEOUT_S)
        total = 0
        for partition in meta.topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=SERVICE_TIMEOUT_S
            )
            total += high
        return total
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """Read a topic from the beginning until ``expected`` records arrived (or time ran out)."""
    import time

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    values.append(value)
        return values
    finally:
        consumer.close()
