"""Settings come from FORESIGHT_* variables, are frozen, and document their variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from foresight.settings import Settings


def test_defaults_are_loopback_and_single_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.replication_map() == {"class": "SimpleStrategy", "replication_factor": 1}
    assert settings.state_dir.is_absolute()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORESIGHT_KAFKA_BOOTSTRAP_SERVERS", "k1:19092,k2:19092")
    monkeypatch.setenv("FORESIGHT_INTERACTIONS_PARTITIONS", "12")
    monkeypatch.setenv("FORESIGHT_STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    assert settings.kafka_port == 19092
    assert settings.topic_partitions()["interactions"] == 12
    assert settings.state_dir == tmp_path / "state"


def test_cluster_replication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_CASSANDRA_REPLICATION_STRATEGY", "NetworkTopologyStrategy")
    monkeypatch.setenv("FORESIGHT_CASSANDRA_DATACENTERS", '{"dc1": 3, "dc2": 2}')
    assert Settings().replication_map() == {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2}


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.kafka_bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FORESIGHT_CASSANDRA_KEYSPACE", "drop table; --"),
        ("FORESIGHT_INTERACTIONS_PARTITIONS", "0"),
        ("FORESIGHT_CASSANDRA_PORT", "70000"),
        ("FORESIGHT_CASSANDRA_REPLICATION_STRATEGY", "EverywhereStrategy"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_every_field_documents_its_environment_variable() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"FORESIGHT_{name.upper()}" in field.description, name


def test_every_topic_has_a_dead_letter_topic_for_its_inputs() -> None:
    topics = Settings().topic_partitions()
    for source in ("interactions", "feedback", "prefetch-commands", "content-updates"):
        assert f"{source}-dlq" in topics


def test_as_environment_gives_a_child_process_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)
    original = Settings(
        kafka_bootstrap_servers="k:19092",
        origin_allowed_hosts=["a.example", "b.example"],
        cassandra_datacenters={"dc1": 3},
        agent_token_secrets=["s" * 40],
        state_dir=tmp_path,
    )
    for name, value in original.as_environment().items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.model_dump() == original.model_dump()
    assert [s.get_secret_value() for s in child.agent_token_secrets] == ["s" * 40]
