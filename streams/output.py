"""What the worker writes to Kafka per event, through librdkafka rather than Faust's producer.

A click makes a changelog record of the client's state and a few prefetch commands. Through
Faust each of those is a ``topic.send`` that costs the event loop 120-200 us of Python (its
futures, buffer and aiokafka's batch building, measured on this project's 2-core machine): five
of them per click capped the worker near 1,000 clicks/s. librdkafka (confluent-kafka) takes a
record in a few microseconds and builds, compresses and sends batches on its own threads, off
the GIL's busy path. Faust still consumes, assigns partitions, keeps and recovers the table:
only the writing moves.

:class:`ChangelogTable` is a Faust table whose changelog records go through :class:`Output`;
Faust recovers it from the same changelog topic as before, so a restarted worker resumes
exactly. Delivery is at least once, like Faust's: librdkafka sends within ``linger`` ms and
retries (idempotent, ``acks=all``); the window in which a crash can lose what was produced but
not yet sent is those milliseconds (Faust's own producer has the same window, its buffer).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from confluent_kafka import KafkaError, Message, Producer

from foresight.kafka import producer_config
from foresight.settings import Settings
from streams import metrics

log = logging.getLogger(__name__)


def _delivered(err: KafkaError | None, msg: Message) -> None:
    """librdkafka's final word on a record (called from ``poll``, on the loop's thread)."""
    if err is None:
        metrics.DELIVERIES.labels("delivered").inc()
        return
    metrics.DELIVERIES.labels("failed").inc()
    log.error("kafka did not take a record for %s (key %r): %s", msg.topic(), msg.key(), err)


class Output:
    """One librdkafka producer for a worker's changelog records, commands and alerts."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(
            producer_config(
                settings,
                **{"linger.ms": settings.worker_linger_ms, "on_delivery": _delivered},
            )
        )

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Queue a record (never blocks: librdkafka's queue holds 100,000 by default)."""
        if partition is None:
            self._producer.produce(topic, value, key)
        else:
            self._producer.produce(topic, value, key, partition)

    def poll(self) -> int:
        """Serve the delivery reports waiting; returns how many records are still queued."""
        self._producer.poll(0)
        return len(self._producer)

    def flush(self, timeout: float) -> int:
        """Send what is queued, waiting at most ``timeout`` s; returns what is left."""
        left: int = self._producer.flush(timeout)
        return left


class ChangelogTable(faust.Table[bytes, bytes]):
    """A Faust table whose changelog records go through an :class:`Output` (see the module's
    docstring). Keys and values are bytes already (the raw codec): nothing to serialise."""

    output: Output | None = None

    def on_key_set(self, key: Any, value: Any) -> None:
        """Faust's hook for ``table[key] = value``: the changelog record of the change, on
        the partition of the event being processed (as Faust's own hook sends it)."""
        assert self.output is not None, "ChangelogTable.output is set before the worker starts"
        topic = self.changelog_topic.get_topic_name()
        self.output.send(topic, key, value, self.partition_for_key(key))
