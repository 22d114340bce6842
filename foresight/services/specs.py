"""What it takes to run each local service: its files, its command line and its health check."""

from __future__ import annotations

import base64
import logging
import socket
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from foresight.services.provision import ServiceError, lib_dir, require_tool
from foresight.settings import Settings

TEMPLATES = Path(__file__).with_name("templates")
log = logging.getLogger(__name__)


def render(template: str, target: Path, **values: object) -> None:
    """Write a template with its ``${name}`` placeholders filled in."""
    text = (TEMPLATES / template).read_text()
    if values:  # a template without values (log4j2's own ${sys:...} lookups) is copied as is
        text = Template(text).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ServiceSpec(ABC):
    """One local service: where it lives, how it starts, and how to tell it answers."""

    settings: Settings

    name: str = ""
    main_class: str = ""

    @property
    def home(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        """The service's own log, the one to read when it misbehaves."""
        return self.log_dir / ("server.log" if self.name == "kafka" else "system.log")

    @property
    def console_file(self) -> Path:
        """stdout and stderr of the JVM (early crashes land here before logging starts)."""
        return self.log_dir / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "pid.json"

    @property
    def lib(self) -> Path:
        return lib_dir(self.settings.cache_dir, self.name)

    @property
    @abstractmethod
    def port(self) -> int:
        """The port clients use."""

    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the service binds (a taken one stops the start)."""

    @abstractmethod
    def prepare(self) -> None:
        """Write the config files and do any one-time set-up of the data folder."""

    @abstractmethod
    def command(self) -> list[str]:
        """The JVM command line."""

    @abstractmethod
    def healthy(self) -> bool:
        """A real request answered (not just an open port)."""

    def _java(self) -> str:
        return require_tool("java")


@dataclass(frozen=True)
class KafkaSpec(ServiceSpec):
    """Apache Kafka 4.1 in KRaft mode, one combined broker and controller."""

    name: str = "kafka"
    main_class: str = "kafka.Kafka"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.settings.kafka_controller_port]

    @property
    def _properties(self) -> Path:
        return self.home / "server.properties"

    def _jvm_logging(self) -> list[str]:
        return [
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
        ]

    def prepare(self) -> None:
        import subprocess

        data = self.home / "data"
        for folder in (self.home, self.log_dir, data):
            folder.mkdir(parents=True, exist_ok=True)
        render(
            "kafka-server.properties",
            self._properties,
            port=self.port,
            controller_port=self.settings.kafka_controller_port,
            data_dir=data,
        )
        render("kafka-log4j2.properties", self.home / "log4j2.properties")
        if (data / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
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
                cluster_id,
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
            raise ServiceError(f"kafka: formatting {data} failed: {' '.join(last) or '?'}")

    def command(self) -> list[str]:
        heap = self.settings.kafka_heap_mb
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

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        config: dict[str, Any] = {"bootstrap.servers": f"127.0.0.1:{self.port}", "logger": log}
        admin = AdminClient(config)
        try:
            admin.list_topics(timeout=5)
        except Exception:  # KafkaException or a timeout: not answering yet
            return False
        return True


_CASSANDRA_OPENS = [
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
]


@dataclass(frozen=True)
class CassandraSpec(ServiceSpec):
    """Apache Cassandra 5.0, one node."""

    name: str = "cassandra"
    main_class: str = "org.apache.cassandra.service.CassandraDaemon"

    @property
    def port(self) -> int:
        return self.settings.cassandra_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.settings.cassandra_storage_port]

    def prepare(self) -> None:
        data = self.home / "data"
        for folder in (self.home, self.log_dir, data, self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        render(
            "cassandra.yaml",
            self.home / "cassandra.yaml",
            port=self.port,
            storage_port=self.settings.cassandra_storage_port,
            data_dir=data,
        )
        render("cassandra-logback.xml", self.home / "logback.xml")

    def command(self) -> list[str]:
        heap = self.settings.cassandra_heap_mb
        jamm = next(self.lib.glob("jamm-*.jar"))
        unsafe = (
            []
            if self.settings.cassandra_durable
            else ["-Dcassandra.skip_sync=true", "-Dcassandra.unsafesystem=true"]
        )
        return [
            self._java(),
            f"-Xms{heap}m",
            f"-Xmx{heap}m",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxTenuringThreshold=1",
            "-XX:MaxGCPauseMillis=300",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+PerfDisableSharedMem",
            "-Djava.net.preferIPv4Stack=true",
            "-Dchronicle.analytics.disable=true",
            "-Djdk.attach.allowAttachSelf=true",
            *_CASSANDRA_OPENS,
            "-Dio.netty.tryReflectionSetAccessible=true",
            "-Dio.netty.allocator.useCacheForAllThreads=true",
            "-Dio.netty.allocator.maxOrder=11",
            f"-javaagent:{jamm}",
            f"-Dcassandra.config={(self.home / 'cassandra.yaml').as_uri()}",
            f"-Dcassandra.storagedir={self.home / 'data'}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            f"-Djna.tmpdir={self.home / 'tmp'}",
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.initial_token=0",
            "-Dcassandra.libjemalloc=-",
            *unsafe,
            "-cp",
            f"{self.lib}/*",
            self.main_class,
        ]

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        from foresight.cassandra import make_cluster

        cluster = make_cluster(["127.0.0.1"], self.port)
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local").one()
            return row is not None
        except Exception:  # NoHostAvailable or OperationTimedOut: not answering yet
            return False
        finally:
            cluster.shutdown()


def all_specs(settings: Settings) -> list[ServiceSpec]:
    """The local services in start order."""
    return [KafkaSpec(settings), CassandraSpec(settings)]


def spec_by_name(settings: Settings, name: str) -> ServiceSpec:
    for spec in all_specs(settings):
        if spec.name == name:
            return spec
    raise KeyError(name)
