"""One way to open a Cassandra session, and to await its queries from asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel, DriverException
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from foresight.settings import Settings

#: What the driver raises when the cluster does not answer (down, timing out, unreachable).
CASSANDRA_DOWN = (DriverException, NoHostAvailable, OSError)


def make_cluster(
    hosts: Sequence[str],
    port: int,
    request_timeout: float = 10.0,
    consistency: str = "LOCAL_ONE",
) -> Cluster:
    """A Cluster speaking protocol v5 (Cassandra 5.0) with a token-aware policy, whose every
    statement runs at ``consistency`` (a ConsistencyLevel name; LOCAL_ONE is the driver's own
    default) unless the statement names its own."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        request_timeout=request_timeout,
        consistency_level=ConsistencyLevel.name_to_value[consistency],
    )
    return Cluster(
        list(hosts),
        port=port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5,
    )


def connect(settings: Settings, keyspace: str | None = None) -> tuple[Cluster, Session]:
    """Connect to the configured contact points (blocking: call it from an executor in async
    code). The caller owns the cluster and shuts it down. Reads and writes run at
    FORESIGHT_CASSANDRA_CONSISTENCY."""
    cluster = make_cluster(
        settings.cassandra_hosts,
        settings.cassandra_port,
        consistency=settings.cassandra_consistency,
    )
    return cluster, cluster.connect(keyspace)


async def execute(session: Session, statement: Any, params: Sequence[Any] = ()) -> Any:
    """Await one statement: the driver's callbacks run on its own thread, so the result is
    handed to the loop with call_soon_threadsafe and nothing else runs in the callback."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    response = session.execute_async(statement, params)

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def on_ok(rows: Any) -> None:
        loop.call_soon_threadsafe(settle, rows, None)

    def on_error(exc: BaseException) -> None:
        loop.call_soon_threadsafe(settle, None, exc)

    response.add_callbacks(on_ok, on_error)
    return await future
