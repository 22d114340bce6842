"""The shipped DDL splits into statements for the configured keyspace only."""

from __future__ import annotations

from foresight.migrate import migrations, statements


def test_migrations_are_numbered_in_order() -> None:
    numbers = [number for number, _name, _cql in migrations()]
    assert numbers == sorted(numbers) and numbers[0] == 1


def test_statements_target_the_keyspace() -> None:
    _n, _name, cql = migrations()[0]
    parts = statements(cql, "ks_test")
    tables = {
        "content_versions",
        "content_latest",
        "client_holdings",
        "content_holders",
        "client_history",
        "predictions",
    }
    assert all(p.startswith("CREATE TABLE IF NOT EXISTS ks_test.") for p in parts)
    assert tables <= {p.split("ks_test.")[1].split(" ")[0] for p in parts}
    assert not any("--" in p or "{keyspace}" in p for p in parts)
