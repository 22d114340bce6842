"""A cache node's two consume loops: the prefetch commands of its slot, and content updates.

Commands start as soon as a lane is free (consumers.gate: requests first), without waiting
for the rest of their batch; one superseded by a newer click of its client, or too old to
help, is shed without work. Their offsets are stored in order, up to the oldest command not
yet done, so a restart redoes only what may not have been done (commands are idempotent).
Every node reads every content update; a record that does not validate is dead-lettered by
the owner of its key alone. Both loops run until ``stop`` is set, each in a task the node's
supervisor watches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from confluent_kafka import Consumer, Message, TopicPartition

from consumers.gate import PREFETCH_CONCURRENCY, RequestGate
from consumers.metrics import COMMANDS
from consumers.node import CacheNode
from consumers.outbox import Outbox
from consumers.ownership import NodeConfig, Ownership
from consumers.sessions import SessionRegistry
from foresight.settings import Settings
from schemas import ContentUpdate, InvalidRecord, PrefetchCommand, decode

log = logging.getLogger(__name__)

#: Commands read from Kafka at once at most: what librdkafka has already fetched, taken in one
#: call instead of one call (and one thread hop) each.
COMMAND_BATCH = 500
#: How long one poll for the next command waits (the loop checks for a stop in between).
COMMAND_POLL_S = 0.1


def _next_batch(consumer: Consumer) -> list[Message]:
    """The next commands: wait for the first (returning at once when it comes: a batch call
    would wait out its timeout for a full batch), then take what else is already fetched."""
    first = consumer.poll(COMMAND_POLL_S)
    if first is None:
        return []
    return [first, *consumer.consume(COMMAND_BATCH - 1, 0)]


def _store_done(
    consumer: Consumer, started: deque[tuple[Message, asyncio.Task[None] | None]]
) -> None:
    """Store the offsets of the commands done, in order, up to the oldest one still running:
    a restart then redoes only what may not have been done (commands are idempotent)."""
    while started and (started[0][1] is None or started[0][1].done()):
        msg, _ = started.popleft()
        if msg.error() is None:
            consumer.store_offsets(msg)


class Intake:
    """The node's consume loops, over its content logic, gate, ownership and outbox."""

    def __init__(
        self,
        settings: Settings,
        config: NodeConfig,
        node: CacheNode,
        *,
        gate: RequestGate,
        ownership: Ownership,
        sessions: SessionRegistry,
        outbox: Outbox,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.config = config
        self.node = node
        self.gate = gate
        self.ownership = ownership
        self.sessions = sessions
        self.outbox = outbox
        self.stop = stop

    async def consume_commands(self) -> None:
        """The prefetch commands of this node's slot, as they come: each starts as soon as one
        of PREFETCH_CONCURRENCY lanes is free, without waiting for the rest of its batch, and
        one superseded by a newer click of its client, or too old to help, is shed without
        work. Offsets are stored in order, up to the oldest command not yet done."""
        topic = self.settings.topic_prefetch_commands
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"{self.settings.worker_group}-node-slot-{self.config.slot}",
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "logger": logging.getLogger("librdkafka"),
            }
        )
        consumer.assign([TopicPartition(topic, self.config.slot)])
        lane = asyncio.Semaphore(PREFETCH_CONCURRENCY)
        started: deque[tuple[Message, asyncio.Task[None] | None]] = deque()
        try:
            while not self.stop.is_set():
                _store_done(consumer, started)
                batch = await asyncio.to_thread(_next_batch, consumer)
                commands = [self._decoded(topic, msg) for msg in batch]
                self.node.note_clicks(c for c in commands if c is not None)
                for msg, command in zip(batch, commands, strict=True):
                    task = None
                    if command is not None and not self._shed(command):
                        await lane.acquire()
                        task = asyncio.create_task(self._command(command, lane))
                    started.append((msg, task))
                    _store_done(consumer, started)
            await asyncio.gather(*(task for _, task in started if task), return_exceptions=True)
            _store_done(consumer, started)
        finally:
            await asyncio.to_thread(consumer.close)

    def _decoded(self, topic: str, msg: Message) -> PrefetchCommand | None:
        """The command a record holds; None for a Kafka error or an invalid record (which is
        dead-lettered and counted)."""
        if msg.error() is not None:
            return None
        try:
            return decode(PrefetchCommand, msg.value() or b"")
        except InvalidRecord as exc:
            self.outbox.dead_letter(topic, msg, exc.reason)
            COMMANDS.labels("invalid").inc()
            return None

    def _shed(self, command: PrefetchCommand) -> bool:
        """Whether the command is shed before it takes a lane (see CacheNode.shed)."""
        outcome = self.node.shed(command, time.time())
        if outcome is None:
            return False
        COMMANDS.labels(outcome).inc()
        return True

    async def _command(self, command: PrefetchCommand, lane: asyncio.Semaphore) -> None:
        try:
            async with self.gate.serving_lanes():
                await self.gate.requests_first()
                outcome = await self.node.on_command(command, time.time())
        except Exception:  # one command's failure must not stop the node's prefetching
            log.exception("prefetch command %s failed", command.command_id)
            outcome = "error"
        finally:
            lane.release()
        COMMANDS.labels(outcome).inc()

    async def consume_updates(self) -> None:
        """Every content update, as it comes: the node sends the new version to the agents it
        owns that hold an older one (CacheNode.on_update)."""
        topic = self.settings.topic_content_updates
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"{self.settings.worker_group}-node-{self.config.node_id}-updates",
                "auto.offset.reset": "latest",
                "logger": logging.getLogger("librdkafka"),
            }
        )
        consumer.subscribe([topic])
        try:
            while not self.stop.is_set():
                for msg in await asyncio.to_thread(consumer.consume, 100, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        update = decode(ContentUpdate, msg.value() or b"")
                    except InvalidRecord as exc:
                        # Every node reads every update; the key's owner alone writes the letter.
                        key = (msg.key() or b"").decode(errors="replace")
                        if self.ownership.owner(key) is None:
                            self.outbox.dead_letter(topic, msg, exc.reason)
                        continue
                    owns = self.ownership.owned(s.client_id for s in self.sessions.all())
                    await self.node.on_update(update, owns=owns)
        finally:
            await asyncio.to_thread(consumer.close)
