"""Save and load a worker group's global signals in Cassandra, in chunks, atomically.

The per-client state lives in a Faust table with a changelog; the global signals (shared by
all clients) are too large for one table value, so the worker snapshots them here on a timer
and when it stops, with the interactions offsets they include. A new worker loads the latest
snapshot before it processes anything: after a clean stop it resumes exactly where the last
one stopped; after a crash the signals miss at most the events since the last snapshot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cassandra.cluster import Session
from cassandra.util import uuid_from_time

CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    offsets: dict[int, int]
    events: int
    taken_at: datetime


class SnapshotStore:
    """Prepared statements over the worker_snapshot tables of one keyspace."""

    def __init__(self, session: Session, keyspace: str, worker_group: str) -> None:
        self._session = session
        self._group = worker_group
        self._put_chunk = session.prepare(
            f"INSERT INTO {keyspace}.worker_snapshot_chunks "
            "(worker_group, generation, chunk, data) VALUES (?, ?, ?, ?)"
        )
        self._put_latest = session.prepare(
            f"INSERT INTO {keyspace}.worker_snapshot_latest "
            "(worker_group, generation, chunks, offsets, events, taken_at) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._get_latest = session.prepare(
            f"SELECT generation, chunks, offsets, events, taken_at "
            f"FROM {keyspace}.worker_snapshot_latest WHERE worker_group = ?"
        )
        self._get_chunks = session.prepare(
            f"SELECT chunk, data FROM {keyspace}.worker_snapshot_chunks "
            "WHERE worker_group = ? AND generation = ?"
        )

    def save(self, data: bytes, offsets: dict[int, int], events: int) -> uuid.UUID:
        """Write every chunk, then point the group at the new generation."""
        generation: uuid.UUID = uuid_from_time(datetime.now(UTC))
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for number, chunk in enumerate(chunks):
            self._session.execute(self._put_chunk, (self._group, generation, number, chunk))
        self._session.execute(
            self._put_latest,
            (self._group, generation, len(chunks), offsets, events, datetime.now(UTC)),
        )
        return generation

    def load(self) -> Snapshot | None:
        """The group's current snapshot, or None when it has none (or it is incomplete)."""
        latest = self._session.execute(self._get_latest, (self._group,)).one()
        if latest is None:
            return None
        rows = sorted(
            self._session.execute(self._get_chunks, (self._group, latest.generation)),
            key=lambda row: row.chunk,
        )
        if [row.chunk for row in rows] != list(range(latest.chunks)):
            return None
        data = b"".join(row.data or b"" for row in rows)
        return Snapshot(data, dict(latest.offsets or {}), latest.events or 0, latest.taken_at)
