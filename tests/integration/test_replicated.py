"""The replicated set keeps working with one node of each kind killed -9: a topic with
replication factor 3 and min.insync.replicas 2 takes and serves records with a broker gone, the
keyspace with replication factor 3 takes and serves reads and writes at LOCAL_QUORUM with a
Cassandra node gone; each killed node comes back and catches up.

Runs in `make test-replicated` only (marker ``replicated``, deselected by default): that target
starts the replicated set, runs this module and stops the set. The module expects the set up
(`make services-up-replicated`) and FAILS when it is not whole. The settings are the ones
FORESIGHT_REPLICATED=1 gives, so what is tested is what the switch sets.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from cassandra import ConsistencyLevel, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import NoHostAvailable, Session
from cassandra.query import SimpleStatement
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from consumers.store import ContentStore, StoredVersion
from foresight.cassandra import connect
from foresight.kafka import producer_config
from foresight.migrate import drop_keyspaces, migrate
from foresight.services import cluster, manager
from foresight.services.specs import CassandraSpec, KafkaSpec, all_specs, spec_by_name
from foresight.settings import Settings
from foresight.topics import admin_client, create_topics, delete_topics

from .conftest import SERVICE_TIMEOUT_S, read_all

pytestmark = [pytest.mark.replicated, pytest.mark.timeout(900)]

# A node restarted on a loaded two-core machine: a broker's log recovery, a Cassandra node's
# commit log replay and gossip; `foresight services up` allows the same.
RESTART_TIMEOUT_S = 180.0
# A produce that the leader's loss holds up: the controller fences a dead broker after
# broker.session.timeout.ms (9 s) and elects a new leader; librdkafka retries meanwhile.
FLUSH_TIMEOUT_S = 120.0


def _brokers(settings: Settings) -> list[KafkaSpec]:
    return [s for s in all_specs(settings, replicated=True) if isinstance(s, KafkaSpec)]


def _nodes(settings: Settings) -> list[CassandraSpec]:
    return [s for s in all_specs(settings, replicated=True) if isinstance(s, CassandraSpec)]


@pytest.fixture(scope="module")
def replicated() -> Settings:
    """The settings FORESIGHT_REPLICATED=1 gives; the test fails when the set is not whole."""
    settings = Settings(replicated=True)
    problem = cluster.kafka_quorum(_brokers(settings)) or cluster.cassandra_ring(_nodes(settings))
    if problem:
        pytest.fail(
            f"the replicated set is not whole ({problem}): start it with "
            "`make services-up-replicated`",
            pytrace=False,
        )
    return settings


@pytest.fixture
def mine(replicated: Settings) -> Iterator[Settings]:
    """Topics and a keyspace of this test's own, removed afterwards."""
    tag = f"r{uuid.uuid4().hex[:10]}"
    settings = replicated.with_topic_prefix(tag).model_copy(update={"cassandra_keyspace": tag})
    yield settings
    delete_topics(settings, (tag,))
    drop_keyspaces(settings, tag)


def _produce(settings: Settings, topic: str, values: list[bytes]) -> float:
    """Produce with the producers' own config (acks=all, idempotent); every record must be
    acknowledged. Returns the seconds it took."""
    started = time.monotonic()
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(producer_config(settings))
    for value in values:
        producer.produce(topic, value, key=value[-2:], on_delivery=delivered)
    assert producer.flush(FLUSH_TIMEOUT_S) == 0, "records still unacknowledged"
    assert failures == []
    return time.monotonic() - started


def _partition(settings: Settings, topic: str) -> tuple[int, list[int], list[int]]:
    """The leader, replicas and in-sync replicas of the topic's partition 0."""
    meta = admin_client(settings).list_topics(topic, timeout=SERVICE_TIMEOUT_S)
    partition = meta.topics[topic].partitions[0]
    return partition.leader, sorted(partition.replicas), sorted(partition.isrs)


def _wait_for(what: str, check: Callable[[], bool], timeout: float = RESTART_TIMEOUT_S) -> None:
    cluster.wait_until_whole(lambda: None if check() else what, what, timeout)


def test_a_topic_takes_and_serves_records_with_its_leader_killed(mine: Settings) -> None:
    create_topics(mine)
    topic = mine.topic_content_updates  # one partition: its leader is the broker to kill
    leader, replicas, isr = _partition(mine, topic)
    assert replicas == isr == [1, 2, 3]
    admin = admin_client(mine)
    [config] = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert config.result()["min.insync.replicas"].value == "2"

    before = [f"before-{i:04d}".encode() for i in range(200)]
    _produce(mine, topic, before)
    victim = spec_by_name(mine, f"kafka-{leader}")
    assert manager.kill(victim) is not None
    try:
        during = [f"during-{i:04d}".encode() for i in range(200)]
        took = _produce(mine, topic, during)
        new_leader, _replicas, isr = _partition(mine, topic)
        assert new_leader != leader
        assert isr == sorted({1, 2, 3} - {leader})
        assert sorted(read_all(mine, topic, 400)) == sorted(before + during)
        print(f"\nkafka: {victim.name} (the leader) killed; 200 records acked in {took:.1f} s")
    finally:
        started = time.monotonic()
        manager.start(victim, RESTART_TIMEOUT_S, lambda: None)
    cluster.wait_until_whole(
        lambda: cluster.kafka_quorum(_brokers(mine)), "the kafka quorum", RESTART_TIMEOUT_S
    )
    _wait_for(f"{victim.name} back in sync", lambda: _partition(mine, topic)[2] == [1, 2, 3])
    print(
        f"kafka: {victim.name} back in the quorum and in sync in {time.monotonic() - started:.1f} s"
    )
    after = [f"after-{i:04d}".encode() for i in range(100)]
    _produce(mine, topic, after)
    assert sorted(read_all(mine, topic, 500)) == sorted(before + during + after)


def _item(content_id: str) -> StoredVersion:
    body = f"<p>{content_id}</p>".encode()
    return StoredVersion(
        content_id, 1, hashlib.sha256(body).hexdigest(), '"1"', "text/html", len(body), body
    )


async def _write(session: Session, keyspace: str, ids: list[str]) -> None:
    store = ContentStore(session, keyspace)
    await asyncio.gather(*(store.put_version(_item(i)) for i in ids))


async def _read(session: Session, keyspace: str, ids: list[str]) -> list[StoredVersion | None]:
    store = ContentStore(session, keyspace)
    return list(await asyncio.gather(*(store.version(i, 1) for i in ids)))


#: How Cassandra refuses a request that too few live replicas can serve: Unavailable when the
#: coordinator already holds them down, a timeout while its failure detector has not yet
#: convicted them; NoHostAvailable when the driver's retry on another node met the same.
REFUSED = (Unavailable, WriteTimeout, ReadTimeout, NoHostAvailable)


def _refused(error: BaseException) -> bool:
    if isinstance(error, NoHostAvailable):
        return bool(error.errors) and all(_refused(e) for e in error.errors.values())
    return isinstance(error, REFUSED)


async def test_the_keyspace_reads_and_writes_at_local_quorum_with_a_node_killed(
    mine: Settings,
) -> None:
    keyspace = mine.cassandra_keyspace
    await asyncio.to_thread(migrate, mine)
    handle, session = await asyncio.to_thread(connect, mine, keyspace)
    try:
        row = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (keyspace,),
        ).one()
        assert row.replication["replication_factor"] == "3"
        assert handle.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_QUORUM
        first, second = [f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)]
        await _write(session, keyspace, first)
        await _with_nodes_killed(mine, session, keyspace, first, second)
        # Back together: what was written with a node down reads at LOCAL_QUORUM, and more.
        everything = [*first, *second, "c0"]
        await _write(session, keyspace, ["c0"])
        assert await _read(session, keyspace, everything) == [_item(i) for i in everything]
    finally:
        await asyncio.to_thread(handle.shutdown)


async def _with_nodes_killed(
    settings: Settings, session: Session, keyspace: str, first: list[str], second: list[str]
) -> None:
    """Kill cassandra-3, check quorum reads and writes, kill cassandra-2, check a quorum is
    refused; bring both back and wait for the ring."""
    killed: list[CassandraSpec] = []
    try:
        killed.append(CassandraSpec(settings, 3))
        assert await asyncio.to_thread(manager.kill, killed[-1]) is not None
        # One of three replicas gone: LOCAL_QUORUM (two) still writes and reads ...
        await _write(session, keyspace, second)
        assert await _read(session, keyspace, first + second) == [_item(i) for i in first + second]
        # ... where ALL cannot: the node is really gone.
        everyone = SimpleStatement(
            f"SELECT version FROM {keyspace}.content_latest WHERE content_id = 'a0'",
            consistency_level=ConsistencyLevel.ALL,
        )
        with pytest.raises(REFUSED) as refused:
            session.execute(everyone)
        assert _refused(refused.value), refused.value
        # Two gone: a write is refused, not made on one replica (as LOCAL_ONE would).
        killed.append(CassandraSpec(settings, 2))
        assert await asyncio.to_thread(manager.kill, killed[-1]) is not None
        with pytest.raises(REFUSED) as refused:
            await _write(session, keyspace, ["c0"])
        assert _refused(refused.value), refused.value
    finally:
        started = time.monotonic()
        for node in killed:
            await asyncio.to_thread(manager.start, node, RESTART_TIMEOUT_S, lambda: None)
        await asyncio.to_thread(
            cluster.wait_until_whole,
            lambda: cluster.cassandra_ring(_nodes(settings)),
            "the cassandra ring",
            RESTART_TIMEOUT_S,
        )
        print(
            f"\ncassandra: {len(killed)} nodes back, ring UN in {time.monotonic() - started:.1f} s"
        )
