"""What bench/e2e.py reads while it runs, and the figures it makes of it.

A :class:`Snapshot` is the worker's and the node's /metrics pages and the CPU seconds each
process used so far; two of them give a window's rates (:func:`window_figures`). The lag after
a window comes from the worker's handled-offsets gauge against the topic's end offsets, and the
node's commands counter against the commands the worker sent (:func:`wait_drained`). Pushes are
matched to the clicks that caused them by command id (:func:`match_pushes`).
"""

from __future__ import annotations

import bisect
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition

from foresight.replay.measure import metric_sum, read_metrics
from foresight.settings import Settings
from foresight.stack import http_text
from streams.engine import command_id

#: After the last click, how long the worker, then the node, may take to catch up before the
#: run stops waiting (and reports no lag for that rate).
DRAIN_TIMEOUT_S = 120.0
#: How often the catch-up is polled: the lags' resolution. Each poll renders the worker's
#: /metrics (a few ms of its CPU), so not much more often.
DRAIN_POLL_S = 0.1

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Run:
    """A running origin, worker and node: their settings, where they answer, and the
    processes whose CPU a window accounts for (these, the bench, Kafka and Cassandra)."""

    settings: Settings
    worker_url: str
    node_url: str
    processes: dict[str, psutil.Process]


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    worker: Metrics
    node: Metrics
    cpu_s: dict[str, float]  # per process, and the machine's busy seconds in all


def snapshot(run: Run) -> Snapshot:
    """Now: the worker's and the node's metrics and every process's CPU seconds so far (the
    machine's: busy seconds of every core, whoever used them)."""
    cpu: dict[str, float] = {}
    for name, process in run.processes.items():
        try:
            times = process.cpu_times()
            cpu[name] = times.user + times.system
        except psutil.Error:
            pass
    machine = psutil.cpu_times()
    cpu["machine"] = sum(machine) - machine.idle - machine.iowait
    return Snapshot(
        time.monotonic(),
        read_metrics(http_text(f"{run.worker_url}/metrics")),
        read_metrics(http_text(f"{run.node_url}/metrics")),
        cpu,
    )


def window_figures(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Rates over a window from the processes' own counters, and CPU seconds per process."""
    seconds = max(after.at - before.at, 1e-9)

    def rate(side: str, name: str, **labels: str) -> float:
        was, now = getattr(before, side), getattr(after, side)
        return (metric_sum(now, name, **labels) - metric_sum(was, name, **labels)) / seconds

    writes = {
        statement: round(
            rate("node", "foresight_node_cassandra_seconds_count", statement=statement)
        )
        for statement in sorted(
            dict(labels)["statement"]
            for name, labels in after.node
            if name == "foresight_node_cassandra_seconds_count"
            and not dict(labels)["statement"].startswith("select")
        )
    }
    outcomes = {
        outcome: round(rate("node", "foresight_node_commands_total", outcome=outcome), 1)
        for outcome in sorted(
            dict(labels)["outcome"]
            for name, labels in after.node
            if name == "foresight_node_commands_total"
        )
    }
    cpu = {k: round(v - before.cpu_s.get(k, 0.0), 2) for k, v in after.cpu_s.items()}
    cpu["others"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 2)
    return {
        "window_s": round(seconds, 2),
        "worker_events_per_s": round(
            rate("worker", "foresight_worker_events_total", topic="interactions")
        ),
        "worker_commands_per_s": round(rate("worker", "foresight_worker_prefetch_commands_total")),
        # The abuse guard's verdicts on the bench's own agents: no prefetches for these.
        "worker_flagged_clients": round(
            rate("worker", "foresight_worker_security_alerts_total") * seconds
        ),
        "worker_blocked_events_per_s": round(
            rate("worker", "foresight_worker_blocked_events_total"), 1
        ),
        "node_commands_per_s": round(rate("node", "foresight_node_commands_total")),
        "node_commands_per_s_by_outcome": {k: v for k, v in outcomes.items() if v},
        "node_cassandra_write_requests_per_s": sum(writes.values()),
        "node_cassandra_write_requests_per_s_by_statement": writes,
        "cpu_s": cpu,
    }


def worker_view(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """The worker's own view: mean ms from a click's Kafka timestamp to the worker starting on
    it, and mean ms of its engine step."""

    def delta(name: str) -> float:
        return metric_sum(after.worker, name) - metric_sum(before.worker, name)

    count = delta("foresight_worker_consume_lag_seconds_count") or 1.0
    return {
        "worker_consume_lag_ms_mean": round(
            delta("foresight_worker_consume_lag_seconds_sum") / count * 1000, 2
        ),
        "worker_step_ms_mean": round(delta("foresight_worker_step_seconds_sum") / count * 1000, 3),
    }


def handled_offsets(metrics: Metrics) -> dict[int, int]:
    """The worker's next offset to handle per interactions partition (its gauge)."""
    return {
        int(dict(labels)["partition"]): int(value)
        for (name, labels), value in metrics.items()
        if name == "foresight_worker_handled_offset"
    }


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition of ``topic``: the offset its next record will get."""
    consumer = _probe(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def wait_drained(
    run: Run, end: Mapping[int, int], stopped: float
) -> tuple[float | None, float | None]:
    """Seconds from ``stopped`` (monotonic) until the worker handled every click up to ``end``,
    then until the node handled every command the worker sent; None: not within the timeout."""
    deadline = stopped + DRAIN_TIMEOUT_S
    worker_lag = node_lag = None
    while worker_lag is None and time.monotonic() < deadline:
        handled = handled_offsets(read_metrics(http_text(f"{run.worker_url}/metrics")))
        if all(handled.get(p, 0) >= offset for p, offset in end.items()):
            worker_lag = time.monotonic() - stopped
        else:
            time.sleep(DRAIN_POLL_S)
    if worker_lag is None:
        return None, None
    sent = metric_sum(
        read_metrics(http_text(f"{run.worker_url}/metrics")),
        "foresight_worker_prefetch_commands_total",
    )
    while node_lag is None and time.monotonic() < deadline:
        node = read_metrics(http_text(f"{run.node_url}/metrics"))
        if metric_sum(node, "foresight_node_commands_total") >= sent:
            node_lag = time.monotonic() - stopped
        else:
            time.sleep(DRAIN_POLL_S)
    return worker_lag, node_lag


def _probe(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"e2e-probe-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "logger": logging.getLogger("librdkafka"),
        }
    )


def command_times(
    settings: Settings, start: Mapping[int, int], end: Mapping[int, int]
) -> dict[str, float]:
    """command id -> when the worker's command reached Kafka (CreateTime, seconds), for the
    commands between ``start`` and ``end`` offsets."""
    topic = settings.topic_prefetch_commands
    left = {p: end[p] for p in end if end[p] > start.get(p, 0)}
    consumer = _probe(settings)
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in left])
    times: dict[str, float] = {}
    deadline = time.monotonic() + 60
    try:
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                times[json.loads(value)["command_id"]] = msg.timestamp()[1] / 1000.0
                if (msg.offset() or 0) + 1 >= left.get(msg.partition() or 0, 0):
                    left.pop(msg.partition() or 0, None)
    finally:
        consumer.close()
    return times


def match_pushes(
    published: Mapping[str, Sequence[tuple[float, str]]],
    pushes: Sequence[tuple[str, str, str, float]],
    commanded: Mapping[str, float],
) -> tuple[list[float], list[float], list[float]]:
    """Click-to-push, click-to-command and command-to-push ms of every push that matches a
    click: the worker's command id is sha256(client, item, event id), so the click is the
    latest one before the push whose id gives the push's command id. ``published`` holds
    each client's (time published, event id), in time order."""
    total: list[float] = []
    worker: list[float] = []
    node: list[float] = []
    for client, cid, item, received in pushes:
        clicks = published.get(client, ())
        for k in range(bisect.bisect_right(clicks, (received, "\uffff")) - 1, -1, -1):
            at, event_id = clicks[k]
            if command_id(client, item, event_id) == cid:
                total.append((received - at) * 1000)
                if cid in commanded:
                    worker.append((commanded[cid] - at) * 1000)
                    node.append((received - commanded[cid]) * 1000)
                break
    return total, worker, node
