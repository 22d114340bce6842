"""Whether the replicated set is whole: its Kafka quorum complete, its Cassandra ring all UN.

Kafka: each node is a voter of the static quorum and a broker. A broker registers with the
quorum's leader and is unfenced only once its node has replicated the metadata log, so when
every broker, asked on its own address, lists the three brokers of one cluster, the quorum has a
leader and all three voters follow it. (librdkafka has no DescribeQuorum, and the Maven jars no
kafka-metadata-quorum tool.)

Cassandra: nodetool is not available (the nodes run without JMX), so each node is asked over
CQL on its own address: gossip (``system_views.gossip_info``, STATUS_WITH_PORT) must show the
three nodes NORMAL, and a read at consistency ALL that the node coordinates, in
system_distributed (three replicas), must succeed, which it does only when that node's failure
detector holds the other two up. Normal and Up, from every node: nodetool's UN. And one
schema version in every node's gossip: a node back from a crash may lack a recent schema change
until it pulls it from a peer, and answers INCOMPATIBLE_SCHEMA until then.

The verdicts are pure functions of what the nodes said, apart from the probes that ask them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from foresight.services.cassandra_node import CassandraSpec, pinned_cluster
from foresight.services.kafka_broker import KafkaSpec
from foresight.services.provision import ServiceError

log = logging.getLogger(__name__)

#: One client request of a probe; a node slower than this counts as not answering.
PROBE_TIMEOUT_S = 5.0
#: Between two probes of a set that is not whole yet.
PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class BrokerView:
    """What one broker says of the cluster."""

    name: str
    node_id: int
    cluster_id: str | None
    brokers: frozenset[int] | None  # the registered, unfenced brokers; None: no answer


@dataclass(frozen=True)
class NodeView:
    """What one Cassandra node says of the ring."""

    name: str
    host: str
    normal: frozenset[str] | None  # addresses its gossip holds NORMAL; None: no answer
    all_up: bool  # a read at ALL that it coordinated succeeded
    schemas: frozenset[str] = frozenset()  # the schema versions its gossip holds


def quorum_problem(views: Sequence[BrokerView]) -> str | None:
    """None when every broker sees every broker of one cluster; else what is wrong first."""
    expected = frozenset(v.node_id for v in views)
    for view in views:
        if view.brokers is None:
            return f"{view.name} does not answer"
    for view in views:
        assert view.brokers is not None
        missing = sorted(expected - view.brokers)
        if missing:
            return (
                f"{view.name} sees {len(expected & view.brokers)} of {len(expected)} brokers "
                f"(not {', '.join(map(str, missing))})"
            )
    clusters = sorted({v.cluster_id or "?" for v in views})
    if len(clusters) > 1:
        return f"the brokers are not one cluster: {', '.join(clusters)}"
    return None


def ring_problem(views: Sequence[NodeView]) -> str | None:
    """None when every node sees every node Up and Normal; else what is wrong first."""
    hosts = frozenset(v.host for v in views)
    for view in views:
        if view.normal is None:
            return f"{view.name} does not answer CQL"
    for view in views:
        assert view.normal is not None
        missing = sorted(hosts - view.normal)
        if missing:
            return f"{view.name} does not see {', '.join(missing)} as NORMAL"
    for view in views:
        if not view.all_up:
            return f"{view.name} does not see every node up (a read at ALL was refused)"
    for view in views:
        if len(view.schemas) > 1:
            return (
                f"{view.name} sees {len(view.schemas)} schema versions: "
                "the nodes do not agree on the schema yet"
            )
    return None


def broker_view(spec: KafkaSpec) -> BrokerView:
    """Ask one broker, on its own address alone, which brokers the cluster has."""
    from confluent_kafka.admin import AdminClient

    # A new client knows only its bootstrap broker, so that one answers.
    config: dict[str, Any] = {"bootstrap.servers": f"{spec.host}:{spec.port}", "logger": log}
    admin = AdminClient(config)  # held until the answer: a collected client drops it
    try:
        found = admin.describe_cluster(request_timeout=PROBE_TIMEOUT_S)
        result = found.result(timeout=PROBE_TIMEOUT_S + 1)
    except Exception:  # KafkaException, a timeout: not answering (yet)
        return BrokerView(spec.name, spec.node_id, None, None)
    return BrokerView(
        spec.name, spec.node_id, result.cluster_id, frozenset(n.id for n in result.nodes)
    )


def node_view(spec: CassandraSpec) -> NodeView:
    """Ask one Cassandra node, on its own address alone, how it sees the ring."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    cluster = pinned_cluster(spec.host, spec.port, PROBE_TIMEOUT_S)
    try:
        session = cluster.connect()
        rows = list(
            session.execute(
                'SELECT address, status, status_with_port, "schema" FROM system_views.gossip_info'
            )
        )
        # A peer's state comes as STATUS_WITH_PORT alone; the old STATUS only for the node itself.
        normal = frozenset(
            str(r.address)
            for r in rows
            if (r.status_with_port or r.status or "").split(",")[0] == "NORMAL"
        )
        schemas = frozenset(str(r.schema) for r in rows)
    except Exception:  # NoHostAvailable, OperationTimedOut: not answering (yet)
        cluster.shutdown()
        return NodeView(spec.name, spec.host, None, False)
    try:
        everyone = SimpleStatement(
            "SELECT id FROM system_distributed.repair_history "
            "WHERE keyspace_name = 'foresight' AND columnfamily_name = 'probe' LIMIT 1",
            consistency_level=ConsistencyLevel.ALL,
        )
        session.execute(everyone)
        all_up = True
    except Exception:  # Unavailable (a replica is down to this node) or a timeout
        all_up = False
    finally:
        cluster.shutdown()
    return NodeView(spec.name, spec.host, normal, all_up, schemas)


def kafka_quorum(brokers: Sequence[KafkaSpec]) -> str | None:
    """What keeps the replicated set's Kafka from being whole, or None."""
    return quorum_problem([broker_view(b) for b in brokers])


def cassandra_ring(nodes: Sequence[CassandraSpec]) -> str | None:
    """What keeps the replicated set's Cassandra ring from being whole, or None."""
    return ring_problem([node_view(n) for n in nodes])


def wait_until_whole(
    problem: Callable[[], str | None],
    what: str,
    timeout: float,
    on_wait: Callable[[str], None] = lambda _problem: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Probe until ``problem()`` says None; past ``timeout``, a ServiceError naming the last
    problem. ``on_wait`` sees each problem (for a progress line)."""
    deadline = clock() + timeout
    while True:
        found = problem()
        if found is None:
            return
        if clock() >= deadline:
            raise ServiceError(f"{what} not whole after {timeout:.0f} s: {found}")
        on_wait(found)
        sleep(PROBE_INTERVAL_S)
