"""FORESIGHT_REPLICATED=1 points every process at the replicated set and turns on the
replication it is for: topics RF 3 with min.insync.replicas 2, the keyspace RF 3, requests at
LOCAL_QUORUM. Each of those is a setting of its own, which an explicit variable overrides."""

from __future__ import annotations

import os

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from pydantic import ValidationError

from foresight.cassandra import connect
from foresight.kafka import producer_config
from foresight.settings import REPLICATED_HOSTS, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)


def test_without_the_switch_nothing_is_replicated() -> None:
    settings = Settings()
    assert settings.replicated is False
    assert settings.topic_replication_factor == 1
    assert settings.topic_min_insync_replicas == 1
    assert settings.cassandra_replication_factor == 1
    assert settings.cassandra_consistency == "LOCAL_ONE"  # the driver's own default


@pytest.mark.parametrize("value", ["1", "true"])
def test_the_switch_sets_the_replicated_set_and_its_replication(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FORESIGHT_REPLICATED", value)
    settings = Settings()
    assert settings.replicated is True
    assert settings.kafka_bootstrap_servers == ",".join(f"{h}:9092" for h in REPLICATED_HOSTS)
    assert settings.cassandra_hosts == list(REPLICATED_HOSTS)
    assert settings.topic_replication_factor == 3
    assert settings.topic_min_insync_replicas == 2
    assert settings.replication_map() == {"class": "SimpleStrategy", "replication_factor": 3}
    assert settings.cassandra_consistency == "LOCAL_QUORUM"


def test_an_explicit_variable_wins_over_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_REPLICATED", "1")
    monkeypatch.setenv("FORESIGHT_CASSANDRA_CONSISTENCY", "QUORUM")
    monkeypatch.setenv("FORESIGHT_TOPIC_MIN_INSYNC_REPLICAS", "3")
    settings = Settings()
    assert settings.cassandra_consistency == "QUORUM"
    assert settings.topic_min_insync_replicas == 3
    assert settings.topic_replication_factor == 3


def test_the_switch_passes_to_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_REPLICATED", "1")
    parent = Settings()
    for name, value in parent.as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == parent


def test_a_min_insync_above_the_replication_factor_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # acks=all could then never be satisfied: every write would fail NOT_ENOUGH_REPLICAS
    monkeypatch.setenv("FORESIGHT_TOPIC_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match="FORESIGHT_TOPIC_MIN_INSYNC_REPLICAS"):
        Settings()


def test_an_unknown_consistency_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_CASSANDRA_CONSISTENCY", "MOST")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("level", ["LOCAL_QUORUM", "LOCAL_ONE", "ALL"])
def test_every_session_reads_and_writes_at_the_configured_level(
    monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    monkeypatch.setattr(Cluster, "connect", lambda self, keyspace=None: None)
    cluster, _session = connect(Settings(cassandra_consistency=level))
    try:
        profile = cluster.profile_manager.default
        assert profile.consistency_level == ConsistencyLevel.name_to_value[level]
    finally:
        cluster.shutdown()


def test_every_producer_waits_for_all_in_sync_replicas() -> None:
    config = producer_config(Settings(replicated=True))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["bootstrap.servers"] == ",".join(f"{h}:9092" for h in REPLICATED_HOSTS)
