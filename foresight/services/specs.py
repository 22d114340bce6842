"""The two sets of local services: which services make up each, in start order.

The single set (`foresight services up`) is one Kafka and one Cassandra on 127.0.0.1. The
replicated set (`foresight services up --replicated`) is three Kafka brokers, then three
Cassandra nodes, on 127.0.0.2, .3 and .4: the same jars, the same ports on other addresses,
folders of their own under ``STATE_DIR/replicated``. Each service is in base.py (what they all
have), kafka_broker.py and cassandra_node.py.
"""

from __future__ import annotations

from foresight.services.base import REPLICATED_NODES, ServiceSpec, port_open, render
from foresight.services.cassandra_node import CassandraSpec
from foresight.services.kafka_broker import KafkaSpec
from foresight.settings import Settings

__all__ = [
    "CassandraSpec",
    "KafkaSpec",
    "ServiceSpec",
    "all_specs",
    "port_open",
    "render",
    "service_names",
    "spec_by_name",
]


def all_specs(settings: Settings, replicated: bool = False) -> list[ServiceSpec]:
    """The local services of one set, in start order (Kafka first)."""
    if not replicated:
        return [KafkaSpec(settings), CassandraSpec(settings)]
    return [
        *(KafkaSpec(settings, node) for node in REPLICATED_NODES),
        *(CassandraSpec(settings, node) for node in REPLICATED_NODES),
    ]


def service_names(settings: Settings) -> list[str]:
    """Every service's name, the single set's then the replicated set's."""
    return [s.name for r in (False, True) for s in all_specs(settings, replicated=r)]


def spec_by_name(settings: Settings, name: str) -> ServiceSpec:
    """A service of either set by its name: ``kafka``, ``cassandra``, ``kafka-2``..."""
    for replicated in (False, True):
        for spec in all_specs(settings, replicated):
            if spec.name == name:
                return spec
    raise KeyError(name)
