"""Apache Cassandra 5.0: the single set's one node, or a node of the replicated set's ring.

The replicated set's three nodes form one cluster of their own (``foresight-replicated``: a
node of another cluster, such as the single set's, is refused), each a seed, each with one
token a third of the ring from the next, so that a fresh cluster starts without bootstrap
streaming. They start one after the other, and always with their fsyncs and system commit log
(FORESIGHT_CASSANDRA_DURABLE is for the single node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from foresight.services.base import REPLICATED_NODES, ServiceSpec, node_host, port_open, render

if TYPE_CHECKING:
    from cassandra.cluster import Cluster

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


def ring_token(node: int) -> int:
    """The one Murmur3 token of a node: 0 for the single set; the replicated set's three a
    third of the ring apart, from its lowest token on.

    >>> [ring_token(n) for n in (0, 1, 2, 3)]
    [0, -9223372036854775808, -3074457345618258603, 3074457345618258602]
    """
    if node == 0:
        return 0
    return -(2**63) + (node - 1) * (2**64 // len(REPLICATED_NODES))


def pinned_cluster(host: str, port: int, timeout: float = 5.0) -> Cluster:
    """A driver Cluster that talks to ``host`` alone, never to the peers it learns of: what a
    check of one node needs."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=timeout
    )
    return Cluster(
        [host],
        port=port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout,
    )


@dataclass(frozen=True)
class CassandraSpec(ServiceSpec):
    """One Cassandra node."""

    kind = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"
    log_name = "system.log"

    @property
    def port(self) -> int:
        return self.settings.cassandra_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.settings.cassandra_storage_port]

    @property
    def seeds(self) -> str:
        nodes = REPLICATED_NODES if self.replicated else (0,)
        return ",".join(f"{node_host(n)}:{self.settings.cassandra_storage_port}" for n in nodes)

    def prepare(self) -> None:
        data = self.home / "data"
        for folder in (self.home, self.log_dir, data, self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        render(
            "cassandra.yaml",
            self.home / "cassandra.yaml",
            cluster_name="foresight-replicated" if self.replicated else "foresight-local",
            seeds=self.seeds,
            host=self.host,
            port=self.port,
            storage_port=self.settings.cassandra_storage_port,
            data_dir=data,
        )
        render("cassandra-logback.xml", self.home / "logback.xml")

    def command(self) -> list[str]:
        heap = (
            self.settings.replicated_cassandra_heap_mb
            if self.replicated
            else self.settings.cassandra_heap_mb
        )
        jamm = next(self.lib.glob("jamm-*.jar"))
        # The test-only speed-ups, never on the replicated set, which exists to have nodes
        # killed -9: with unsafesystem, a killed node forgets the schema changes it held in
        # memtables (a keyspace made just before), and comes back without them.
        durable = self.settings.cassandra_durable or self.replicated
        unsafe = [] if durable else ["-Dcassandra.skip_sync=true", "-Dcassandra.unsafesystem=true"]
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
            f"-Dcassandra.initial_token={ring_token(self.node)}",
            "-Dcassandra.libjemalloc=-",
            *unsafe,
            "-cp",
            f"{self.lib}/*",
            self.main_class,
        ]

    def healthy(self) -> bool:
        if not port_open(self.port, self.host):
            return False
        cluster = pinned_cluster(self.host, self.port)
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local").one()
            return row is not None
        except Exception:  # NoHostAvailable or OperationTimedOut: not answering yet
            return False
        finally:
            cluster.shutdown()
