"""Prediction throughput, four ways in one run, printed as one JSON object.

1. The predictor alone: the worker's per-event step (score, learn, predict top 5, plan) in
   this process, over real yoochoose events, no Kafka.
2. The Faust worker on the real broker: a `foresight worker` process (started through
   foresight.stack) consuming the same events from Kafka, timed from its first processed event
   to its last (from its /metrics): the whole step for each, its commands sent to a cache node
   announced in its ring, no prediction shed for lag.
3. A plain confluent-kafka consume-and-produce loop on the same broker, a poll after every
   produce: what Kafka alone costs a Python process per event.
4. The same loop in batches: consume(1000), produce without a poll per record, one flush at
   the end: the physical limit of the language's Kafka client on this machine.

The two loops read the same events, LOOP_COPIES times over.

The worker's figure is also given as a ratio to each loop. It profiles the predictor and lists
where the time goes. The run's topics (and the worker's keyspace) are dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from foresight.kafka import producer_config
from foresight.migrate import drop_keyspaces, migrate
from foresight.replay.measure import metric_sum, read_metrics
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from foresight.stack import Child, ChildFailed, Stack, free_port, http_text, sigterm_as_ctrl_c
from foresight.topics import create_topics, delete_topics
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction, RingMember, encode
from streams.engine import ClientRecord, Engine, dumps_record
from streams.guard import AbuseGuard
from streams.predictor import Foresight

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"
RING = HashRing([Member(f"node-{i}", slot=i) for i in range(4)])
#: A bare loop gets through the 13,568 test clicks in about a second, most of which is the
#: consumer's first fetches (measured: 13 k/s over one copy, 100 k/s consuming over eight):
#: the loops read the events this many times over, so that they time the client, not that.
LOOP_COPIES = 8


def load_events(limit: int) -> list[Interaction]:
    events = sorted(read_yoochoose(DATA / "test.tsv"), key=lambda e: (e.ts, e.event_id))
    return events[:limit]


def predictor_alone(events: list[Interaction]) -> tuple[float, float, list[int]]:
    """Events/s through the engine step (with the guard), per-event microseconds, and the
    size in bytes of every client's stored record afterwards."""
    engine = Engine(Foresight(), guard=AbuseGuard())
    records: dict[str, ClientRecord] = {}
    start = time.perf_counter()
    for offset, event in enumerate(events):
        step = engine.on_interaction(event, records.get(event.client_id), RING, 0, offset)
        records[event.client_id] = step.record
    elapsed = time.perf_counter() - start
    sizes = [len(dumps_record(record)) for record in records.values()]
    return len(events) / elapsed, elapsed / len(events) * 1e6, sizes


def profile(events: list[Interaction], top: int = 12) -> list[dict[str, Any]]:
    engine = Engine(Foresight(), guard=AbuseGuard())
    records: dict[str, ClientRecord] = {}
    profiler = cProfile.Profile()
    profiler.enable()
    for offset, event in enumerate(events):
        step = engine.on_interaction(event, records.get(event.client_id), RING, 0, offset)
        records[event.client_id] = step.record
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, _line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{name}",
                "self_share": tt / total,
                "cumulative_share": ct / total,
            }
        )
    rows.sort(key=lambda r: -float(r["self_share"]))
    return [
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:top]
    ]


def announce_node(settings: Settings) -> None:
    """A cache node in the worker's ring (no process behind it: nothing reads its commands),
    so the worker routes and sends every command as it would in production."""
    member = RingMember(
        node_id="bench-node",
        url="http://127.0.0.1:9",
        weight=1.0,
        slot=0,
        state="up",
        heartbeat_ts=time.time(),
    )
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic_ring_membership, key=b"bench-node", value=encode(member))
    producer.flush(10)


def through_worker(settings: Settings, events: list[Interaction], logs: Path) -> float:
    """Events/s through a real worker process, from its first processed event to its last
    (the events wait in Kafka before it starts, so its start-up is not counted)."""
    create_topics(settings)
    migrate(settings)
    with InteractionPublisher(settings) as publisher:
        publisher.publish_batch(events)
    announce_node(settings)
    url = f"http://127.0.0.1:{settings.worker_web_port}"
    env = dict(os.environ) | settings.as_environment()
    with Stack() as stack:
        worker = Child(
            "worker", ["worker", "-l", "warning"], f"{url}/healthz", logs / "worker.log", env
        )
        stack.start(worker, wait=False)
        first_at: float | None = None
        first_done = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if not worker.running:
                raise ChildFailed(f"the worker exited; its log:\n{worker.tail()}")
            try:
                metrics = read_metrics(http_text(f"{url}/metrics"))
            except OSError:  # not listening yet
                metrics = {}
            done = metric_sum(metrics, "foresight_worker_events_total", outcome="ok")
            now = time.monotonic()
            if done > 0 and first_at is None:
                first_at, first_done = now, done
            if done >= len(events):
                assert first_at is not None
                return (done - first_done) / max(now - first_at, 1e-9)
            time.sleep(0.05)
    raise TimeoutError("the worker did not finish in 600 s")


def _consumer(settings: Settings, group: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic_interactions])
    return consumer


def plain_loop(settings: Settings, count: int) -> float:
    """Events/s through consume -> produce with confluent-kafka, no processing, a poll after
    every produce (how a loop that wants its delivery reports promptly is written)."""
    consumer = _consumer(settings, f"{settings.worker_group}-plain")
    producer = Producer(producer_config(settings))
    seen = 0
    start: float | None = None
    try:
        while seen < count:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error() is not None:
                    continue
                if start is None:
                    start = time.perf_counter()
                producer.produce(settings.topic_prefetch_commands, key=msg.key(), value=msg.value())
                producer.poll(0)
                seen += 1
        producer.flush(60)
        assert start is not None
        return seen / (time.perf_counter() - start)
    finally:
        consumer.close()


def batch_loop(settings: Settings, count: int) -> float:
    """Events/s through consume(1000) -> produce with no poll per record and one flush at the
    end: the most this machine's Python gets out of its Kafka client, the physical limit."""
    consumer = _consumer(settings, f"{settings.worker_group}-batch")
    producer = Producer(producer_config(settings))
    topic = settings.topic_prefetch_commands
    seen = 0
    start: float | None = None
    try:
        while seen < count:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            if batch and start is None:
                start = time.perf_counter()
            for msg in batch:
                if msg.error() is not None:
                    continue
                try:
                    producer.produce(topic, key=msg.key(), value=msg.value())
                except BufferError:  # the local queue is full: serve it, then go on
                    producer.poll(0.1)
                    producer.produce(topic, key=msg.key(), value=msg.value())
                seen += 1
        producer.flush(60)
        assert start is not None
        return seen / (time.perf_counter() - start)
    finally:
        consumer.close()


def bare_loops(settings: Settings, events: list[Interaction], copies: int) -> tuple[float, float]:
    """The plain and the batch loop over ``copies`` copies of the events, each loop in a
    consumer group of its own."""
    create_topics(settings)
    with InteractionPublisher(settings) as publisher:
        for _ in range(copies):
            publisher.publish_batch(events)
    count = len(events) * copies
    return plain_loop(settings, count), batch_loop(settings, count)


@sigterm_as_ctrl_c()  # SIGTERM too ends in the `finally` that drops the run's topics
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=13_568)
    parser.add_argument(
        "--loop-copies",
        type=int,
        default=LOOP_COPIES,
        help="Copies of the events the bare loops read (see LOOP_COPIES).",
    )
    args = parser.parse_args()
    events = load_events(args.events)
    tag = uuid.uuid4().hex[:8]
    base = Settings()
    load_at_start = os.getloadavg()[0]
    alone, micros, sizes = predictor_alone(events)
    with tempfile.TemporaryDirectory() as state:
        worker = base.with_topic_prefix(f"bench-{tag}").model_copy(
            update={
                "cassandra_keyspace": f"bench_{tag}",  # its snapshots: not in the main keyspace
                "worker_group": f"bench-{tag}",  # its changelogs: bench-<tag>-*
                "worker_web_port": free_port(),
                "state_dir": Path(state),
                # The whole step for every event: no prediction shed for lag (the events wait
                # in Kafka before the worker starts, so it starts far behind) ...
                "prefetch_shed_after_s": None,
                # ... and its commands sent, to a cache node announced once for the run.
                "ring_heartbeat_timeout_s": 3600.0,
            }
        )
        loops = base.with_topic_prefix(f"bench-{tag}-loops").model_copy(
            update={"worker_group": f"bench-{tag}-loops"}
        )
        try:
            faust = through_worker(worker, events, Path(state))
            plain, batch = bare_loops(loops, events, args.loop_copies)
        finally:
            delete_topics(base, (f"bench-{tag}-",))
            drop_keyspaces(base, f"bench_{tag}")
    result = {
        "bench": "predict",
        "events": len(events),
        "loop_events": len(events) * args.loop_copies,
        "events_per_s": {
            "predictor_alone": round(alone),
            "faust_worker": round(faust),
            "plain_consume_produce": round(plain),
            "batch_consume_produce": round(batch),
        },
        "faust_worker_ratio": {
            "to_plain_loop": round(faust / plain, 3),
            "to_batch_loop": round(faust / batch, 3),
        },
        "predictor_us_per_event": round(micros, 1),
        "client_record_bytes": {
            "mean": round(sum(sizes) / len(sizes)),
            "max": max(sizes),
            "goal_max": 4096,
        },
        "goal_predictor_events_per_s_per_core": 30_000,
        "profile_top_self_time": profile(events[:4000]),
        "topic_prefix": f"bench-{tag}",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
