"""The Foresight publisher: validated records into Kafka, keyed by client, never silently lost.

An idempotent confluent-kafka producer (acks=all, so a retry never writes a duplicate) with
the murmur2 partitioner, so that a client's events land on the same partition as they would
from the Java or aiokafka clients the Faust workers use. Invalid records are not sent to the
main topic: each goes to the topic's dead-letter topic with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from foresight.kafka import producer_config
from foresight.settings import Settings
from schemas import DeadLetter, Interaction, InvalidRecord, convert, encode

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class DeliveryFailed(RuntimeError):
    """Kafka did not accept some records; ``errors`` says which and why."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} record(s) not delivered: {errors[0]}")
        self.errors = errors


@dataclass
class PublishCounts:
    """What became of the records handed to the publisher."""

    sent: int = 0  # valid records handed to Kafka
    rejected: int = 0  # invalid records, sent to the dead-letter topic instead
    delivered: int = 0  # records Kafka acked (set by flush)
    failed: int = 0  # records Kafka refused
    reasons: list[str] = field(default_factory=list)


class InteractionPublisher:
    """Validate and publish Interaction events; reject bad ones to the dead-letter topic.

    Use it as a context manager, or call ``close()``: closing flushes every pending record
    and raises DeliveryFailed if Kafka refused any of them.

    By default Kafka reports only failed deliveries (a success needs no Python call, which
    keeps the publisher close to a bare producer loop); ``per_record_acks=True`` reports every
    one, for callers that pass ``on_delivery`` to learn when each record is acked.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "publisher",
        topic: str | None = None,
        per_record_acks: bool = False,
        **config: Any,
    ) -> None:
        self.topic = topic or settings.topic_interactions
        self.dead_letter_topic = settings.dead_letter_topic(self.topic)
        self.source = source
        self.counts = PublishCounts()
        self.per_record_acks = per_record_acks
        self._errors: list[str] = []
        config.setdefault("delivery.report.only.error", not per_record_acks)
        self._producer = Producer(producer_config(settings, **config))
        self._decode = msgspec.json.Decoder(Interaction).decode

    def __enter__(self) -> InteractionPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.counts.failed += 1
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def _callback(self, on_delivery: DeliveryCallback | None) -> DeliveryCallback:
        if on_delivery is None:
            return self._on_delivery
        if not self.per_record_acks:
            raise ValueError("on_delivery needs InteractionPublisher(per_record_acks=True)")

        def both(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            on_delivery(err, msg)

        return both

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, callback: DeliveryCallback
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=callback)
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def publish(self, event: Interaction, on_delivery: DeliveryCallback | None = None) -> None:
        """Send one already validated event, keyed by its client_id.

        ``on_delivery`` (optional) is called from ``poll``/``flush`` once Kafka acked or refused
        the record."""
        self._produce(
            self.topic, event.client_id.encode(), encode(event), self._callback(on_delivery)
        )
        self.counts.sent += 1

    def publish_raw(self, raw: bytes | str | dict[str, Any]) -> Interaction | None:
        """Validate and send one event from JSON bytes or a parsed object.

        Returns the event, or None when it was invalid and went to the dead-letter topic.
        """
        # The hot path of every producer: decode straight with the cached typed decoder.
        try:
            event = convert(Interaction, raw) if isinstance(raw, dict) else self._decode(raw)
        except InvalidRecord as exc:
            self.reject(raw, exc.reason)
            return None
        except msgspec.ValidationError as exc:
            self.reject(raw, f"invalid Interaction: {exc}")
            return None
        except msgspec.DecodeError as exc:
            self.reject(raw, f"malformed JSON: {exc}")
            return None
        self._produce(self.topic, event.client_id.encode(), encode(event), self._on_delivery)
        self.counts.sent += 1
        return event

    def publish_batch(self, records: Sequence[bytes | Interaction]) -> int:
        """Validate and send many records at once (JSON bytes or events); return how many
        were valid. Invalid ones go to the dead-letter topic, as with ``publish_raw``.

        One call into librdkafka per batch instead of one per record: the fast path for
        files and replays.
        """
        messages: list[dict[str, Any]] = []
        for record in records:
            if isinstance(record, Interaction):
                event = record
            else:
                try:
                    event = self._decode(record)
                except msgspec.ValidationError as exc:
                    self.reject(record, f"invalid Interaction: {exc}")
                    continue
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                    self.reject(record, f"malformed JSON: {exc}")
                    continue
            messages.append({"key": event.client_id.encode(), "value": encode(event)})
        pending = messages
        while pending:
            self._producer.produce_batch(self.topic, pending, on_delivery=self._on_delivery)
            retry: list[dict[str, Any]] = []
            for message in pending:
                error = message.pop("_error", None)
                if error is None:
                    continue
                if error.code() == KafkaError._QUEUE_FULL:
                    retry.append(message)
                else:  # refused for good: surfaced at flush, like a failed delivery
                    self.counts.failed += 1
                    self._errors.append(f"{self.topic}: {error.str()}")
            self._producer.poll(0.1 if retry else 0)
            pending = retry
        self.counts.sent += len(messages)
        return len(messages)

    def reject(
        self,
        raw: bytes | str | dict[str, Any],
        reason: str,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Send a record that failed validation to the dead-letter topic, with its reason."""
        value = (
            raw
            if isinstance(raw, bytes)
            else (raw.encode() if isinstance(raw, str) else encode(raw))
        )
        # Never produced, so no partition or offset: the letter is all that is left of it.
        letter = DeadLetter.of(
            topic=self.topic,
            partition=None,
            offset=None,
            key=None,
            value=value,
            reason=reason,
            rejected_by=self.source,
            ts=time.time(),
        )
        self._produce(self.dead_letter_topic, None, encode(letter), self._callback(on_delivery))
        self.counts.rejected += 1
        self.counts.reasons.append(letter.reason)
        log.info("rejected record to %s: %s", self.dead_letter_topic, letter.reason)

    def publish_many(self, records: Iterable[bytes | str | dict[str, Any]]) -> PublishCounts:
        for raw in records:
            self.publish_raw(raw)
        return self.counts

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks for up to ``timeout`` seconds."""
        self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every pending record; raise DeliveryFailed if any was refused."""
        remaining = self._producer.flush(timeout)
        self.counts.delivered = self.counts.sent + self.counts.rejected - self.counts.failed
        if remaining:
            self._errors.append(f"{remaining} record(s) still queued after {timeout:.0f} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(errors)

    def close(self, timeout: float = 60.0) -> None:
        self.flush(timeout)


__all__ = [
    "DeliveryFailed",
    "InteractionPublisher",
    "KafkaException",
    "PublishCounts",
    "producer_config",
]
