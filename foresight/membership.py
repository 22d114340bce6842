"""Follow the ring-membership topic and keep the current ring, in every process.

Each process reads the whole compacted topic from the beginning with its own consumer (no
consumer group: every process must see every node), folds the records with
:class:`foresight.ring.RingMembership`, and answers ``ring()`` from the latest fold. Invalid
records are counted and skipped, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from foresight.ring import HashRing, InvalidMembershipRecord, Member, RingMembership
from foresight.settings import Settings
from schemas import InvalidRecord, RingMember, decode, encode

log = logging.getLogger(__name__)


def member_record(member: RingMember) -> dict[str, Any]:
    """The plain mapping the ring's fold takes."""
    return msgspec.to_builtins(member)  # type: ignore[no-any-return]


class MembershipWatcher:
    """A background thread that folds ring-membership records into the current ring."""

    def __init__(
        self,
        settings: Settings,
        *,
        heartbeat_timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._topic = settings.topic_ring_membership
        self._timeout = heartbeat_timeout_s or settings.ring_heartbeat_timeout_s
        self._clock = clock
        self._fold = RingMembership(slots=settings.prefetch_command_slots)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ring-membership", daemon=True)
        self.invalid = 0
        self.version = 0  # bumps on every applied record

    def start(self) -> MembershipWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @property
    def running(self) -> bool:
        """Whether the reader thread is still folding records (it ends on stop() or an error)."""
        return self._thread.is_alive()

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        """Whether the topic was read to its end once (the ring is then complete)."""
        return self._caught_up.wait(timeout)

    def ring(self) -> HashRing:
        with self._lock:
            return self._fold.ring(self._clock(), self._timeout)

    def members(self) -> list[Member]:
        return list(self.ring().members)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._settings.kafka_bootstrap_servers,
                "group.id": "foresight-ring-reader",  # never commits: each reader starts over
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        try:
            meta = consumer.list_topics(self._topic, timeout=30).topics[self._topic]
            partitions = sorted(meta.partitions)
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
            at_end: set[int] = set()
            while not self._stop.is_set():
                for msg in consumer.consume(100, timeout=0.2):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add(msg.partition() or 0)
                            if len(at_end) >= len(partitions):
                                self._caught_up.set()
                        continue
                    self._apply(msg.key(), msg.value())
        except Exception:
            log.exception("ring-membership reader stopped")
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        node_id = key.decode("utf-8", "replace") if key else ""
        try:
            record = None if value is None else member_record(decode(RingMember, value))
            with self._lock:
                self._fold.apply(node_id, record, self._clock())
                self.version += 1
        except (InvalidRecord, InvalidMembershipRecord) as exc:
            self.invalid += 1
            log.warning("skipped ring-membership record for %r: %s", node_id, exc)


def announce(producer: Any, settings: Settings, member: RingMember) -> None:
    """Publish one membership record (join, heartbeat or leave) keyed by node id."""
    producer.produce(
        settings.topic_ring_membership, key=member.node_id.encode(), value=encode(member)
    )
