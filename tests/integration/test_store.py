"""The cache node's store on real Cassandra: versions, holdings both ways, pending pushes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from consumers.store import ContentStore, StoredVersion
from foresight.cassandra import connect
from foresight.migrate import migrate
from foresight.settings import Settings


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ContentStore]:
    migrate(settings)
    cluster, session = connect(settings)
    yield ContentStore(session, settings.cassandra_keyspace)
    session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}")
    cluster.shutdown()


def _version(content_id: str, version: int, body: bytes) -> StoredVersion:
    return StoredVersion(
        content_id,
        version,
        hashlib.sha256(body).hexdigest(),
        f'"{version}"',
        "text/html",
        len(body),
        body,
    )


async def test_versions_and_latest(store: ContentStore) -> None:
    assert await store.latest("p1") is None
    await store.put_version(_version("p1", 1, b"one"))
    await store.put_version(_version("p1", 2, b"two!"))
    await store.put_version(_version("p1", 2, b"two!"))  # a replay changes nothing
    latest = await store.latest("p1")
    assert latest is not None and latest.version == 2 and latest.size == 4
    old = await store.version("p1", 1)
    assert old is not None and old.body == b"one"


async def test_holdings_are_indexed_both_ways(store: ContentStore) -> None:
    v1 = _version("p2", 1, b"x")
    await store.record_holding("alice", v1)
    await store.record_holding("bob", v1)
    assert await store.holders("p2") == {"alice": 1, "bob": 1}
    assert await store.holdings("alice") == {"p2": (1, v1.digest)}
    await store.drop_holding("bob", "p2")
    assert await store.holders("p2") == {"alice": 1}
    assert await store.holdings("bob") == {}


async def test_pending_pushes_and_history(store: ContentStore) -> None:
    await store.queue_pending("carol", "p3", 4)
    assert await store.pending("carol") == {"p3": 4}
    await store.clear_pending("carol", "p3")
    assert await store.pending("carol") == {}
    await store.append_history("carol", 1_700_000_000.0, "e1", "p3", "request")
