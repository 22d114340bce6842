"""Foresight's one settings object.

Every process reads it once at its entry point and passes it down; nothing else reads the
environment. Each field is set by the environment variable named in its description
(prefix ``FORESIGHT_``), or by a ``.env`` file in the working directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import limits
from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ReplicationStrategy = Literal["SimpleStrategy", "NetworkTopologyStrategy"]
LogFormat = Literal["text", "json"]
#: Consistency levels a request may ask for (ANY, write-only, and the serial ones left out).
Consistency = Literal[
    "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"
]

#: Loopback addresses of the replicated set's three nodes, a Kafka broker and a Cassandra node
#: on each (Linux routes all of 127/8 to lo); the single set keeps 127.0.0.1 to itself.
REPLICATED_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
#: What FORESIGHT_REPLICATED=1 sets, unless the variable of the same field is set too: the
#: replicated set's brokers and nodes, and the replication that three of each are for.
REPLICATED_DEFAULTS: dict[str, object] = {
    "kafka_bootstrap_servers": ",".join(f"{host}:9092" for host in REPLICATED_HOSTS),
    "cassandra_contact_points": ",".join(REPLICATED_HOSTS),
    "topic_replication_factor": 3,
    "topic_min_insync_replicas": 2,
    "cassandra_replication_factor": 3,
    "cassandra_consistency": "LOCAL_QUORUM",
}


class Settings(BaseSettings):
    """Endpoints, topics, ports and local-service options for every Foresight process."""

    model_config = SettingsConfigDict(
        env_prefix="FORESIGHT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated (FORESIGHT_KAFKA_BOOTSTRAP_SERVERS).",
    )
    kafka_controller_port: int = Field(
        9093,
        ge=1,
        le=65535,
        description="Port of the local KRaft controller listener "
        "(FORESIGHT_KAFKA_CONTROLLER_PORT).",
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        description="Replication factor of the topics `foresight topics create` makes "
        "(FORESIGHT_TOPIC_REPLICATION_FACTOR); 1 on one machine, 3 on a cluster.",
    )
    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of the topics `foresight topics create` makes: a write "
        "(every producer asks acks=all) fails rather than land on fewer replicas "
        "(FORESIGHT_TOPIC_MIN_INSYNC_REPLICAS); 2 with a replication factor of 3.",
    )
    topic_interactions: str = Field(
        "interactions", description="Interaction events topic (FORESIGHT_TOPIC_INTERACTIONS)."
    )
    topic_prefetch_commands: str = Field(
        "prefetch-commands",
        description="Prefetch commands topic (FORESIGHT_TOPIC_PREFETCH_COMMANDS).",
    )
    topic_feedback: str = Field(
        "feedback", description="Agent feedback topic (FORESIGHT_TOPIC_FEEDBACK)."
    )
    topic_content_updates: str = Field(
        "content-updates",
        description="Content version updates topic (FORESIGHT_TOPIC_CONTENT_UPDATES).",
    )
    topic_ring_membership: str = Field(
        "ring-membership",
        description="Compacted ring membership topic (FORESIGHT_TOPIC_RING_MEMBERSHIP).",
    )
    topic_security_alerts: str = Field(
        "security-alerts",
        description="Abuse guard alerts topic (FORESIGHT_TOPIC_SECURITY_ALERTS).",
    )
    dead_letter_suffix: str = Field(
        "-dlq",
        description="Suffix of each topic's dead-letter topic, e.g. interactions-dlq "
        "(FORESIGHT_DEAD_LETTER_SUFFIX).",
    )
    interactions_partitions: int = Field(
        4,
        ge=1,
        description="Partitions of interactions and feedback; the unit of worker scale-out "
        "(FORESIGHT_INTERACTIONS_PARTITIONS).",
    )
    prefetch_command_slots: int = Field(
        8,
        ge=1,
        description="Partitions of prefetch-commands, one per ring slot; the most cache nodes "
        "that can own clients at once (FORESIGHT_PREFETCH_COMMAND_SLOTS).",
    )
    small_topic_partitions: int = Field(
        1,
        ge=1,
        description="Partitions of content-updates, ring-membership, security-alerts and the "
        "dead-letter topics (FORESIGHT_SMALL_TOPIC_PARTITIONS).",
    )

    # --- Cassandra ---------------------------------------------------------------------------
    cassandra_contact_points: str = Field(
        "127.0.0.1",
        description="Cassandra contact points, comma separated "
        "(FORESIGHT_CASSANDRA_CONTACT_POINTS).",
    )
    cassandra_port: int = Field(
        9042, ge=1, le=65535, description="Cassandra CQL port (FORESIGHT_CASSANDRA_PORT)."
    )
    cassandra_storage_port: int = Field(
        7000,
        ge=1,
        le=65535,
        description="Local Cassandra inter-node storage port (FORESIGHT_CASSANDRA_STORAGE_PORT).",
    )
    cassandra_keyspace: str = Field(
        "foresight",
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="Keyspace that holds Foresight's tables (FORESIGHT_CASSANDRA_KEYSPACE).",
    )
    cassandra_replication_strategy: ReplicationStrategy = Field(
        "SimpleStrategy",
        description="Keyspace replication class: SimpleStrategy on one machine, "
        "NetworkTopologyStrategy on a cluster (FORESIGHT_CASSANDRA_REPLICATION_STRATEGY).",
    )
    cassandra_replication_factor: int = Field(
        1,
        ge=1,
        description="Replicas with SimpleStrategy (FORESIGHT_CASSANDRA_REPLICATION_FACTOR).",
    )
    cassandra_datacenters: dict[str, int] = Field(
        default_factory=lambda: {"datacenter1": 3},
        description="Replicas per datacenter with NetworkTopologyStrategy, as JSON, e.g. "
        '{"dc1": 3, "dc2": 3} (FORESIGHT_CASSANDRA_DATACENTERS).',
    )
    cassandra_consistency: Consistency = Field(
        "LOCAL_ONE",
        description="Consistency level of every Cassandra read and write "
        "(FORESIGHT_CASSANDRA_CONSISTENCY); LOCAL_QUORUM with a replication factor of 3.",
    )

    # --- Foresight processes -----------------------------------------------------------------
    collector_host: str = Field(
        "127.0.0.1", description="Interface the HTTP collector binds (FORESIGHT_COLLECTOR_HOST)."
    )
    collector_port: int = Field(
        8700, ge=1, le=65535, description="HTTP collector port (FORESIGHT_COLLECTOR_PORT)."
    )
    collector_max_batch: int = Field(
        1000,
        ge=1,
        description="Most events one POST /v1/events may carry (FORESIGHT_COLLECTOR_MAX_BATCH).",
    )
    collector_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body the collector reads; larger gets 413 "
        "(FORESIGHT_COLLECTOR_MAX_BODY_BYTES).",
    )
    collector_limit_per_ip: str | None = Field(
        "2000/second",
        description="Events one IP address may post, as '<count>/<second|minute|hour>'; over "
        "it a batch gets 429 and nothing of it is published. Empty: no limit "
        "(FORESIGHT_COLLECTOR_LIMIT_PER_IP).",
    )
    collector_limit_per_client: str | None = Field(
        "20/second",
        description="Events one client_id may post (same form); a person clicks far slower "
        "(FORESIGHT_COLLECTOR_LIMIT_PER_CLIENT).",
    )
    origin_host: str = Field(
        "127.0.0.1", description="Interface the demo origin binds (FORESIGHT_ORIGIN_HOST)."
    )
    origin_port: int = Field(
        8701, ge=1, le=65535, description="Demo origin port (FORESIGHT_ORIGIN_PORT)."
    )
    origin_latency_ms: float = Field(
        20.0,
        ge=0,
        description="Delay the demo origin adds to each GET /content, so a fetch from the "
        "origin has a realistic cost (FORESIGHT_ORIGIN_LATENCY_MS).",
    )
    origin_missing_ids: list[str] = Field(
        default_factory=list,
        description="Content ids the demo origin answers 404 for, as a JSON list "
        "(FORESIGHT_ORIGIN_MISSING_IDS).",
    )
    origin_sizes_file: Path | None = Field(
        None,
        description="A JSON object of content ids and byte sizes: the demo origin serves "
        "exactly these items at these sizes (a site's own, as `foresight replay --log` "
        "writes them) instead of its synthetic catalogue (FORESIGHT_ORIGIN_SIZES_FILE).",
    )
    origin_admin_token: SecretStr | None = Field(
        None,
        description="Bearer token that the demo origin's POST /admin/content/{id}/bump requires; "
        "unset means no check (FORESIGHT_ORIGIN_ADMIN_TOKEN).",
    )
    origin_publish_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a bump waits for Kafka to ack its ContentUpdate before answering "
        "503 (FORESIGHT_ORIGIN_PUBLISH_TIMEOUT_S).",
    )
    origin_url_template: str = Field(
        "http://127.0.0.1:8701/content/{content_id}",
        description="Where cache nodes fetch an item; {content_id} is replaced by the "
        "percent-encoded id (FORESIGHT_ORIGIN_URL_TEMPLATE).",
    )
    origin_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost"],
        description="Hosts cache nodes may fetch from, as a JSON list; anything else is refused "
        "(FORESIGHT_ORIGIN_ALLOWED_HOSTS).",
    )
    no_prefetch_patterns: list[str] = Field(
        default_factory=lambda: [r"(^|/)(logout|signout|cart|checkout|delete)"],
        description="Regular expressions of content ids with side effects, never prefetched, "
        "as a JSON list (FORESIGHT_NO_PREFETCH_PATTERNS).",
    )
    fetch_max_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Largest item a cache node fetches (FORESIGHT_FETCH_MAX_BYTES).",
    )
    fetch_timeout_s: float = Field(
        5.0, gt=0, description="Time limit of one origin fetch (FORESIGHT_FETCH_TIMEOUT_S)."
    )
    agent_token_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="HMAC secrets for agent tokens, current first, as a JSON list; each at "
        "least 32 bytes (FORESIGHT_AGENT_TOKEN_SECRETS). Never logged.",
    )
    agent_token_ttl_s: float = Field(
        86400.0,
        gt=0,
        le=7 * 86400,
        description="Lifetime of a token from `foresight token issue` "
        "(FORESIGHT_AGENT_TOKEN_TTL_S).",
    )
    agent_frames_per_s: float = Field(
        50.0,
        gt=0,
        description="Frames per second one agent connection may send its cache node, "
        "sustained; beyond it and the burst the node closes it 4008 "
        "(FORESIGHT_AGENT_FRAMES_PER_S).",
    )
    agent_frame_burst: int = Field(
        2000,
        ge=1,
        description="Frames one agent connection may send at once over the sustained rate: "
        "room for an agent's whole buffer of feedback and views after a reconnect "
        "(FORESIGHT_AGENT_FRAME_BURST).",
    )
    cache_node_base_port: int = Field(
        8710,
        ge=1,
        le=65535,
        description="Port of cache node 0; node N listens on base + N "
        "(FORESIGHT_CACHE_NODE_BASE_PORT).",
    )
    worker_web_port: int = Field(
        6066,
        ge=1,
        le=65535,
        description="Web and /metrics port of worker 0; worker N listens on base + N "
        "(FORESIGHT_WORKER_WEB_PORT).",
    )
    worker_fetch_max_wait_ms: int = Field(
        20,
        ge=0,
        le=10_000,
        description="Longest the worker's Kafka fetch waits at the broker for new records; "
        "Faust's own 1500 ms adds up to that to a click's way to its prefetch "
        "(FORESIGHT_WORKER_FETCH_MAX_WAIT_MS).",
    )
    worker_fetch_min_bytes: int = Field(
        1,
        ge=1,
        le=1_048_576,
        description="Bytes the worker's Kafka fetch waits for (at most worker_fetch_max_wait_ms) "
        "before returning; 1: a click is fetched as soon as it lands "
        "(FORESIGHT_WORKER_FETCH_MIN_BYTES).",
    )
    worker_linger_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="How long the worker's librdkafka producer waits to fill a produce request "
        "with a click's commands and changelog record; part of every click-to-push "
        "(FORESIGHT_WORKER_LINGER_MS).",
    )
    worker_group: str = Field(
        "foresight-worker",
        pattern=r"^[a-z][a-z0-9-]{0,63}$",
        description="Faust app id: the workers' consumer group and the prefix of their "
        "changelog topics (FORESIGHT_WORKER_GROUP).",
    )
    worker_id: int = Field(
        0,
        ge=0,
        le=1000,
        description="This worker's number on its host: picks its web port and data folder "
        "(FORESIGHT_WORKER_ID).",
    )
    top_k: int = Field(
        5,
        ge=1,
        le=100,
        description="Predictions per client that the online HR@k scores and /clients shows "
        "(FORESIGHT_TOP_K).",
    )
    prefetch_top_k: int = Field(
        10,
        ge=1,
        le=100,
        description="Predictions per click the prefetch planner considers, apart from the "
        "scored top_k (FORESIGHT_PREFETCH_TOP_K).",
    )
    node_body_cache_mb: int = Field(
        64,
        ge=1,
        description="Bodies a cache node keeps in memory (most recently used first), in MiB; "
        "the rest is read from Cassandra (FORESIGHT_NODE_BODY_CACHE_MB).",
    )
    push_bytes_per_odds: float | None = Field(
        700_000.0,
        gt=0,
        description="K of the cache node's push rule: an item of s bytes with probability p "
        "is pushed only if p / (1 - p) >= s / K; empty or none means no rule "
        "(FORESIGHT_PUSH_BYTES_PER_ODDS).",
    )
    prefetch_shed_after_s: float | None = Field(
        2.0,
        gt=0,
        description="A cache node sheds (counts, does not carry out) a prefetch command whose "
        "click is older than this when its turn comes: under load the next click has likely "
        "come; empty: never for its age (FORESIGHT_PREFETCH_SHED_AFTER_S).",
    )
    prefetch_ttl_s: float = Field(
        600.0,
        gt=0,
        description="How long a prefetch command stays valid (FORESIGHT_PREFETCH_TTL_S).",
    )
    snapshot_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often a worker snapshots its global signals to Cassandra; after a "
        "crash they miss at most this much (FORESIGHT_SNAPSHOT_INTERVAL_S).",
    )
    history_queue_size: int = Field(
        20_000,
        ge=1,
        description="Client history rows (and, apart, client profiles) a worker keeps waiting "
        "for Cassandra; beyond it new ones are dropped and counted (FORESIGHT_HISTORY_QUEUE_SIZE).",
    )
    history_flush_interval_s: float = Field(
        0.25,
        gt=0,
        description="How often a worker writes its queued client history to Cassandra "
        "(FORESIGHT_HISTORY_FLUSH_INTERVAL_S).",
    )
    history: Literal["off", "write", "restore"] = Field(
        "off",
        description="Client history in Cassandra (FORESIGHT_HISTORY): `write` the clients' "
        "requests and profiles; `restore` also rebuild the record of a client the worker holds "
        "none of from its profile. Off by default: on this project's 2-core machine writing "
        "took the worker from 2,000 to 1,132 events/s and restoring to 874 (bench/predict.py).",
    )
    history_read_timeout_s: float = Field(
        0.5,
        gt=0,
        description="How long an event of a client the worker holds no record of waits for "
        "its profile from Cassandra before the client starts afresh "
        "(FORESIGHT_HISTORY_READ_TIMEOUT_S).",
    )
    ring_heartbeat_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A cache node without a heartbeat for this long leaves the ring "
        "(FORESIGHT_RING_HEARTBEAT_TIMEOUT_S).",
    )
    log_format: LogFormat = Field(
        "text",
        description="How long-running processes write their log lines: one readable line each "
        "(text) or one JSON object per line (json) (FORESIGHT_LOG_FORMAT).",
    )

    # --- Local services ----------------------------------------------------------------------
    state_dir: Path = Field(
        Path(".foresight"),
        description="Folder for the local services' data, configs, logs and pid files "
        "(FORESIGHT_STATE_DIR); git ignores the default.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "foresight",
        description="Folder outside the repository where the Kafka and Cassandra jars are "
        "cached (FORESIGHT_CACHE_DIR).",
    )
    kafka_heap_mb: int = Field(
        512, ge=128, description="Local Kafka JVM heap in MiB (FORESIGHT_KAFKA_HEAP_MB)."
    )
    cassandra_heap_mb: int = Field(
        2048,
        ge=512,
        description="Local Cassandra JVM heap in MiB; every keyspace's tables cost heap, and "
        "1 GiB ran out under the test suite's keyspaces (FORESIGHT_CASSANDRA_HEAP_MB).",
    )
    cassandra_durable: bool = Field(
        False,
        description="Keep the local Cassandra's fsyncs on (FORESIGHT_CASSANDRA_DURABLE); off, it "
        "skips them for speed, which only tests and demos may do.",
    )
    services_start_timeout_s: float = Field(
        180.0,
        gt=0,
        description="How long `services up` waits for a service to answer "
        "(FORESIGHT_SERVICES_START_TIMEOUT_S).",
    )
    replicated: bool = Field(
        False,
        description="Use the replicated set (`foresight services up --replicated`): its brokers "
        "and nodes, topics RF 3 with min.insync.replicas 2, the keyspace RF 3, requests at "
        "LOCAL_QUORUM, each unless its own variable is set (FORESIGHT_REPLICATED).",
    )
    replicated_kafka_heap_mb: int = Field(
        384,
        ge=128,
        description="JVM heap of each of the replicated set's three Kafka brokers, in MiB "
        "(FORESIGHT_REPLICATED_KAFKA_HEAP_MB).",
    )
    replicated_cassandra_heap_mb: int = Field(
        1024,
        ge=512,
        description="JVM heap of each of the replicated set's three Cassandra nodes, in MiB "
        "(FORESIGHT_REPLICATED_CASSANDRA_HEAP_MB).",
    )

    @field_validator("collector_limit_per_ip", "collector_limit_per_client", mode="before")
    @classmethod
    def _rate_limit(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        if isinstance(value, str):
            try:
                limits.parse(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate like '20/second' or '1000/minute'"
                ) from None
        return value

    @field_validator("push_bytes_per_odds", "prefetch_shed_after_s", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("state_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _replication_fits_strategy(self) -> Settings:
        if self.cassandra_replication_strategy == "NetworkTopologyStrategy" and not (
            self.cassandra_datacenters
        ):
            raise ValueError("NetworkTopologyStrategy needs FORESIGHT_CASSANDRA_DATACENTERS")
        return self

    @model_validator(mode="before")
    @classmethod
    def _replicated_defaults(cls, data: object) -> object:
        """FORESIGHT_REPLICATED=1 fills in REPLICATED_DEFAULTS for the fields not given."""
        if not isinstance(data, dict):
            return data
        try:
            on = TypeAdapter(bool).validate_python(data.get("replicated", False))
        except ValidationError:
            return data  # the field's own validation names the bad value
        return {**REPLICATED_DEFAULTS, **data} if on else data

    @model_validator(mode="after")
    def _min_insync_fits_replication(self) -> Settings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"FORESIGHT_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) is above "
                f"FORESIGHT_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write "
                "with acks=all could ever succeed"
            )
        return self

    def with_topic_prefix(self, prefix: str) -> Settings:
        """These settings with every topic renamed ``{prefix}-{topic}``: topics of one's own,
        for a test or a benchmark on a shared broker."""
        names = (
            "interactions",
            "prefetch_commands",
            "feedback",
            "content_updates",
            "ring_membership",
            "security_alerts",
        )
        return self.model_copy(
            update={f"topic_{n}": f"{prefix}-{getattr(self, f'topic_{n}')}" for n in names}
        )

    def as_environment(self) -> dict[str, str]:
        """FORESIGHT_* variables that give a child process exactly these settings (secrets
        included: pass the result only to processes of our own)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, list):
                value = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None and type(self).model_fields[name].default is not None:
                env[f"FORESIGHT_{name.upper()}"] = ""  # unset would mean the default
            elif value is not None:
                text = json.dumps(value) if isinstance(value, dict | list) else str(value)
                env[f"FORESIGHT_{name.upper()}"] = text
        return env

    # --- Derived values ----------------------------------------------------------------------
    @property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server: the local broker's listener."""
        first = self.kafka_bootstrap_servers.split(",")[0].strip()
        return int(first.rsplit(":", 1)[1])

    @property
    def cassandra_hosts(self) -> list[str]:
        return [h.strip() for h in self.cassandra_contact_points.split(",") if h.strip()]

    def dead_letter_topic(self, topic: str) -> str:
        return f"{topic}{self.dead_letter_suffix}"

    def replication_map(self) -> dict[str, str | int]:
        """The keyspace's replication map, as CREATE KEYSPACE takes it."""
        if self.cassandra_replication_strategy == "SimpleStrategy":
            return {
                "class": "SimpleStrategy",
                "replication_factor": self.cassandra_replication_factor,
            }
        return {"class": "NetworkTopologyStrategy", **self.cassandra_datacenters}

    def topic_partitions(self) -> dict[str, int]:
        """Every topic Foresight uses, with its partition count."""
        main = {
            self.topic_interactions: self.interactions_partitions,
            self.topic_feedback: self.interactions_partitions,
            self.topic_prefetch_commands: self.prefetch_command_slots,
            self.topic_content_updates: self.small_topic_partitions,
            self.topic_ring_membership: self.small_topic_partitions,
            self.topic_security_alerts: self.small_topic_partitions,
        }
        dead = {
            self.dead_letter_topic(t): self.small_topic_partitions
            for t in (
                self.topic_interactions,
                self.topic_feedback,
                self.topic_prefetch_commands,
                self.topic_content_updates,
            )
        }
        return main | dead

    @property
    def compacted_topics(self) -> frozenset[str]:
        return frozenset({self.topic_ring_membership})
