"""The cache node's Cassandra tables, through prepared statements awaited from asyncio.

Writes are idempotent (the same version written twice is the same row), so a replayed
prefetch command is harmless. In-flight requests are capped so a burst cannot queue without
bound inside the driver. A pending push lives as long as a prefetch command
(FORESIGHT_PREFETCH_TTL_S): past that its prediction is stale, so the row expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from consumers.metrics import CASSANDRA_ERRORS, CASSANDRA_SECONDS
from foresight.cassandra import execute
from foresight.settings import Settings


@dataclass(frozen=True)
class StoredVersion:
    content_id: str
    version: int
    digest: str
    etag: str | None
    content_type: str
    size: int
    body: bytes | None = None  # None when only the metadata was read


def _first(rows: list[Any]) -> Any:
    """The first row of a result (the driver's async callbacks hand over a plain list: the
    first page, up to 5,000 rows, more than any of these queries returns)."""
    return rows[0] if rows else None


def _now() -> datetime:
    return datetime.now(UTC)


#: FORESIGHT_PREFETCH_TTL_S's default, for a store made without settings (bench, tests).
DEFAULT_PENDING_TTL_S: float = Settings.model_fields["prefetch_ttl_s"].default
#: Cassandra refuses a TTL over 20 years.
MAX_TTL_S = 630_720_000


def pending_ttl(seconds: float) -> int:
    """A pending push's TTL in whole seconds for ``USING TTL``: rounded up, and at least 1,
    since a TTL of 0 would mean "never expires".

    >>> pending_ttl(600.0), pending_ttl(0.2), pending_ttl(1e12)
    (600, 1, 630720000)
    """
    return min(MAX_TTL_S, max(1, math.ceil(seconds)))


class ContentStore:
    """content_versions, content_latest, client_holdings, content_holders, client_history and
    pending_pushes for one keyspace."""

    def __init__(
        self,
        session: Session,
        keyspace: str,
        max_in_flight: int = 128,
        *,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
    ) -> None:
        self._session = session
        self._limit = asyncio.Semaphore(max_in_flight)
        self._pending_ttl = pending_ttl(pending_ttl_s)
        ks = keyspace
        prepare = session.prepare
        self._put_version = prepare(
            f"INSERT INTO {ks}.content_versions (content_id, version, digest, etag, content_type,"
            " size, fetched_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._put_latest = prepare(
            f"INSERT INTO {ks}.content_latest (content_id, version, digest, etag, content_type,"
            " size, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._get_latest = prepare(
            f"SELECT version, digest, etag, content_type, size FROM {ks}.content_latest"
            " WHERE content_id = ?"
        )
        self._get_version = prepare(
            f"SELECT version, digest, etag, content_type, size, body FROM {ks}.content_versions"
            " WHERE content_id = ? AND version = ?"
        )
        self._put_holding = prepare(
            f"INSERT INTO {ks}.client_holdings (client_id, content_id, version, digest,"
            " pushed_at) VALUES (?, ?, ?, ?, ?)"
        )
        self._put_holder = prepare(
            f"INSERT INTO {ks}.content_holders (content_id, client_id, version) VALUES (?, ?, ?)"
        )
        self._del_holding = prepare(
            f"DELETE FROM {ks}.client_holdings WHERE client_id = ? AND content_id = ?"
        )
        self._del_holder = prepare(
            f"DELETE FROM {ks}.content_holders WHERE content_id = ? AND client_id = ?"
        )
        self._get_holdings = prepare(
            f"SELECT content_id, version, digest FROM {ks}.client_holdings WHERE client_id = ?"
        )
        self._get_holders = prepare(
            f"SELECT client_id, version FROM {ks}.content_holders WHERE content_id = ?"
        )
        self._put_history = prepare(
            f"INSERT INTO {ks}.client_history (client_id, ts, event_id, content_id, kind)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._put_pending = prepare(
            f"INSERT INTO {ks}.pending_pushes (client_id, content_id, version, queued_at)"
            " VALUES (?, ?, ?, ?) USING TTL ?"
        )
        self._get_pending = prepare(
            f"SELECT content_id, version FROM {ks}.pending_pushes WHERE client_id = ?"
        )
        self._del_pending = prepare(
            f"DELETE FROM {ks}.pending_pushes WHERE client_id = ? AND content_id = ?"
        )

    async def _run(
        self, statement: Any, params: tuple[Any, ...], name: str = "", *, write: bool = False
    ) -> Any:
        """Run one statement. At most ``max_in_flight`` writes run at once; reads never queue
        behind them: a read is what a request (or a prefetch holding an item's lock that a
        request may wait on) is waiting for, while writes run in the background."""
        name = name or _statement_name(statement)
        async with self._limit if write else contextlib.nullcontext():
            started = time.perf_counter()
            try:
                return await execute(self._session, statement, params)
            except Exception:
                CASSANDRA_ERRORS.labels(name).inc()
                raise
            finally:
                CASSANDRA_SECONDS.labels(name).observe(time.perf_counter() - started)

    async def _run_together(
        self, name: str, *writes: tuple[PreparedStatement, tuple[Any, ...]]
    ) -> None:
        """Writes to different tables in one request: an UNLOGGED batch, so one round trip
        (and one driver callback) instead of one per table. Each write is idempotent, so a
        batch applied in part and retried ends the same."""
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for statement, params in writes:
            batch.add(statement, params)
        await self._run(batch, (), name, write=True)

    async def latest(self, content_id: str) -> StoredVersion | None:
        row = _first(await self._run(self._get_latest, (content_id,)))
        if row is None:
            return None
        return StoredVersion(
            content_id, row.version, row.digest, row.etag, row.content_type, row.size
        )

    async def version(self, content_id: str, version: int) -> StoredVersion | None:
        row = _first(await self._run(self._get_version, (content_id, version)))
        if row is None:
            return None
        return StoredVersion(
            content_id,
            row.version,
            row.digest,
            row.etag,
            row.content_type,
            row.size,
            row.body or b"",
        )

    async def put_version(self, item: StoredVersion) -> None:
        """Store a fetched version and make it the latest (both writes are idempotent)."""
        assert item.body is not None
        now = _now()
        meta = (item.content_id, item.version, item.digest, item.etag, item.content_type)
        await self._run_together(
            "put_version",
            (self._put_version, (*meta, item.size, now, item.body)),
            (self._put_latest, (*meta, item.size, now)),
        )

    async def record_holding(self, client_id: str, item: StoredVersion) -> None:
        """The agent holds the item: both indexes (by client and by content) in one request."""
        await self.record_holdings([(client_id, item)])

    async def record_holdings(self, held: Sequence[tuple[str, StoredVersion]]) -> None:
        """Several (client, item) holdings in one request (see CacheNode: pushes come in
        bursts, and one request per push cost the node more than the pushes themselves)."""
        now = _now()
        writes: list[tuple[PreparedStatement, tuple[Any, ...]]] = []
        for client_id, item in held:
            writes.append(
                (self._put_holding, (client_id, item.content_id, item.version, item.digest, now))
            )
            writes.append((self._put_holder, (item.content_id, client_id, item.version)))
        await self._run_together("record_holding", *writes)

    async def drop_holding(self, client_id: str, content_id: str) -> None:
        await self._run_together(
            "drop_holding",
            (self._del_holding, (client_id, content_id)),
            (self._del_holder, (content_id, client_id)),
        )

    async def holdings(self, client_id: str) -> dict[str, tuple[int, str]]:
        rows = await self._run(self._get_holdings, (client_id,))
        return {row.content_id: (row.version, row.digest) for row in rows}

    async def holders(self, content_id: str) -> dict[str, int]:
        rows = await self._run(self._get_holders, (content_id,))
        return {row.client_id: row.version for row in rows}

    async def append_history(
        self, client_id: str, ts: float, event_id: str, content_id: str, kind: str
    ) -> None:
        when = datetime.fromtimestamp(ts, UTC)
        await self._run(
            self._put_history, (client_id, when, event_id, content_id, kind), write=True
        )

    async def queue_pending(self, client_id: str, content_id: str, version: int) -> None:
        """Keep a push for a client whose agent is offline, until it connects or the push's
        prediction expires (the row's TTL; queueing it again starts the TTL again)."""
        params = (client_id, content_id, version, _now(), self._pending_ttl)
        await self._run(self._put_pending, params, write=True)

    async def pending(self, client_id: str) -> dict[str, int]:
        rows = await self._run(self._get_pending, (client_id,))
        return {row.content_id: row.version for row in rows}

    async def clear_pending(self, client_id: str, content_id: str) -> None:
        await self._run(self._del_pending, (client_id, content_id), write=True)


def _statement_name(statement: Any) -> str:
    """A short label for a statement: its verb and table ("select content_latest")."""
    return _name_of_query(getattr(statement, "query_string", ""))


@functools.cache
def _name_of_query(query: str) -> str:
    words = query.split()
    if not words:
        return "other"
    verb = words[0].lower()
    marker = {"insert": "into", "delete": "from", "select": "from", "update": ""}.get(verb)
    if marker is None:
        return verb
    if not marker:
        return f"update {words[1].rsplit('.', 1)[-1]}"
    lowered = [w.lower() for w in words]
    table = words[lowered.index(marker) + 1] if marker in lowered else "?"
    return f"{verb} {table.rsplit('.', 1)[-1]}"
