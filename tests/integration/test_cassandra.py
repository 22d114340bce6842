"""`db migrate` is idempotent, and the tables take and give back a content version."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cassandra.cluster import Session

from foresight.cassandra import connect
from foresight.migrate import migrate, migrations
from foresight.settings import Settings


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    cluster, sess = connect(settings)
    yield sess
    sess.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}")
    cluster.shutdown()


def test_migrate_twice_changes_nothing_the_second_time(
    settings: Settings, session: Session
) -> None:
    shipped = [name for _number, name, _cql in migrations()]
    first = migrate(settings)
    assert first.keyspace_created and first.applied == shipped
    second = migrate(settings)
    assert not second.keyspace_created and second.applied == []
    assert second.already_applied == shipped
    tables = {
        row.table_name
        for row in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (settings.cassandra_keyspace,),
        )
    }
    assert {
        "content_versions",
        "content_latest",
        "client_holdings",
        "content_holders",
        "client_history",
        "predictions",
    } <= tables


def test_cli_migrate_says_nothing_to_do_on_the_second_run(
    settings: Settings, session: Session
) -> None:
    env = {**os.environ, "FORESIGHT_CASSANDRA_KEYSPACE": settings.cassandra_keyspace}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "foresight", "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert "applied 001_init.cql" in runs[0].stdout
    assert "nothing to do" in runs[1].stdout


def test_content_version_round_trip_with_prepared_statements(
    settings: Settings, session: Session
) -> None:
    migrate(settings)
    ks = settings.cassandra_keyspace
    body = b"<html>" + b"x" * 5000 + b"</html>"
    digest = hashlib.sha256(body).hexdigest()
    insert = session.prepare(
        f"INSERT INTO {ks}.content_versions (content_id, version, digest, etag, content_type, "
        "size, fetched_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    select = session.prepare(
        f"SELECT version, digest, content_type, size, body FROM {ks}.content_versions "
        "WHERE content_id = ? LIMIT 1"
    )
    now = datetime.now(UTC)
    session.execute(insert, ("page/1", 1, "old", None, "text/html", 3, now, b"old"))
    session.execute(insert, ("page/1", 2, digest, '"v2"', "text/html", len(body), now, body))
    row = session.execute(select, ("page/1",)).one()
    assert row.version == 2  # newest first
    assert row.body == body and row.digest == digest and row.size == len(body)
