"""Create Foresight's Kafka topics with the configured partitions, idempotently."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from foresight.settings import Settings


@dataclass(frozen=True)
class TopicResult:
    name: str
    partitions: int
    action: str  # "created", "exists" or "partitions added"


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": logging.getLogger("librdkafka"),
    }
    return AdminClient(config)


def create_topics(settings: Settings, timeout: float = 30.0) -> list[TopicResult]:
    """Create every topic that is missing; grow any that has fewer partitions than configured.

    A second run changes nothing and reports every topic as "exists".
    """
    admin = admin_client(settings)
    wanted = settings.topic_partitions()
    existing = admin.list_topics(timeout=timeout).topics
    results: list[TopicResult] = []
    to_create: list[NewTopic] = []
    for name, partitions in wanted.items():
        if name in existing:
            have = len(existing[name].partitions)
            if have < partitions:
                from confluent_kafka.admin import NewPartitions

                admin.create_partitions([NewPartitions(name, partitions)])[name].result(timeout)
                results.append(TopicResult(name, partitions, "partitions added"))
            else:
                results.append(TopicResult(name, have, "exists"))
            continue
        config = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        if name in settings.compacted_topics:
            config["cleanup.policy"] = "compact"
        to_create.append(
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=settings.topic_replication_factor,
                config=config,
            )
        )
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=timeout)
        for topic in to_create:
            futures[topic.topic].result(timeout)
            results.append(TopicResult(topic.topic, topic.num_partitions, "created"))
        wait_for_leaders(admin, [t.topic for t in to_create], timeout)
    return sorted(results, key=lambda r: r.name)


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Return once every partition of ``topics`` answers a ListOffsets from its leader.

    A topic that was just created shows leaders in its metadata a moment before the broker
    serves them (NOT_LEADER_FOR_PARTITION); this waits that moment out, so the first producer,
    consumer or offset query succeeds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = admin.list_topics(timeout=timeout).topics
            request = {
                TopicPartition(name, partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                for name in topics
                for partition in meta[name].partitions
            }
            if request and len({tp.topic for tp in request}) == len(topics):
                for future in admin.list_offsets(request, request_timeout=timeout).values():
                    future.result()
                return
        except (KafkaException, KeyError):
            pass  # not served yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not served after {timeout:.0f} s: {', '.join(topics)}")
        time.sleep(0.1)


def delete_topics(
    settings: Settings, prefixes: tuple[str, ...], timeout: float = 30.0
) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``; return their names.

    For a run's own topics (a replay's ``replay-<run>-*`` and its worker's changelogs): left
    behind, each run's partitions would pile up in the broker."""
    if not prefixes:
        return []
    admin = admin_client(settings)
    names = sorted(n for n in admin.list_topics(timeout=timeout).topics if n.startswith(prefixes))
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            future.result(timeout)
    return names
