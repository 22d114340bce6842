"""The stream worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter(
    "foresight_worker_events_total", "Records consumed by the worker", ["topic", "outcome"]
)
DEAD_LETTERS = Counter(
    "foresight_worker_dead_letters_total", "Records sent to a dead-letter topic", ["topic"]
)
COMMANDS_OUT = Counter(
    "foresight_worker_prefetch_commands_total", "Prefetch commands sent", ["slot"]
)
UNROUTED = Counter(
    "foresight_worker_unrouted_commands_total",
    "Prefetch commands dropped because no cache node was live in the ring",
)
ALERTS = Counter("foresight_worker_security_alerts_total", "Clients flagged by the abuse guard")
BLOCKED = Counter(
    "foresight_worker_blocked_events_total", "Events of clients whose prefetches are stopped"
)
SCORED = Counter(
    "foresight_online_scored_total", "Events scored against the client's previous prediction"
)
HITS = Counter("foresight_online_hits_total", "Scored events whose item was in the previous top k")
ONLINE_HR = Gauge(
    "foresight_online_hit_ratio",
    "Online HR@k: share of scored events that were among the previous top k",
)
STEP_SECONDS = Histogram(
    "foresight_worker_step_seconds",
    "Time to score, learn, predict and plan one interaction",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
RING_MEMBERS = Gauge("foresight_ring_members", "Live cache nodes in the worker's ring")
CONSUME_LAG = Histogram(
    "foresight_worker_consume_lag_seconds",
    "From an interaction's Kafka timestamp to the worker starting on it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FEEDBACK = Counter(
    "foresight_worker_feedback_total", "Agent feedback applied, by outcome", ["outcome"]
)
HANDLED_OFFSET = Gauge(
    "foresight_worker_handled_offset",
    "The next offset to handle on each interactions partition this worker reads (last + 1)",
    ["partition"],
)
SNAPSHOT_FAILURES = Counter(
    "foresight_worker_snapshot_failures_total",
    "Periodic snapshots of the global signals that Cassandra did not take (retried next time)",
)
DELIVERIES = Counter(
    "foresight_worker_kafka_deliveries_total",
    "Records the worker produced through librdkafka (changelog, commands, alerts), by whether "
    "Kafka took them",
    ["outcome"],
)
OUTPUT_QUEUE = Gauge(
    "foresight_worker_kafka_queue", "Records produced through librdkafka and not yet delivered"
)
SHED_PREDICTIONS = Counter(
    "foresight_worker_shed_predictions_total",
    "Clicks learned without a prediction: the worker was further behind than "
    "FORESIGHT_PREFETCH_SHED_AFTER_S, so their prefetches would have come too late",
)
