"""Client history in Cassandra: a client whose record a worker does not hold gets it back.

A client clicks three items through one worker group; a second, fresh worker group (its own
topics and changelog, an empty table, the same keyspace) then sees the client come back two
hours later. The second worker must know it as a returning client: its second session, its
earlier items in the record's Bloom filter, its event count carried on. `foresight inspect
client --json` shows the history read from Cassandra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from foresight.migrate import migrate
from foresight.settings import Settings
from foresight.stack import free_port
from foresight.topics import create_topics
from producers.publisher import InteractionPublisher
from schemas import Interaction
from streams.engine import loads_record
from streams.seen import contains

from .conftest import read_all, settings_env
from .test_worker import Worker, _get

CLIENT = "returning-1"
EARLIER = ["film-a", "film-b", "film-c"]
# More than the predictor's session gap (30 min): the return starts a new session.
AWAY_S = 2 * 3600.0
# One `foresight inspect` run: interpreter start, a Cassandra session, the ring topic read.
INSPECT_TIMEOUT_S = 60.0


def _group(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """A worker group of its own: topics, changelog, web port and state folder."""
    mine = settings.with_topic_prefix(name).model_copy(
        update={
            "worker_group": f"w-{name}-{settings.cassandra_keyspace}",
            "worker_web_port": free_port(),
            "state_dir": tmp_path / name,
            "snapshot_interval_s": 3600.0,
            "prefetch_shed_after_s": None,
            "history": "restore",  # off by default (docs/settings.md says why)
        }
    )
    create_topics(mine)
    return mine


def _click(content_id: str, ts: float) -> Interaction:
    return Interaction(
        event_id=uuid.uuid4().hex,
        client_id=CLIENT,
        content_id=content_id,
        kind="view",
        ts=ts,
    )


def test_a_returning_client_gets_its_history_back_from_cassandra(
    settings: Settings, tmp_path: Path
) -> None:
    migrate(settings)
    start = time.time() - AWAY_S - 600.0
    first_group = _group(settings, tmp_path, "first")
    first = Worker(first_group, tmp_path / "first.log")
    try:
        first.wait_ready()
        with InteractionPublisher(first_group) as publisher:
            for n, item in enumerate(EARLIER):
                publisher.publish(_click(item, start + 10.0 * n))
        first.wait_processed(len(EARLIER))
    finally:
        first.stop()  # a clean stop writes what is still queued

    second_group = _group(settings, tmp_path, "second")
    second = Worker(second_group, tmp_path / "second.log")
    try:
        second.wait_ready()
        with InteractionPublisher(second_group) as publisher:
            publisher.publish(_click("film-d", start + AWAY_S))
        second.wait_processed(1)
        status, view = _get(f"http://127.0.0.1:{second.port}/clients/{CLIENT}")
        assert status == 200, view
        assert view["sessions"] >= 2, view
        assert view["events"] == len(EARLIER) + 1
        assert view["seen_count"] == len(EARLIER) + 1
        changelog = f"{second_group.worker_group}-client_state-changelog"
        record = loads_record(read_all(second_group, changelog, 1)[-1])
        assert all(contains(record.session.seen, item) for item in EARLIER)

        # Until the second worker's writes are flushed, Cassandra has the first session only.
        deadline = time.monotonic() + 30.0
        report: dict[str, object] = {}
        while time.monotonic() < deadline:
            done = subprocess.run(
                [sys.executable, "-m", "foresight", "inspect", "client", CLIENT, "--json"],
                env=settings_env(second_group),
                capture_output=True,
                text=True,
                timeout=INSPECT_TIMEOUT_S,
            )
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            history = report["history"]
            assert isinstance(history, dict), report
            if history["events"] == len(EARLIER) + 1:
                break
            time.sleep(0.5)
        history = report["history"]
        assert isinstance(history, dict)
        assert history["sessions"] >= 2
        assert [r["content_id"] for r in history["recent"]][:4] == ["film-d", *EARLIER[::-1]]
        assert history["last_seen"] == pytest.approx(start + AWAY_S, abs=0.001)  # ms in Cassandra
        assert history["personal"] in (True, False)
    finally:
        second.stop()
