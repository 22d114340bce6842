"""Apply the Cassandra DDL in schemas/cql, in order, once each, and say what changed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from cassandra.cluster import Session

from foresight.cassandra import connect
from foresight.settings import Settings

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.cql$")


@dataclass(frozen=True)
class MigrationResult:
    keyspace_created: bool
    applied: list[str]
    already_applied: list[str]


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, CQL text) of every migration shipped in schemas/cql, in order."""
    found = []
    for entry in resources.files("schemas").joinpath("cql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def statements(cql: str, keyspace: str) -> list[str]:
    """Split a migration into statements, with comments removed and the keyspace filled in."""
    lines = [line for line in cql.splitlines() if not line.strip().startswith("--")]
    text = "\n".join(lines).replace("{keyspace}", keyspace)
    return [s.strip() for s in text.split(";") if s.strip()]


def _replication_cql(settings: Settings) -> str:
    parts = ", ".join(
        f"'{k}': '{v}'" if isinstance(v, str) else f"'{k}': {int(v)}"
        for k, v in settings.replication_map().items()
    )
    return "{" + parts + "}"


def migrate(settings: Settings) -> MigrationResult:
    """Create the keyspace and apply every migration not yet recorded as applied."""
    cluster, session = connect(settings)
    try:
        return _migrate(session, settings)
    finally:
        cluster.shutdown()


def drop_keyspaces(settings: Settings, prefix: str) -> list[str]:
    """Drop every keyspace whose name starts with ``prefix`` (a run's or a test's own, never
    a system one); return their names."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", prefix) or prefix.startswith("system"):
        raise ValueError(f"refusing to drop keyspaces by prefix {prefix!r}")
    cluster, session = connect(settings)
    try:
        names = [
            row.keyspace_name
            for row in session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
            if row.keyspace_name.startswith(prefix)
        ]
        for name in names:
            session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)
        return names
    finally:
        cluster.shutdown()


def _migrate(session: Session, settings: Settings) -> MigrationResult:
    ks = settings.cassandra_keyspace  # an identifier checked by the settings' pattern
    exists = session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (ks,)
    ).one()
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {_replication_cql(settings)}"
    )
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {ks}.schema_migrations "
        "(version int PRIMARY KEY, name text, applied_at timestamp)"
    )
    done = {row.version for row in session.execute(f"SELECT version FROM {ks}.schema_migrations")}
    record = session.prepare(
        f"INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
    )
    applied: list[str] = []
    already: list[str] = []
    for number, name, cql in migrations():
        if number in done:
            already.append(name)
            continue
        for statement in statements(cql, ks):
            session.execute(statement)
        session.execute(record, (number, name, datetime.now(UTC)))
        applied.append(name)
    return MigrationResult(
        keyspace_created=exists is None, applied=applied, already_applied=already
    )
