"""Client history in Cassandra: the worker writes it, and reads it back for a returning client.

Each interaction the worker applies becomes a ``client_history`` row (ts, event_id,
content_id, kind; the table's 30-day TTL) and refreshes the client's ``client_profile`` row
(last seen, events, hits, sessions, items seen, and the predictor's :class:`ClientState` as the
record holds it). When an event comes for a client the worker's table holds no record of (a new
worker group, a record dropped or expired), the worker reads the profile first and builds the
record from it, so the client is known as returning, with every item it requested before.

Writes never hold up the agent: :meth:`ClientHistory.remember` only appends to bounded buffers
(a client's profile is kept once, its latest); a timer hands them to a thread that writes them
concurrently (:meth:`ClientHistory.flush`). A full buffer or a Cassandra that does not answer
drops writes, counted and logged, and the worker goes on. The read on a miss is awaited with a
timeout; after one fails, misses skip it for :data:`READ_BACKOFF_S` (the client then starts
afresh, as before history existed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from prometheus_client import Counter, Gauge, Histogram

from foresight.cassandra import CASSANDRA_DOWN, execute
from schemas import Interaction
from streams.client_state import ClientState, dumps_client_state, loads_client_state
from streams.engine import ClientRecord

log = logging.getLogger(__name__)

#: After a read that failed or timed out, misses go without one for this long: a Cassandra
#: that is down must not cost every new client the read timeout.
READ_BACKOFF_S = 5.0
#: At most one warning per this many seconds while writes are being dropped.
WARN_EVERY_S = 10.0
#: Writes in flight at once in the flushing thread.
WRITE_CONCURRENCY = 64

WRITES = Counter(
    "foresight_worker_history_writes_total",
    "Client history writes to Cassandra, by table and outcome (written, dropped_full: the "
    "buffer was full, dropped_error: Cassandra did not take it)",
    ["table", "outcome"],
)
QUEUED = Gauge("foresight_worker_history_queue", "History rows and profiles waiting to be written")
READS = Counter(
    "foresight_worker_history_reads_total",
    "Profile reads for clients the worker held no record of, by outcome (found, absent, "
    "failed, skipped: within the back-off after a failure)",
    ["outcome"],
)
READ_SECONDS = Histogram(
    "foresight_worker_history_read_seconds",
    "Time an event of an unknown client waited for its profile",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _seconds(value: datetime | None) -> float | None:
    """The driver returns timestamps as naive UTC datetimes."""
    return value.replace(tzinfo=UTC).timestamp() if value is not None else None


@dataclass(frozen=True)
class Profile:
    """One client_profile row, decoded."""

    client_id: str
    last_seen: float | None
    events: int
    hits: int
    sessions: int
    seen_count: int
    state: ClientState
    updated_at: float | None

    def record(self) -> ClientRecord:
        """The worker's record for a client that comes back: what outlives a session."""
        return ClientRecord(session=self.state, events=self.events, hits=self.hits)


class HistoryStore:
    """Prepared statements over client_history and client_profile (blocking calls: run them
    in a thread, or await :attr:`read_profile` with :func:`foresight.cassandra.execute`)."""

    def __init__(self, session: Session, keyspace: str) -> None:
        self.session = session
        self.put_row = session.prepare(
            f"INSERT INTO {keyspace}.client_history (client_id, ts, event_id, content_id, kind) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        self.put_profile = session.prepare(
            f"INSERT INTO {keyspace}.client_profile (client_id, last_seen, events, hits, "
            "sessions, seen_count, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.read_profile = session.prepare(
            f"SELECT client_id, last_seen, events, hits, sessions, seen_count, state, updated_at "
            f"FROM {keyspace}.client_profile WHERE client_id = ?"
        )
        self.read_recent = session.prepare(
            f"SELECT ts, event_id, content_id, kind FROM {keyspace}.client_history "
            "WHERE client_id = ? LIMIT ?"
        )

    def write(
        self, rows: list[tuple[Any, ...]], profiles: dict[str, ClientRecord]
    ) -> tuple[int, int]:
        """Write the rows and profiles concurrently; the numbers of each that failed."""
        now = datetime.now(UTC)
        profile_params = [
            (
                client_id,
                _at(record.session.last_ts) if record.session.last_ts is not None else None,
                record.events,
                record.hits,
                record.session.sessions,
                record.session.seen_count,
                dumps_client_state(record.session),
                now,
            )
            for client_id, record in profiles.items()
        ]
        failed = []
        for statement, params in ((self.put_row, rows), (self.put_profile, profile_params)):
            results = execute_concurrent_with_args(
                self.session,
                statement,
                params,
                concurrency=WRITE_CONCURRENCY,
                raise_on_first_error=False,
            )
            failed.append(sum(1 for ok, _ in results if not ok))
        return failed[0], failed[1]

    def profile(self, client_id: str) -> Profile | None:
        return profile_of(self.session.execute(self.read_profile, (client_id,)).one())

    def recent(self, client_id: str, limit: int) -> list[dict[str, Any]]:
        """The client's last ``limit`` requests, newest first."""
        rows = self.session.execute(self.read_recent, (client_id, limit))
        return [
            {
                "ts": _seconds(r.ts),
                "event_id": r.event_id,
                "content_id": r.content_id,
                "kind": r.kind,
            }
            for r in rows
        ]


def profile_of(row: Any) -> Profile | None:
    if row is None or row.state is None:
        return None
    return Profile(
        client_id=row.client_id,
        last_seen=_seconds(row.last_seen),
        events=row.events or 0,
        hits=row.hits or 0,
        sessions=row.sessions or 0,
        seen_count=row.seen_count or 0,
        state=loads_client_state(row.state),
        updated_at=_seconds(row.updated_at),
    )


class ClientHistory:
    """The worker's side: bounded write buffers, their flush, and the read on a miss."""

    def __init__(self, store: HistoryStore, capacity: int, read_timeout_s: float) -> None:
        self.store = store
        self.capacity = capacity
        self.read_timeout_s = read_timeout_s
        self._rows: list[tuple[Any, ...]] = []
        self._profiles: dict[str, ClientRecord] = {}
        self._reads_off_until = 0.0
        self._warned_at = -WARN_EVERY_S
        self._dropped_since_warning = 0
        self._full_rows = WRITES.labels("client_history", "dropped_full")
        self._full_profiles = WRITES.labels("client_profile", "dropped_full")

    def remember(self, event: Interaction, record: ClientRecord) -> None:
        """Queue the event's history row and the client's new profile (no I/O here)."""
        if len(self._rows) < self.capacity:
            self._rows.append(
                (event.client_id, _at(event.ts), event.event_id, event.content_id, event.kind)
            )
        else:
            self._full_rows.inc()
            self._dropped(1)
        if event.client_id in self._profiles or len(self._profiles) < self.capacity:
            self._profiles[event.client_id] = record
        else:
            self._full_profiles.inc()
            self._dropped(1)

    @property
    def queued(self) -> int:
        return len(self._rows) + len(self._profiles)

    async def flush(self) -> None:
        """Write what is queued, in a thread; what Cassandra does not take is dropped."""
        rows, profiles = self._rows, self._profiles
        if not rows and not profiles:
            return
        self._rows, self._profiles = [], {}
        try:
            failed_rows, failed_profiles = await asyncio.to_thread(self.store.write, rows, profiles)
        except CASSANDRA_DOWN as exc:
            failed_rows, failed_profiles = len(rows), len(profiles)
            log.debug("history write failed: %r", exc)
        for table, total, failed in (
            ("client_history", len(rows), failed_rows),
            ("client_profile", len(profiles), failed_profiles),
        ):
            WRITES.labels(table, "written").inc(total - failed)
            if failed:
                WRITES.labels(table, "dropped_error").inc(failed)
        self._dropped(failed_rows + failed_profiles)
        QUEUED.set(self.queued)

    def _dropped(self, count: int) -> None:
        if not count:
            return
        self._dropped_since_warning += count
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "client history: %d writes dropped (buffer full or Cassandra not answering)",
                self._dropped_since_warning,
            )
            self._warned_at, self._dropped_since_warning = now, 0

    async def restore(self, client_id: str) -> ClientRecord | None:
        """The record of a client the worker holds none of, from its profile; None when it
        has none, or Cassandra did not answer within the timeout."""
        if time.monotonic() < self._reads_off_until:
            READS.labels("skipped").inc()
            return None
        started = time.perf_counter()
        try:
            rows = await asyncio.wait_for(
                execute(self.store.session, self.store.read_profile, (client_id,)),
                self.read_timeout_s,
            )
            profile = profile_of(next(iter(rows or ()), None))  # the callback's first page
        except (TimeoutError, *CASSANDRA_DOWN) as exc:
            self._reads_off_until = time.monotonic() + READ_BACKOFF_S
            READS.labels("failed").inc()
            log.warning(
                "client history: profile of %s not read (%r); none read for %.0f s",
                client_id,
                exc,
                READ_BACKOFF_S,
            )
            return None
        finally:
            READ_SECONDS.observe(time.perf_counter() - started)
        READS.labels("found" if profile is not None else "absent").inc()
        return profile.record() if profile is not None else None
