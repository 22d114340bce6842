"""Prediction throughput, three ways in one run, printed as one JSON object.

1. The predictor alone: the worker's per-event step (score, learn, predict top 5, plan) in
   this process, over real yoochoose events, no Kafka.
2. The Faust worker on the real broker: a `foresight worker` process consuming the same events
   from Kafka, timed from its first processed event to its last (from its /metrics).
3. A plain confluent-kafka consume-and-produce loop on the same broker: what Kafka alone
   costs a Python process per event.

It also profiles the predictor and lists where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from foresight.kafka import producer_config
from foresight.migrate import migrate
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from foresight.stack import free_port, sigterm_as_ctrl_c
from foresight.topics import create_topics
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction
from streams.engine import ClientRecord, Engine, dumps_record
from streams.guard import AbuseGuard
from streams.predictor import Foresight

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"
RING = HashRing([Member(f"node-{i}", slot=i) for i in range(4)])


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


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            ours = line.startswith((name + " ", name + "{"))
            if ours and ('outcome="ok"' in line or "{" not in line):
                return float(line.split()[-1])
    return 0.0


def through_worker(base: Settings, events: list[Interaction]) -> float:
    """Events/s through a real worker process, from first to last processed event."""
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as state:
        settings = base.with_topic_prefix(f"bench-{tag}").model_copy(
            update={
                "worker_group": f"bench-{tag}",
                "worker_web_port": free_port(),
                "state_dir": Path(state),
            }
        )
        create_topics(settings)
        migrate(settings)
        env = dict(os.environ) | settings.as_environment()
        with InteractionPublisher(settings) as publisher:
            publisher.publish_batch(events)  # already waiting when the worker starts
        worker = subprocess.Popen(
            [sys.executable, "-m", "foresight", "worker", "-l", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = settings.worker_web_port
        try:
            first_at: float | None = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    done = _metric(port, "foresight_worker_events_total")
                except OSError:
                    done = 0.0
                now = time.monotonic()
                if done > 0 and first_at is None:
                    first_at, first_done = now, done
                if done >= len(events):
                    assert first_at is not None
                    return (done - first_done) / max(now - first_at, 1e-9)
                time.sleep(0.05)
            raise TimeoutError("the worker did not finish in 600 s")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()


def plain_loop(base: Settings, events: list[Interaction]) -> float:
    """Events/s through consume -> produce with confluent-kafka, no processing."""
    tag = uuid.uuid4().hex[:8]
    settings = base.with_topic_prefix(f"bench-{tag}")
    create_topics(settings)
    with InteractionPublisher(settings) as publisher:
        publisher.publish_batch(events)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"bench-{tag}",
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(producer_config(settings))
    consumer.subscribe([settings.topic_interactions])
    seen = 0
    start: float | None = None
    try:
        while seen < len(events):
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


@sigterm_as_ctrl_c()  # SIGTERM too ends in the `finally` that stops the worker
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=13_568)
    args = parser.parse_args()
    events = load_events(args.events)
    settings = Settings()
    alone, micros, sizes = predictor_alone(events)
    result = {
        "bench": "predict",
        "events": len(events),
        "events_per_s": {
            "predictor_alone": round(alone),
            "faust_worker": round(through_worker(settings, events)),
            "plain_consume_produce": round(plain_loop(settings, events)),
        },
        "predictor_us_per_event": round(micros, 1),
        "client_record_bytes": {
            "mean": round(sum(sizes) / len(sizes)),
            "max": max(sizes),
            "goal_max": 4096,
        },
        "goal_predictor_events_per_s_per_core": 30_000,
        "profile_top_self_time": profile(events[:4000]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
