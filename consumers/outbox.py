"""A cache node's Kafka producer: what it publishes, and the acks it owes agents for it.

The node publishes the requests it serves and its agents' views (interactions), its agents'
feedback, the records it refuses (dead letters) and its own ring membership. An agent's view
or request with the agent's id is acked on its socket once Kafka holds it (or the waiting HTTP
request learns that it does): librdkafka's delivery report is the proof.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumers.metrics import ACKS, DEAD_LETTERS, DELIVERIES, EVENTS_OUT, FEEDBACK
from consumers.ownership import NodeConfig
from consumers.sessions import SessionRegistry
from foresight.kafka import producer_config
from foresight.settings import Settings
from schemas import DeadLetter, Interaction, RingMember, encode
from schemas import Feedback as FeedbackRecord
from schemas.protocol import MAX_ACK_IDS, Ack, Feedback, agent_event_id, encode_message
from schemas.records import InteractionKind, MemberState

log = logging.getLogger(__name__)


def _delivery_report(err: KafkaError | None, msg: Message) -> None:
    """librdkafka's final word on each record: a failure here is a record lost for good."""
    if err is None:
        DELIVERIES.labels("delivered").inc()
        return
    DELIVERIES.labels("failed").inc()
    log.error("kafka did not take a record for %s (key %r): %s", msg.topic(), msg.key(), err)


def _answer(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


class Outbox:
    """The node's one producer, and the acks owed to its agents.

    ``on_fatal`` hears of a fatal producer error (idempotence broken: the producer takes no
    record any more), on the event loop.
    """

    def __init__(
        self,
        settings: Settings,
        config: NodeConfig,
        sessions: SessionRegistry,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.sessions = sessions
        self.on_fatal = on_fatal
        #: The node's event loop, once it runs: delivery reports come from librdkafka's
        #: polling thread and are handed to it.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.producer = Producer(
            producer_config(
                settings,
                **{"linger.ms": 1, "on_delivery": _delivery_report, "error_cb": self._kafka_error},
            )
        )
        self._acks: dict[str, list[str]] = {}  # client -> agent ids to ack this loop turn

    def __len__(self) -> int:
        """Records waiting in the producer's queue."""
        return len(self.producer)

    def flush(self, timeout_s: float) -> int:
        """Wait (blocking) up to ``timeout_s`` for Kafka to take what is queued; what is left."""
        return self.producer.flush(timeout_s)

    def _kafka_error(self, err: KafkaError) -> None:
        """Errors of the producer as a whole; a fatal one (idempotence broken) stops producing."""
        if err.fatal():
            log.critical("kafka producer failed for good: %s", err)
            if self.on_fatal is not None and self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.on_fatal, str(err))
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("kafka producer: %s; records wait in its queue", err)
        else:  # one per connection attempt while a broker is away
            log.debug("kafka producer: %s", err)

    def announce(self, state: MemberState) -> None:
        """This node's ring-membership record: up (every heartbeat) or leaving."""
        member = RingMember(
            node_id=self.config.node_id,
            url=self.config.url,
            weight=1.0,
            slot=self.config.slot,
            state=state,
            heartbeat_ts=time.time(),
        )
        self.producer.produce(
            self.settings.topic_ring_membership, key=member.node_id.encode(), value=encode(member)
        )
        self.producer.poll(0)

    def record_request(
        self,
        client_id: str,
        content_id: str,
        kind: InteractionKind = "request",
        ts: float | None = None,
        agent_id: str | None = None,
        *,
        ack: bool = True,
        delivered: asyncio.Future[bool] | None = None,
    ) -> None:
        """Publish what the client asked for (served here, or from its agent's cache).

        With the agent's id for it, the event id is derived from client and id (a copy the
        agent sends again is recognisably the same event), and the agent gets an Ack once
        Kafka holds it (``ack``) on its socket, or ``delivered`` gets Kafka's answer.
        """
        if agent_id is None:
            event_id = f"{self.config.node_id}-{uuid.uuid4().hex}"
        else:
            event_id = agent_event_id(client_id, agent_id)
        event = Interaction(
            event_id=event_id,
            client_id=client_id,
            content_id=content_id,
            kind=kind,
            ts=time.time() if ts is None else ts,
        )
        self.producer.produce(
            self.settings.topic_interactions,
            key=client_id.encode(),
            value=encode(event),
            on_delivery=self._acker(client_id, agent_id if ack else None, delivered),
        )
        self.producer.poll(0)
        EVENTS_OUT.labels(kind).inc()

    def _acker(
        self, client_id: str, agent_id: str | None, delivered: asyncio.Future[bool] | None
    ) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback: acks the agent's id on its socket once Kafka holds the
        interaction, or answers ``delivered``. librdkafka calls it from whichever thread
        polls the producer."""

        def report(err: KafkaError | None, msg: Message) -> None:
            _delivery_report(err, msg)
            if self.loop is None:
                return
            if delivered is not None:
                self.loop.call_soon_threadsafe(_answer, delivered, err is None)
            if err is None and agent_id is not None:
                self.loop.call_soon_threadsafe(self._ack, client_id, agent_id)

        return report

    def _ack(self, client_id: str, agent_id: str) -> None:
        """Batch the acks of one loop turn per client into one frame."""
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._acks.setdefault(client_id, []).append(agent_id)

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for client_id, ids in acks.items():
            session = self.sessions.get(client_id)
            if session is None:  # gone: its agent sends the views again, wherever it is now
                ACKS.labels("agent gone").inc(len(ids))
                continue
            for at in range(0, len(ids), MAX_ACK_IDS):
                session.offer(encode_message(Ack(ids=ids[at : at + MAX_ACK_IDS])))
            ACKS.labels("sent").inc(len(ids))

    def relay_feedback(self, client_id: str, message: Feedback) -> None:
        record = FeedbackRecord(
            client_id=client_id,
            content_id=message.content_id,
            version=message.version,
            outcome=message.outcome,
            latency_ms=message.latency_ms,
            ts=message.ts,
        )
        self.producer.produce(
            self.settings.topic_feedback, key=client_id.encode(), value=encode(record)
        )
        self.producer.poll(0)
        EVENTS_OUT.labels("feedback").inc()
        FEEDBACK.labels(message.outcome).inc()

    def dead_letter(self, topic: str, msg: Any, reason: str) -> None:
        """Send a record that failed validation to its dead-letter topic and count it; the
        letter is bounded (DeadLetter.of), so it fits however big the record was."""
        letter = DeadLetter.of(
            topic=topic,
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            reason=reason,
            rejected_by=self.config.node_id,
            ts=time.time(),
        )
        self.producer.produce(self.settings.dead_letter_topic(topic), value=encode(letter))
        self.producer.poll(0)
        EVENTS_OUT.labels("dead-letter").inc()
        DEAD_LETTERS.labels(topic).inc()
