"""When the replicated set counts as whole: every broker sees the three brokers of one
cluster, every Cassandra node sees the three nodes Up and Normal; otherwise one line naming
what is missing, for the timeout error."""

from __future__ import annotations

import pytest

from foresight.services.cluster import (
    BrokerView,
    NodeView,
    quorum_problem,
    ring_problem,
    wait_until_whole,
)
from foresight.services.provision import ServiceError

ALL = frozenset({1, 2, 3})
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def brokers(*seen: frozenset[int] | None, cluster: str = "c1") -> list[BrokerView]:
    return [BrokerView(f"kafka-{n}", n, cluster, s) for n, s in enumerate(seen, 1)]


def nodes(*normal: frozenset[str] | None, all_up: bool = True, schemas: int = 1) -> list[NodeView]:
    versions = frozenset(f"schema-{i}" for i in range(schemas))
    return [
        NodeView(f"cassandra-{n}", HOSTS[n - 1], v, all_up and v is not None, versions)
        for n, v in enumerate(normal, 1)
    ]


def test_a_quorum_is_whole_when_every_broker_sees_all_three() -> None:
    assert quorum_problem(brokers(ALL, ALL, ALL)) is None


@pytest.mark.parametrize(
    ("views", "problem"),
    [
        (brokers(ALL, None, ALL), "kafka-2 does not answer"),
        (brokers(ALL, ALL, frozenset({1, 3})), "kafka-3 sees 2 of 3 brokers (not 2)"),
        (brokers(frozenset({1}), frozenset({2}), None), "kafka-3 does not answer"),
        (
            [*brokers(ALL, ALL), BrokerView("kafka-3", 3, "c2", ALL)],
            "the brokers are not one cluster: c1, c2",
        ),
    ],
)
def test_a_broken_quorum_is_named(views: list[BrokerView], problem: str) -> None:
    assert quorum_problem(views) == problem


def test_a_ring_is_whole_when_every_node_sees_all_three_up_and_normal() -> None:
    every = frozenset(HOSTS)
    assert ring_problem(nodes(every, every, every)) is None


@pytest.mark.parametrize(
    ("views", "problem"),
    [
        (nodes(frozenset(HOSTS), None, frozenset(HOSTS)), "cassandra-2 does not answer CQL"),
        (
            nodes(frozenset(HOSTS), frozenset(HOSTS[:2]), frozenset(HOSTS)),
            "cassandra-2 does not see 127.0.0.4 as NORMAL",
        ),
        (
            nodes(frozenset(HOSTS), frozenset(HOSTS), frozenset(HOSTS), all_up=False),
            "cassandra-1 does not see every node up (a read at ALL was refused)",
        ),
        (
            # a node killed -9 just after a keyspace was made, back without it
            nodes(frozenset(HOSTS), frozenset(HOSTS), frozenset(HOSTS), schemas=2),
            "cassandra-1 sees 2 schema versions: the nodes do not agree on the schema yet",
        ),
    ],
)
def test_a_broken_ring_is_named(views: list[NodeView], problem: str) -> None:
    assert ring_problem(views) == problem


def test_waiting_gives_up_with_the_last_problem() -> None:
    answers = iter(["kafka-3 does not answer", "kafka-3 sees 2 of 3 brokers (not 2)"])
    waited: list[float] = []
    with pytest.raises(ServiceError, match=r"kafka quorum not whole after 2 s: kafka-3 sees"):
        wait_until_whole(
            lambda: next(answers),
            "kafka quorum",
            timeout=2.0,
            sleep=waited.append,
            clock=iter([0.0, 1.0, 2.5]).__next__,
        )
    assert waited == [1.0]


def test_waiting_returns_once_whole() -> None:
    answers = iter(["cassandra-1 does not answer CQL", None])
    wait_until_whole(
        lambda: next(answers),
        "cassandra ring",
        timeout=60.0,
        sleep=lambda _s: None,
        clock=iter([0.0, 1.0, 2.0]).__next__,
    )
