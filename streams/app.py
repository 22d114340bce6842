"""The Faust app: agents over interactions and feedback, per-client state in a changelogged table.

Run it with ``foresight worker`` or ``faust -A streams.app worker -l info``. The agents are
thin loops: decode (or dead-letter with the reason), read the client's record from the table,
let :class:`streams.engine.Engine` score, learn, predict and plan, write the record back (a
changelog record, so a restarted worker resumes with the same state), and send the prefetch
commands to the prefetch-commands partition of the client's owner in the ring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from typing import Any

import faust
import msgspec
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from foresight.cassandra import CASSANDRA_DOWN, connect
from foresight.membership import MembershipWatcher
from foresight.settings import Settings
from schemas import DeadLetter, Feedback, Interaction, InvalidRecord, decode, encode
from streams import metrics
from streams.engine import ClientRecord, dumps_record, engine_for, loads_record
from streams.guard import dumps as guard_dumps
from streams.guard import loads as guard_loads
from streams.history import ClientHistory, HistoryStore
from streams.output import ChangelogTable, Output
from streams.planner import refill, threshold
from streams.predictor import dumps_global_state, loads_global_state, seen_before
from streams.snapshots import SnapshotStore
from streams.transport import App

log = logging.getLogger(__name__)

#: How often the worker serves librdkafka's delivery reports (they only count and log).
OUTPUT_POLL_S = 0.1


class Runtime:
    """What one worker process holds in memory next to its tables: the global signals, the
    ring, the snapshot store that lets a restarted worker resume them, and the clients'
    history in Cassandra (:mod:`streams.history`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = engine_for(settings)
        self.predictor = self.engine.predictor
        assert self.engine.guard is not None
        self.guard = self.engine.guard
        self.ring = MembershipWatcher(settings)
        self.applied: dict[int, int] = {}  # interactions partition -> last offset applied
        self.snapshot_events = -1  # events in the global signals at the last snapshot
        self.ready = asyncio.Event()  # set once the last snapshot is loaded
        self._cluster: Any = None
        self._store: SnapshotStore | None = None
        self.history: ClientHistory | None = None

    def open_store(self) -> None:
        """Connect to Cassandra and load the group's last snapshot (blocking)."""
        self._cluster, session = connect(self.settings)
        self._store = SnapshotStore(
            session, self.settings.cassandra_keyspace, self.settings.worker_group
        )
        if self.settings.history != "off":
            self.history = ClientHistory(
                HistoryStore(session, self.settings.cassandra_keyspace),
                self.settings.history_queue_size,
                self.settings.history_read_timeout_s,
            )
        snapshot = self._store.load()
        if snapshot is not None:
            parts = msgspec.msgpack.decode(snapshot.data, type=dict[str, bytes])
            self.predictor.signals = loads_global_state(parts["signals"])
            self.guard = self.engine.guard = guard_loads(parts["guard"])
            self.applied = dict(snapshot.offsets)
            self.snapshot_events = self.predictor.signals.events
            log.info(
                "resumed global signals: %d events, offsets %s, taken %s",
                snapshot.events,
                snapshot.offsets,
                snapshot.taken_at,
            )

    def snapshot_payload(self) -> tuple[bytes, dict[int, int], int] | None:
        """Pickle the signals now (in the loop, so no agent changes them meanwhile)."""
        events = self.predictor.signals.events
        if self._store is None or events == self.snapshot_events:
            return None
        data = msgspec.msgpack.encode(
            {
                "signals": dumps_global_state(self.predictor.signals),
                "guard": guard_dumps(self.guard),
            }
        )
        return data, dict(self.applied), events

    def save_snapshot(self, payload: tuple[bytes, dict[int, int], int]) -> None:
        assert self._store is not None
        data, offsets, events = payload
        self._store.save(data, offsets, events)
        self.snapshot_events = events
        log.info("snapshot: %d events, %d bytes, offsets %s", events, len(data), offsets)

    def close(self) -> None:
        self.ring.stop()
        if self._cluster is not None:
            self._cluster.shutdown()


def create_app(settings: Settings) -> faust.App:
    """The worker app for ``settings``; agents, tables and pages are registered on it."""
    datadir = settings.state_dir / f"worker-{settings.worker_id}"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = App(
        settings.worker_group,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store="memory://",
        topic_partitions=settings.interactions_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=0,
        web_port=settings.worker_web_port + settings.worker_id,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        stream_recovery_delay=0.0,
        # A worker that died leaves the group after 10 s, so a replacement takes its
        # partitions quickly (the default is 60 s).
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        producer_acks=-1,
        # A click makes several commands and a changelog record: lingering lets them share
        # produce requests (with 0, one socket write per record took 16 % of the worker in a
        # replay; with 2 ms, 10 %).
        producer_linger=settings.worker_linger_ms / 1000,
        producer_partitioner=None,
    )
    app.fetch_max_wait_ms = settings.worker_fetch_max_wait_ms  # before the transport is made
    app.fetch_min_bytes = settings.worker_fetch_min_bytes
    runtime = Runtime(settings)
    app.foresight_runtime = runtime  # type: ignore[attr-defined]

    def raw_topic(name: str, **kwargs: Any) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            **kwargs,
        )

    interactions = raw_topic(settings.topic_interactions)
    feedback = raw_topic(settings.topic_feedback)
    prefetch_topic = settings.topic_prefetch_commands
    alerts_topic = settings.topic_security_alerts
    dead_letters = {
        topic: raw_topic(settings.dead_letter_topic(topic))
        for topic in (settings.topic_interactions, settings.topic_feedback)
    }
    output = Output(settings)
    # app.Table(...) with our table class (Faust's app.Table builds conf.Table, app-wide).
    clients = ChangelogTable(
        app,
        name="client_state",
        default=None,
        key_type=bytes,  # bytes in, bytes out: the "raw" codec, msgpack inside
        value_type=bytes,
        partitions=settings.interactions_partitions,
        beacon=app.tables.beacon,
    )
    app.tables.add(clients)
    clients.output = output

    def record_of(key: bytes) -> ClientRecord | None:
        raw = clients.get(key)
        return loads_record(raw) if raw else None

    async def record_or_history(key: bytes, client_id: str) -> ClientRecord | None:
        """The table's record, or for a client it holds none of (a new worker group, a
        record lost), one built from the client's profile in Cassandra."""
        record = record_of(key)
        if record is None and runtime.history is not None and settings.history == "restore":
            record = await runtime.history.restore(client_id)
        return record

    async def reject(topic: str, message: Any, reason: str) -> None:
        letter = DeadLetter.of(
            topic=topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            rejected_by=f"worker-{settings.worker_id}",
            ts=time.time(),
        )
        # Keyed by the letter's key (the record's, cut like its value): both always fit.
        await dead_letters[topic].send(key=letter.key, value=encode(letter))
        metrics.DEAD_LETTERS.labels(topic).inc()
        log.warning(
            "dead-lettered %s[%s]@%s: %s", topic, message.partition, message.offset, letter.reason
        )

    # Label lookups once, not per event (prometheus-client's labels() takes a lock and a dict
    # lookup every call; a click touched six of them).
    interactions_ok = metrics.EVENTS_IN.labels("interactions", "ok")
    handled_offset = functools.cache(
        lambda partition: metrics.HANDLED_OFFSET.labels(str(partition))
    )
    commands_out = functools.cache(lambda slot: metrics.COMMANDS_OUT.labels(str(slot)))

    shed_after_s = settings.prefetch_shed_after_s

    def late(received_at: float) -> bool:
        """Whether the worker is so far behind that a prediction for this click would reach
        the node after FORESIGHT_PREFETCH_SHED_AFTER_S, where it would be shed anyway."""
        if shed_after_s is None or time.time() - received_at <= shed_after_s:
            return False
        metrics.SHED_PREDICTIONS.inc()
        return True

    @app.agent(interactions, concurrency=1)
    async def process_interactions(stream: faust.StreamT[bytes]) -> None:
        await runtime.ready.wait()
        async for event in stream.events():
            message = event.message
            metrics.CONSUME_LAG.observe(max(0.0, time.time() - message.timestamp))
            await handle_interaction(message)
            # Applied, dead-lettered or a duplicate: handled. Unlike the committed offsets
            # this moves with every record, and unlike the counters it survives a restart.
            handled_offset(message.partition).set(message.offset + 1)

    async def handle_interaction(message: Any) -> None:
        try:
            interaction = decode(Interaction, message.value or b"")
        except InvalidRecord as exc:
            await reject(settings.topic_interactions, message, exc.reason)
            metrics.EVENTS_IN.labels("interactions", "invalid").inc()
            return
        key = interaction.client_id.encode()
        record = await record_or_history(key, interaction.client_id)
        started = time.perf_counter()
        try:
            step = runtime.engine.on_interaction(
                interaction,
                record,
                runtime.ring.ring(),
                message.partition,
                message.offset,
                received_at=message.timestamp,
                predict=not late(message.timestamp),
            )
        except Exception as exc:  # a bug must not lose the event: dead-letter it
            log.exception("engine failed on %s", interaction.event_id)
            await reject(settings.topic_interactions, message, f"engine error: {exc!r}")
            metrics.EVENTS_IN.labels("interactions", "error").inc()
            return
        metrics.STEP_SECONDS.observe(time.perf_counter() - started)
        runtime.applied[message.partition] = message.offset
        if step.duplicate:
            metrics.EVENTS_IN.labels("interactions", "duplicate").inc()
            return
        clients[key] = dumps_record(step.record)
        if runtime.history is not None:
            runtime.history.remember(interaction, step.record)
        for slot, command in step.commands:
            output.send(prefetch_topic, key, encode(command), slot)
            commands_out(slot).inc()
        if step.alert is not None:
            output.send(alerts_topic, key, encode(step.alert))
            metrics.ALERTS.inc()
        if step.blocked:
            metrics.BLOCKED.inc()
        if step.unrouted:
            metrics.UNROUTED.inc(step.unrouted)
        if step.scored:
            metrics.SCORED.inc()
            metrics.HITS.inc(int(step.hit))
        interactions_ok.inc()

    @app.agent(feedback, concurrency=1)
    async def process_feedback(stream: faust.StreamT[bytes]) -> None:
        await runtime.ready.wait()
        async for event in stream.events():
            message = event.message
            try:
                item = decode(Feedback, message.value or b"")
            except InvalidRecord as exc:
                await reject(settings.topic_feedback, message, exc.reason)
                metrics.EVENTS_IN.labels("feedback", "invalid").inc()
                continue
            key = item.client_id.encode()
            record = await record_or_history(key, item.client_id)
            clients[key] = dumps_record(runtime.engine.on_feedback(item, record))
            metrics.EVENTS_IN.labels("feedback", "ok").inc()
            metrics.FEEDBACK.labels(item.outcome).inc()

    @app.task
    async def start_runtime() -> None:
        level = getattr(app, "foresight_log_level", None)
        if level is not None:
            logging.getLogger().setLevel(level)
        runtime.ring.start()
        await asyncio.to_thread(runtime.open_store)
        runtime.ready.set()

    async def snapshot_now() -> None:
        payload = runtime.snapshot_payload()
        if payload is not None:
            await asyncio.to_thread(runtime.save_snapshot, payload)

    @app.timer(interval=settings.snapshot_interval_s)
    async def periodic_snapshot() -> None:
        # Cassandra down must not stop the worker (a Faust timer's exception crashes the
        # app): the signals stay in memory and the next snapshot carries them.
        try:
            await snapshot_now()
        except CASSANDRA_DOWN as exc:
            metrics.SNAPSHOT_FAILURES.inc()
            log.warning("global-signals snapshot failed, kept for the next one: %r", exc)

    @app.timer(interval=settings.history_flush_interval_s)
    async def flush_history() -> None:
        # What Cassandra does not take is dropped and counted inside: never raises for it.
        if runtime.history is not None:
            await runtime.history.flush()

    @app.on_before_shutdown.connect
    async def final_snapshot(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The consumer has stopped: nothing changes the signals any more.
        left = await asyncio.to_thread(output.flush, 10.0)
        if left:
            log.error("%d records (changelog, commands) not delivered at shutdown", left)
        if runtime.history is not None:
            await runtime.history.flush()
        await snapshot_now()
        runtime.close()

    @app.timer(interval=OUTPUT_POLL_S)
    async def serve_deliveries() -> None:
        metrics.OUTPUT_QUEUE.set(output.poll())

    @app.timer(interval=1.0)
    async def refresh_gauges() -> None:
        metrics.RING_MEMBERS.set(len(runtime.ring.ring()))
        scored = metrics.SCORED._value.get()
        if scored:
            metrics.ONLINE_HR.set(metrics.HITS._value.get() / scored)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        ready = runtime.ready.is_set()
        return web.json(
            {"ready": ready, "ring": len(runtime.ring.ring())}, status=200 if ready else 503
        )

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def owned_here(record: ClientRecord) -> bool:
        """Whether this worker owns the client's partition now (after a rebalance the memory
        store may still hold a copy of a partition that moved away)."""
        actives = app.assignor.assigned_actives()
        return TP(settings.topic_interactions, record.partition) in actives

    @app.page("/clients/{client_id}")
    async def client_view(web: Any, request: Any, client_id: str) -> Any:
        """What the worker knows of one client now: `foresight inspect client` shows it."""
        record = record_of(client_id.encode())
        if record is None or not owned_here(record):
            return web.json({"client_id": client_id, "known": False}, status=404)
        config = runtime.engine.config
        planner = config.planner
        now = time.time()
        explained = runtime.predictor.explain_session(record.session, config.top_k)
        state = record.planner_state()
        bucket = refill(state, now, planner)
        budget = planner.budget_bytes_per_minute
        session = record.session
        newest_first = list(reversed(session.items))
        return web.json(
            {
                "client_id": client_id,
                "known": True,
                "at": now,
                "events": record.events,
                "hits": record.hits,
                # Across sessions (issue 15): a record rebuilt from Cassandra keeps them.
                "sessions": session.sessions,
                "seen_count": session.seen_count,
                "last_seen": session.last_ts,
                "personal": seen_before(session, runtime.predictor.config) is not None,
                "last_items": session.items[-10:],
                # The record keeps the session's clicks and the time of the last one only.
                "last_events": [
                    {"content_id": item, "ts": session.last_ts if n == 0 else None}
                    for n, item in enumerate(newest_first)
                ],
                # Now, from the global signals as they are now; last_prediction was made at
                # the client's last event (and planned the prefetches).
                "predictions": [[e.content_id, e.probability] for e in explained],
                "top_k": [dataclasses.asdict(e) for e in explained],
                "last_prediction": record.last_prediction,
                "threshold": {
                    "value": threshold(state, None, planner),
                    "connection": planner.default_connection,
                    "base": planner.thresholds[planner.default_connection],
                    "offset": record.threshold_offset,
                },
                "threshold_offset": record.threshold_offset,
                "budget": {
                    "tokens": bucket.tokens,
                    "capacity": None if budget is None else float(budget),
                    "refill_per_s": None if budget is None else budget / 60.0,
                },
                "prefetched": [
                    {"content_id": item, "expires_at": expires}
                    for item, expires in sorted(record.prefetched.items(), key=lambda p: p[1])
                    if expires > now
                ],
                "worker": {
                    "id": settings.worker_id,
                    "group": settings.worker_group,
                    "topic": settings.topic_interactions,
                    "partition": record.partition,
                    "offset": record.offset,
                },
                "partition": record.partition,
                "offset": record.offset,
            }
        )

    return app


app = create_app(Settings())
