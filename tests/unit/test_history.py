"""The worker's client history without Cassandra: bounded buffers, an outage, a slow read.

A store that fails stands in for a Cassandra that is down: the worker must go on, with the
writes it could not make dropped and counted, and a client it cannot read start afresh.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cassandra.cluster import NoHostAvailable

from schemas import Interaction
from streams.client_state import ClientState
from streams.engine import ClientRecord
from streams.history import READS, WRITES, ClientHistory


def _event(n: int, client: str = "c-1") -> Interaction:
    return Interaction(
        event_id=f"e-{n}", client_id=client, content_id=f"p-{n}", kind="view", ts=1000.0 + n
    )


def _record(events: int) -> ClientRecord:
    return ClientRecord(session=ClientState(items=["p-1"], sessions=2), events=events)


def _count(table: str, outcome: str) -> float:
    return float(WRITES.labels(table, outcome)._value.get())


class DownStore:
    """Every write and read fails as the driver fails when no host answers."""

    def __init__(self) -> None:
        self.session = self
        self.read_profile = "SELECT"
        self.written: list[Any] = []

    def write(self, rows: list[Any], profiles: dict[str, ClientRecord]) -> tuple[int, int]:
        raise NoHostAvailable("no host", {})

    def execute_async(self, statement: Any, params: Any) -> Any:
        raise NoHostAvailable("no host", {})


class SlowStore(DownStore):
    """A read whose answer never comes."""

    def execute_async(self, statement: Any, params: Any) -> Any:
        class Never:
            def add_callbacks(self, ok: Any, error: Any) -> None:
                pass

        return Never()


class TakingStore(DownStore):
    def write(self, rows: list[Any], profiles: dict[str, ClientRecord]) -> tuple[int, int]:
        self.written.append((list(rows), dict(profiles)))
        return 0, 0


def _history(store: Any, capacity: int = 100, timeout: float = 0.05) -> ClientHistory:
    return ClientHistory(store, capacity, timeout)


def test_one_profile_per_client_per_flush_and_every_request_a_row() -> None:
    store = TakingStore()
    history = _history(store)
    for n in range(3):
        history.remember(_event(n), _record(n + 1))
    history.remember(_event(9, "c-2"), _record(1))
    asyncio.run(history.flush())
    [(rows, profiles)] = store.written
    assert [row[3] for row in rows] == ["p-0", "p-1", "p-2", "p-9"]
    assert profiles["c-1"].events == 3 and set(profiles) == {"c-1", "c-2"}
    assert history.queued == 0


def test_cassandra_down_drops_and_counts_the_writes_and_the_worker_goes_on() -> None:
    history = _history(DownStore())
    before = _count("client_history", "dropped_error"), _count("client_profile", "dropped_error")
    for n in range(4):
        history.remember(_event(n), _record(n + 1))
    asyncio.run(history.flush())  # does not raise
    after = _count("client_history", "dropped_error"), _count("client_profile", "dropped_error")
    assert after[0] - before[0] == 4 and after[1] - before[1] == 1
    assert history.queued == 0


def test_a_full_buffer_drops_new_writes_and_counts_them() -> None:
    history = _history(TakingStore(), capacity=2)
    before = _count("client_history", "dropped_full")
    for n in range(5):
        history.remember(_event(n, f"c-{n}"), _record(1))
    assert _count("client_history", "dropped_full") - before == 3
    assert history.queued == 4  # two rows, two profiles


def test_a_read_that_fails_starts_the_client_afresh_and_backs_off() -> None:
    history = _history(DownStore())
    failed, skipped = READS.labels("failed"), READS.labels("skipped")
    before = failed._value.get(), skipped._value.get()
    assert asyncio.run(history.restore("c-1")) is None
    assert asyncio.run(history.restore("c-2")) is None  # within the back-off: not asked
    assert failed._value.get() - before[0] == 1 and skipped._value.get() - before[1] == 1


def test_a_read_that_does_not_answer_times_out() -> None:
    history = _history(SlowStore(), timeout=0.01)
    before = READS.labels("failed")._value.get()
    assert asyncio.run(history.restore("c-1")) is None
    assert READS.labels("failed")._value.get() - before == 1
