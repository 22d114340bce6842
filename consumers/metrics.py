"""The cache node's Prometheus metrics: what it handles, and how long each part takes.

Beside them, :class:`NodeCounters`: the same kind of counts, per CacheNode, in process (the
Prometheus ones are per process and never reset), for tests and inspection.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("foresight_node_content_requests_total", "GET /v1/content", ["outcome"])
COMMANDS = Counter("foresight_node_commands_total", "Prefetch commands handled", ["outcome"])
AGENTS = Gauge("foresight_node_agents", "Connected agents")
QUEUED = Gauge("foresight_node_outbox_frames", "Frames waiting in agents' outboxes")
RING_MEMBERS = Gauge("foresight_node_ring_members", "Live cache nodes in this node's ring")
FETCH_SECONDS = Histogram(
    "foresight_node_fetch_seconds",
    "Origin fetches, from request to body",
    ["purpose"],
    buckets=_LATENCY_BUCKETS,
)
CASSANDRA_SECONDS = Histogram(
    "foresight_node_cassandra_seconds",
    "Cassandra requests of the node's store, by statement",
    ["statement"],
    buckets=_LATENCY_BUCKETS,
)
CASSANDRA_ERRORS = Counter(
    "foresight_node_cassandra_errors_total", "Failed Cassandra requests", ["statement"]
)
CLICK_TO_PUSH_SECONDS = Histogram(
    "foresight_node_click_to_push_seconds",
    "From the click behind a prefetch command (its event time) to the push leaving the node",
    buckets=_LATENCY_BUCKETS,
)
PUSHES = Counter("foresight_node_pushes_total", "Frames offered to agents", ["kind"])
EVENTS_OUT = Counter(
    "foresight_node_events_out_total",
    "Records the node published: interactions (request, view), feedback, dead letters",
    ["kind"],
)
DEAD_LETTERS = Counter(
    "foresight_node_dead_letters_total", "Records sent to a dead-letter topic", ["topic"]
)
FEEDBACK = Counter(
    "foresight_node_feedback_total", "Agent feedback relayed, by outcome", ["outcome"]
)
ACKS = Counter(
    "foresight_node_acks_total",
    "Agents' view and request ids acked once Kafka held them; 'agent gone': no socket to ack on",
    ["outcome"],
)
DELIVERIES = Counter(
    "foresight_node_kafka_deliveries_total",
    "Records the node produced, by Kafka's final word: delivered, or failed after retries",
    ["outcome"],
)
PRODUCER_QUEUE = Gauge(
    "foresight_node_producer_queue", "Records waiting in the node's Kafka producer for an ack"
)
STORE_WRITES = Gauge(
    "foresight_node_store_writes_in_flight",
    "Cassandra writes started and not finished (pushes and fetches do not wait for them)",
)
BEACONS = Counter(
    "foresight_node_beacons_total",
    "Beacons (feedback and views posted over HTTP by an agent without a socket), by outcome",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "foresight_node_agents_rate_limited_total",
    "Agent connections closed 4008 for sending frames over the rate limit (their frames past "
    "the limit were not recorded)",
)
FRAMES_UNSENT = Counter(
    "foresight_node_frames_unsent_total",
    "Frames queued for an agent and not sent because the node closed its connection (a "
    "redirect, a slow agent, a refused frame); its next hello tells its node what it holds",
)


@dataclass
class NodeCounters:
    """What one CacheNode did with its commands, fetches, pushes and updates."""

    commands: int = 0
    expired: int = 0
    duplicates: int = 0
    refused: int = 0
    departed: int = 0
    fetch_failures: int = 0
    fetches: int = 0
    pushes: int = 0
    already_held: int = 0
    not_worth_bytes: int = 0
    pending: int = 0
    updates: int = 0
    invalidations: int = 0
    superseded: int = 0
    late: int = 0
    store_failures: int = 0
