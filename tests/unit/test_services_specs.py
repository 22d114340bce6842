"""The local services' specs: the single set as it always was, and the replicated set's three
Kafka brokers and three Cassandra nodes, each on its own loopback address, folder and token,
none of them on the single set's address."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from foresight.services.kafka_broker import new_cluster_id
from foresight.services.provision import lib_dir
from foresight.services.specs import (
    CassandraSpec,
    KafkaSpec,
    ServiceSpec,
    all_specs,
    spec_by_name,
)
from foresight.settings import REPLICATED_HOSTS, Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings over a state folder and a jar cache of this test's own (the cache
    holds only the one jar the Cassandra command names)."""
    cache = tmp_path / "cache"
    jamm = lib_dir(cache, "cassandra") / "jamm-0.4.0.jar"
    jamm.parent.mkdir(parents=True)
    jamm.touch()
    return Settings(state_dir=tmp_path / "state", cache_dir=cache)


def properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return dict(line.split("=", 1) for line in lines)


def flag(command: list[str], prefix: str) -> str:
    (value,) = [arg.removeprefix(prefix) for arg in command if arg.startswith(prefix)]
    return value


def test_the_single_set_is_one_kafka_and_one_cassandra_on_127_0_0_1(settings: Settings) -> None:
    specs = all_specs(settings)
    assert [s.name for s in specs] == ["kafka", "cassandra"]
    assert {s.host for s in specs} == {"127.0.0.1"}
    assert [s.home for s in specs] == [
        settings.state_dir / "kafka",
        settings.state_dir / "cassandra",
    ]


def test_the_replicated_set_is_three_brokers_then_three_nodes(settings: Settings) -> None:
    specs = all_specs(settings, replicated=True)
    assert [s.name for s in specs] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "cassandra-1",
        "cassandra-2",
        "cassandra-3",
    ]
    assert [s.host for s in specs] == [*REPLICATED_HOSTS, *REPLICATED_HOSTS]
    assert "127.0.0.1" not in REPLICATED_HOSTS
    homes = [s.home for s in specs]
    assert len(set(homes)) == 6
    assert all(h.parent == settings.state_dir / "replicated" for h in homes)
    # the same jars as the single set
    assert {s.lib for s in specs} == {s.lib for s in all_specs(settings)}


def test_spec_by_name_finds_a_node_of_either_set(settings: Settings) -> None:
    node = spec_by_name(settings, "cassandra-2")
    assert isinstance(node, CassandraSpec)
    assert (node.node, node.host) == (2, REPLICATED_HOSTS[1])
    assert spec_by_name(settings, "kafka").host == "127.0.0.1"
    with pytest.raises(KeyError):
        spec_by_name(settings, "kafka-4")


def test_a_broker_of_the_quorum_listens_on_its_own_address(settings: Settings) -> None:
    broker = spec_by_name(settings, "kafka-2")
    assert isinstance(broker, KafkaSpec)
    broker.write_config()
    config = properties(broker.home / "server.properties")
    host = REPLICATED_HOSTS[1]
    port, controller = settings.kafka_port, settings.kafka_controller_port
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == ",".join(
        f"{n}@{h}:{controller}" for n, h in enumerate(REPLICATED_HOSTS, 1)
    )
    assert config["listeners"] == f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}"
    assert config["advertised.listeners"] == f"PLAINTEXT://{host}:{port}"
    assert config["log.dirs"] == str(broker.home / "data")
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert config[key] == "3", key
    assert config["min.insync.replicas"] == "2"
    assert config["transaction.state.log.min.isr"] == "2"
    assert broker.ports == [port, controller]


def test_the_single_broker_keeps_its_one_node_quorum(settings: Settings) -> None:
    broker = spec_by_name(settings, "kafka")
    assert isinstance(broker, KafkaSpec)
    broker.write_config()
    config = properties(broker.home / "server.properties")
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["min.insync.replicas"] == "1"


def test_a_cassandra_node_of_the_ring_has_its_address_seeds_and_folders(
    settings: Settings,
) -> None:
    node = spec_by_name(settings, "cassandra-3")
    node.prepare()
    config = yaml.safe_load((node.home / "cassandra.yaml").read_text())
    host = REPLICATED_HOSTS[2]
    assert config["listen_address"] == config["rpc_address"] == host
    assert config["cluster_name"] == "foresight-replicated"
    seeds = config["seed_provider"][0]["parameters"][0]["seeds"]
    assert seeds == ",".join(f"{h}:{settings.cassandra_storage_port}" for h in REPLICATED_HOSTS)
    assert config["native_transport_port"] == settings.cassandra_port
    assert config["data_file_directories"] == [f"{node.home / 'data'}/data"]
    assert config["commitlog_directory"] == f"{node.home / 'data'}/commitlog"


def test_the_single_cassandra_keeps_its_cluster_and_seed(settings: Settings) -> None:
    node = spec_by_name(settings, "cassandra")
    node.prepare()
    config = yaml.safe_load((node.home / "cassandra.yaml").read_text())
    assert config["cluster_name"] == "foresight-local"
    assert config["listen_address"] == "127.0.0.1"
    assert config["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:7000"
    assert flag(node.command(), "-Dcassandra.initial_token=") == "0"
    assert flag(node.command(), "-Xmx") == f"{settings.cassandra_heap_mb}m"


def test_the_ring_tokens_are_evenly_spaced_and_distinct(settings: Settings) -> None:
    nodes = [s for s in all_specs(settings, replicated=True) if isinstance(s, CassandraSpec)]
    tokens = [int(flag(n.command(), "-Dcassandra.initial_token=")) for n in nodes]
    assert tokens[0] == -(2**63)
    gaps = {b - a for a, b in zip(tokens, [*tokens[1:], tokens[0] + 2**64], strict=True)}
    assert max(gaps) - min(gaps) <= 2  # a third of the ring each


def test_the_replicated_set_has_its_own_heap_sizes(settings: Settings) -> None:
    sized = settings.model_copy(
        update={"replicated_kafka_heap_mb": 300, "replicated_cassandra_heap_mb": 900}
    )
    heaps = {s.name: flag(s.command(), "-Xmx") for s in all_specs(sized, replicated=True)}
    assert heaps == {
        "kafka-1": "300m",
        "kafka-2": "300m",
        "kafka-3": "300m",
        "cassandra-1": "900m",
        "cassandra-2": "900m",
        "cassandra-3": "900m",
    }
    single = {s.name: flag(s.command(), "-Xmx") for s in all_specs(sized)}
    assert single == {
        "kafka": f"{sized.kafka_heap_mb}m",
        "cassandra": f"{sized.cassandra_heap_mb}m",
    }


def test_each_node_logs_to_its_own_folder(settings: Settings) -> None:
    specs: list[ServiceSpec] = all_specs(settings, replicated=True)
    assert [s.log_file.name for s in specs] == ["server.log"] * 3 + ["system.log"] * 3
    assert len({s.log_file for s in specs}) == 6


def test_the_replicated_nodes_never_skip_their_commit_log(settings: Settings) -> None:
    # The set exists to have nodes killed -9: with -Dcassandra.unsafesystem a killed node
    # forgot the keyspaces created just before (their schema lived in memtables only).
    for node in all_specs(settings, replicated=True):
        if isinstance(node, CassandraSpec):
            assert not [a for a in node.command() if "unsafesystem" in a or "skip_sync" in a]
    single = spec_by_name(settings, "cassandra").command()
    assert "-Dcassandra.unsafesystem=true" in single  # the single set's tests keep their speed


def test_a_kafka_cluster_id_never_reads_as_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    # One random id in 64 began with "-": the storage tool took it for an option and
    # formatting failed ("argument --cluster-id/-t: expected one argument").
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(range(16)))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    cluster_id = new_cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
