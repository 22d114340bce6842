"""The cache node's store on real Cassandra: versions, holdings both ways, pending pushes
and their expiry."""

from __future__ import annotations

import asyncio
import doctest
import hashlib
from collections.abc import AsyncIterator, Iterator

import pytest
from cassandra.cluster import Session

import consumers.store
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


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """A Cassandra session on this test's migrated keyspace, to look under the store."""
    migrate(settings)
    cluster, session = connect(settings)
    yield session
    session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}")
    cluster.shutdown()


def _pending_ttl(session: Session, keyspace: str, client_id: str) -> int | None:
    row = session.execute(
        f"SELECT TTL(version) FROM {keyspace}.pending_pushes WHERE client_id = %s", (client_id,)
    ).one()
    return None if row is None else row[0]


async def test_a_pending_push_expires_with_its_prediction(
    session: Session, settings: Settings
) -> None:
    """A push kept for a client that never connects is worthless once the prediction behind
    it has expired: the row lives as long as a prefetch command (FORESIGHT_PREFETCH_TTL_S)."""
    store = ContentStore(
        session, settings.cassandra_keyspace, pending_ttl_s=settings.prefetch_ttl_s
    )
    await store.queue_pending("dave", "p4", 1)
    ttl = _pending_ttl(session, settings.cassandra_keyspace, "dave")
    assert ttl is not None and 0 < ttl <= settings.prefetch_ttl_s


async def test_a_pending_push_is_gone_once_its_ttl_has_passed(
    session: Session, settings: Settings
) -> None:
    store = ContentStore(session, settings.cassandra_keyspace, pending_ttl_s=2.0)
    await store.queue_pending("erin", "p5", 1)
    assert await store.pending("erin") == {"p5": 1}
    await asyncio.sleep(3.0)  # Cassandra expires cells by the second: 2 s have surely passed
    assert await store.pending("erin") == {}


def test_the_ttl_examples_run() -> None:
    assert doctest.testmod(consumers.store).failed == 0
