"""Click-to-push latency through the whole system, and the cache node's Cassandra write rate.

Starts the origin, a worker and a cache node as real processes on the local Kafka and
Cassandra, connects agents over WebSockets, warms the model with real sessions, then publishes
clicks for the agents at a fixed rate. Each push carries the command id the worker derived
from (client, item, event), so every push is matched to the exact click that caused it;
click-to-push is the time from publishing that click to the agent receiving the push.
The write rate is measured on the node's own store code (prepared statements, asyncio).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from consumers.store import ContentStore, StoredVersion
from foresight import tokens
from foresight.cassandra import connect
from foresight.migrate import migrate
from foresight.settings import Settings
from foresight.stack import free_port, sigterm_as_ctrl_c
from foresight.topics import create_topics
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction
from schemas.protocol import Hello, Push, decode_from_node, encode_message
from streams.engine import command_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"
SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"


def _env(settings: Settings) -> dict[str, str]:
    return (
        dict(os.environ)
        | settings.model_copy(update={"agent_token_secrets": [SECRET]}).as_environment()
    )


def _wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and json.loads(response.read()).get("ready", True):
                    return
        except (OSError, ValueError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer")


def _wait_processed(port: int, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                ok = line.startswith('foresight_worker_events_total{outcome="ok"')
                if ok and float(line.split()[-1]) >= count:
                    return
        time.sleep(0.5)
    raise TimeoutError("the worker did not finish the warm-up")


def _worker_totals(port: int) -> dict[str, float]:
    """The worker's consume-lag and step histograms' sums and counts, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(("foresight_worker_consume_lag_seconds_", "foresight_worker_step_"))
    }


def _worker_view(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The worker's own view of a run: mean ms from a click's Kafka timestamp to the worker
    starting on it, and mean ms of its engine step."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    count = delta("foresight_worker_consume_lag_seconds_count") or 1.0
    return {
        "worker_consume_lag_ms_mean": round(
            delta("foresight_worker_consume_lag_seconds_sum") / count * 1000, 2
        ),
        "worker_step_ms_mean": round(delta("foresight_worker_step_seconds_sum") / count * 1000, 3),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _agent(
    url: str, client: str, pushes: list[tuple[str, str, str, float]], stop: asyncio.Event
) -> None:
    token = tokens.issue(SECRET, client, 3600, time.time())
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{url}/v1/agents/ws", headers={"Authorization": f"Bearer {token}"}
        ) as ws,
    ):
        await ws.send_str(encode_message(Hello(client_id=client, agent="bench/1")).decode())
        while not stop.is_set():
            try:
                frame = await ws.receive(timeout=0.5)
            except TimeoutError:
                continue
            if frame.type != aiohttp.WSMsgType.TEXT:
                return
            message = decode_from_node(frame.data)
            if isinstance(message, Push) and message.command_id:
                pushes.append((client, message.command_id, message.content_id, time.time()))


async def _run_rate(
    settings: Settings, node_url: str, rate: int, seconds: float, sessions: list[list[Interaction]]
) -> dict[str, Any]:
    clients = [f"bench-{rate}-{i}" for i in range(len(sessions))]
    pushes: list[tuple[str, str, str, float]] = []
    stop = asyncio.Event()
    agents = [asyncio.create_task(_agent(node_url, c, pushes, stop)) for c in clients]
    await asyncio.sleep(2.0)  # every agent connected and welcomed
    published: list[tuple[Interaction, float]] = []
    config: dict[str, Any] = {"linger.ms": 0}  # each click goes out at once
    publisher = InteractionPublisher(settings, source="bench", **config)
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        i = n % len(clients)
        source = sessions[i][(n // len(clients)) % len(sessions[i])]
        event = Interaction(
            event_id=f"b{rate}-{n}",
            client_id=clients[i],
            content_id=source.content_id,
            kind="click",
            ts=time.time(),
        )
        publisher.publish(event)
        published.append((event, time.time()))
        delay = start + (n + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif n % 200 == 0:
            await asyncio.sleep(0)
    achieved = total / (time.perf_counter() - start)
    publisher.flush()
    await asyncio.sleep(5.0)  # the last pushes arrive
    stop.set()
    await asyncio.gather(*agents, return_exceptions=True)
    # When each command reached Kafka (its CreateTime), to split the latency in two.
    commanded = await asyncio.to_thread(_command_times, settings)
    by_client: dict[str, list[tuple[Interaction, float]]] = {}
    for event, at in published:
        by_client.setdefault(event.client_id, []).append((event, at))
    latencies: list[float] = []
    worker_ms: list[float] = []
    node_ms: list[float] = []
    for client, cid, item, received in pushes:
        for event, at in reversed(by_client.get(client, [])):
            # The worker's command id is sha256(client, item, event id): find the click.
            if at <= received and command_id(client, item, event.event_id) == cid:
                latencies.append((received - at) * 1000)
                if cid in commanded:
                    worker_ms.append((commanded[cid] - at) * 1000)
                    node_ms.append((received - commanded[cid]) * 1000)
                break
    return {
        "rate": rate,
        "achieved_rate": round(achieved),
        "events": total,
        "pushes": len(pushes),
        "matched_pushes": len(latencies),
        "click_to_push_ms": {
            "p50": round(_percentile(latencies, 0.5), 2) if latencies else None,
            "p99": round(_percentile(latencies, 0.99), 2) if latencies else None,
            "mean": round(statistics.fmean(latencies), 2) if latencies else None,
        },
        "click_to_command_ms_p50": round(_percentile(worker_ms, 0.5), 2) if worker_ms else None,
        "command_to_push_ms_p50": round(_percentile(node_ms, 0.5), 2) if node_ms else None,
    }


def _command_times(settings: Settings) -> dict[str, float]:
    """command id -> the time the worker's command reached Kafka (CreateTime, seconds)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"bench-probe-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_prefetch_commands])
    times: dict[str, float] = {}
    idle = time.monotonic()
    try:
        while time.monotonic() - idle < 3.0:
            batch = consumer.consume(1000, timeout=0.5)
            for msg in batch:
                value = msg.value()
                if msg.error() is None and value is not None:
                    times[json.loads(value)["command_id"]] = msg.timestamp()[1] / 1000.0
            if batch:
                idle = time.monotonic()
    finally:
        consumer.close()
    return times


async def _cassandra_writes(settings: Settings, ops: int) -> float:
    cluster, session = await asyncio.to_thread(connect, settings, settings.cassandra_keyspace)
    try:
        store = ContentStore(session, settings.cassandra_keyspace)
        body = b"x" * 2048
        item = StoredVersion("bench-item", 1, "0" * 64, '"e"', "text/html", len(body), body)
        start = time.perf_counter()
        await asyncio.gather(*(store.record_holding(f"bench-client-{n}", item) for n in range(ops)))
        elapsed = time.perf_counter() - start
        return 2 * ops / elapsed  # each holding is two writes (both indexes)
    finally:
        await asyncio.to_thread(cluster.shutdown)


@sigterm_as_ctrl_c()  # SIGTERM too ends in the `finally` that stops the children
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument(
        "--warm",
        type=int,
        default=20_000,
        help="Most recent training clicks the worker learns first.",
    )
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    base = Settings()
    with tempfile.TemporaryDirectory() as state:
        origin_port, node_port, worker_port = free_port(), free_port(), free_port()
        settings = base.with_topic_prefix(f"e2e-{tag}").model_copy(
            update={
                "cassandra_keyspace": f"e2e_{tag}",
                "worker_group": f"e2e-{tag}",
                "worker_web_port": worker_port,
                "origin_port": origin_port,
                "origin_latency_ms": 0.0,
                "origin_url_template": f"http://127.0.0.1:{origin_port}/content/{{content_id}}",
                "cache_node_base_port": node_port,
                "state_dir": Path(state),
                "snapshot_interval_s": 3600.0,
                "prefetch_command_slots": 1,
            }
        )
        create_topics(settings)
        migrate(settings)
        env = _env(settings)
        logs = Path(state)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "foresight", *cmd],
                env=env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for name, cmd in (
                ("origin", ["origin"]),
                ("node", ["cache-node", "--node-id", "0"]),
                ("worker", ["worker", "-l", "warning"]),
            )
        ]
        try:
            for port in (origin_port, node_port, worker_port):
                _wait(f"http://127.0.0.1:{port}/healthz")
            train = sorted(read_yoochoose(DATA / "train_full.tsv"), key=lambda e: e.ts)
            train = train[-args.warm :]
            with InteractionPublisher(settings) as publisher:
                publisher.publish_batch(train)
            _wait_processed(worker_port, len(train))
            test = sorted(read_yoochoose(DATA / "test.tsv"), key=lambda e: e.ts)
            by_session: dict[str, list[Interaction]] = {}
            for event in test:
                by_session.setdefault(event.client_id, []).append(event)
            sessions = sorted(by_session.values(), key=len, reverse=True)[: args.agents]
            runs = []
            for rate in (200, 2000):
                before = _worker_totals(worker_port)
                node_url = f"http://127.0.0.1:{node_port}"
                run = asyncio.run(_run_rate(settings, node_url, rate, args.seconds, sessions))
                runs.append(run | _worker_view(before, _worker_totals(worker_port)))
            writes = asyncio.run(_cassandra_writes(settings, 20_000))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
    print(
        json.dumps(
            {
                "bench": "e2e",
                "runs": runs,
                "cassandra_writes_per_s": round(writes),
                "goals": {"p50_ms_at_200": 10, "p99_ms_at_200": 50, "cassandra_writes_per_s": 8000},
                "agents": args.agents,
                "load_average": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
