"""Apache Kafka 4.1 in KRaft mode: each node a combined broker and controller.

The single set is one node, its own one-voter quorum. The replicated set is three nodes, each
a voter of one static three-voter quorum (``controller.quorum.voters``), its log folders
formatted with one shared cluster id; its internal topics are replicated three times with
min.insync.replicas 2, which is also the default of any topic created without its own (the
workers' changelogs).
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foresight.services.base import REPLICATED_NODES, ServiceSpec, node_host, port_open, render
from foresight.services.provision import ServiceError

log = logging.getLogger(__name__)

#: The replicated set's internal topics: every broker holds a copy, and a write needs two.
REPLICATED_REPLICAS = len(REPLICATED_NODES)
REPLICATED_MIN_INSYNC = 2


def new_cluster_id() -> str:
    """A KRaft cluster id: url-safe base64 of 16 random bytes, without padding, and never
    starting with "-" (one in 64 would), which the storage tool would read as an option. Kafka's
    own Uuid.randomUuid() draws again in that case too."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaSpec(ServiceSpec):
    """One Kafka node (broker and controller in one JVM)."""

    kind = "kafka"
    main_class = "kafka.Kafka"
    log_name = "server.log"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def node_id(self) -> int:
        return self.node if self.replicated else 1

    @property
    def voters(self) -> str:
        """The static controller quorum: this node alone, or the replicated set's three."""
        nodes = REPLICATED_NODES if self.replicated else (0,)
        return ",".join(f"{n or 1}@{node_host(n)}:{self.controller_port}" for n in nodes)

    @property
    def _properties(self) -> Path:
        return self.home / "server.properties"

    def _jvm_logging(self) -> list[str]:
        return [
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
        ]

    def write_config(self) -> None:
        """server.properties and log4j2.properties, from the settings."""
        for folder in (self.home, self.log_dir, self.home / "data"):
            folder.mkdir(parents=True, exist_ok=True)
        replicas, min_insync = (
            (REPLICATED_REPLICAS, REPLICATED_MIN_INSYNC) if self.replicated else (1, 1)
        )
        render(
            "kafka-server.properties",
            self._properties,
            node_id=self.node_id,
            voters=self.voters,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.home / "data",
            replicas=replicas,
            min_insync=min_insync,
        )
        render("kafka-log4j2.properties", self.home / "log4j2.properties")

    def cluster_id(self) -> str:
        """The id to format a new log folder with: a new one for the single node; for the
        replicated set, the one its first formatted node wrote down (all three must share it)."""
        if not self.replicated:
            return new_cluster_id()
        record = self.home.parent / "kafka-cluster-id"
        if not record.exists():
            record.write_text(new_cluster_id() + "\n")
        return record.read_text().strip()

    def prepare(self) -> None:
        self.write_config()
        data = self.home / "data"
        if (data / "meta.properties").exists():
            return
        formatted = subprocess.run(
            [
                self._java(),
                "-Xmx256m",
                *self._jvm_logging(),
                "-cp",
                f"{self.lib}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id(),
                "-c",
                str(self._properties),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            last = (formatted.stderr or formatted.stdout).strip().splitlines()[-1:]
            raise ServiceError(f"{self.name}: formatting {data} failed: {' '.join(last) or '?'}")

    def command(self) -> list[str]:
        heap = (
            self.settings.replicated_kafka_heap_mb
            if self.replicated
            else self.settings.kafka_heap_mb
        )
        return [
            self._java(),
            f"-Xms{min(heap, 256)}m",
            f"-Xmx{heap}m",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            *self._jvm_logging(),
            "-cp",
            f"{self.lib}/*",
            self.main_class,
            str(self._properties),
        ]

    def listening(self) -> bool:
        """Its controller listener accepts connections: the node runs and takes part in the
        quorum's votes, though the quorum may not have a leader yet (a node of the replicated
        set cannot answer clients before a second voter is up)."""
        return port_open(self.controller_port, self.host)

    def healthy(self) -> bool:
        if not port_open(self.port, self.host):
            return False
        from confluent_kafka.admin import AdminClient

        config: dict[str, Any] = {"bootstrap.servers": f"{self.host}:{self.port}", "logger": log}
        admin = AdminClient(config)
        try:
            admin.list_topics(timeout=5)
        except Exception:  # KafkaException or a timeout: not answering yet
            return False
        return True
