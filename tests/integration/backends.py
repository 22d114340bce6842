"""Where the integration tests find Kafka and Cassandra: local services, or testcontainers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaException

from foresight.cassandra import make_cluster
from foresight.settings import Settings
from foresight.topics import admin_client


def check_services(settings: Settings, timeout: float) -> None:
    """Fail the test run, naming the service, when Kafka or Cassandra does not answer."""
    try:
        admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        pytest.fail(
            f"Kafka at {settings.kafka_bootstrap_servers} is not answering ({exc}); "
            "start it with `make services-up`",
            pytrace=False,
        )
    cluster = make_cluster(settings.cassandra_hosts, settings.cassandra_port, timeout)
    try:
        cluster.connect().execute("SELECT release_version FROM system.local")
    except NoHostAvailable as exc:
        pytest.fail(
            f"Cassandra at {settings.cassandra_contact_points}:{settings.cassandra_port} is not "
            f"answering ({exc}); start it with `make services-up`",
            pytrace=False,
        )
    finally:
        cluster.shutdown()


def local_services(timeout: float) -> Settings:
    settings = Settings()
    check_services(settings, timeout)
    return settings


@contextmanager
def docker_services() -> Iterator[Settings]:
    """Kafka and Cassandra in containers (needs a Docker engine; not available on CI here)."""
    from testcontainers.cassandra import CassandraContainer
    from testcontainers.kafka import KafkaContainer

    with (
        KafkaContainer("apache/kafka:4.1.2").with_kraft() as kafka,
        CassandraContainer("cassandra:5.0.6") as cassandra,
    ):
        settings = Settings(
            kafka_bootstrap_servers=kafka.get_bootstrap_server(),
            cassandra_contact_points=cassandra.get_container_host_ip(),
            cassandra_port=int(cassandra.get_exposed_port(9042)),
        )
        check_services(settings, 60.0)
        yield settings
