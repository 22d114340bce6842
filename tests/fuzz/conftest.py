"""Fixtures of the fuzz tests: the integration services, the running stack, and the figures.

The tests that need Kafka and Cassandra reuse tests/integration's ``base_settings``, so they
FAIL when the services are down, as every integration test does. Each test records its figure
(one JSON object) with ``figure``: it goes to ``fuzz-figures.jsonl`` in pytest's base temporary
folder and to a "fuzz figures" section at the end of the run, pass or fail.
Run ``pytest tests/fuzz --basetemp=DIR`` to find the file at ``DIR/fuzz-figures.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from foresight.cassandra import connect
from foresight.settings import Settings
from foresight.topics import admin_client, create_topics
from tests.integration.conftest import SERVICE_TIMEOUT_S, base_settings

from .stack import Stack, running_stack

# Re-exported: the fixture that FAILS when the services are down.
__all__ = ["base_settings"]

FIGURES_FILE = "fuzz-figures.jsonl"
_recorded: list[dict[str, Any]] = []
_figures_path: list[Path] = []

Figure = Callable[..., None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: hostile generated input at a boundary (tests/fuzz); prints a figure"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fuzz/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.fuzz)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _recorded:
        return
    terminalreporter.section("fuzz figures")
    for line in _recorded:
        terminalreporter.write_line(line["summary"])
    if _figures_path:
        terminalreporter.write_line(f"(one JSON object per line in {_figures_path[0]})")


@pytest.fixture(scope="session")
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / FIGURES_FILE
    _figures_path.append(path)
    return path


@pytest.fixture
def figure(figures_file: Path) -> Figure:
    """Record a boundary's figure: ``figure(boundary, summary, **numbers)``."""

    def record(boundary: str, summary: str, **numbers: Any) -> None:
        line = {"boundary": boundary, "summary": f"{boundary}: {summary}", **numbers}
        with figures_file.open("a") as handle:
            handle.write(json.dumps(line, default=str) + "\n")
        _recorded.append(line)

    return record


StartStack = Callable[..., AbstractContextManager[Stack]]


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """As tests/integration's: topics and a keyspace of this test's own. Dropped afterwards:
    the fuzz tests write 10,000s of records, and a shared Cassandra with a 1 GiB heap runs out
    of it after about 150 forgotten keyspaces."""
    tag = uuid.uuid4().hex[:10]
    mine = base_settings.with_topic_prefix(f"fz{tag}").model_copy(
        update={"cassandra_keyspace": f"fz{tag}"}
    )
    create_topics(mine)
    try:
        yield mine
    finally:
        drop_everything(mine, worker_group=f"w-{mine.cassandra_keyspace}")


def drop_everything(settings: Settings, worker_group: str) -> None:
    """Delete the test's topics (and its worker's internal ones) and drop its keyspace."""
    admin = admin_client(settings)
    existing = admin.list_topics(timeout=SERVICE_TIMEOUT_S).topics
    prefix = settings.topic_interactions.rsplit("-", 1)[0]
    mine = [t for t in existing if t.startswith((f"{prefix}-", f"{worker_group}-"))]
    if mine:
        for future in admin.delete_topics(mine, operation_timeout=SERVICE_TIMEOUT_S).values():
            with contextlib.suppress(KafkaException):
                future.result(SERVICE_TIMEOUT_S)
    cluster, session = connect(settings)
    try:
        # A keyspace name cannot be a bound value; this one is "fz" and ten hex digits.
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}")
    finally:
        cluster.shutdown()


@pytest.fixture
def start_stack(settings: Settings, tmp_path: Path) -> StartStack:
    """``start_stack(*services)``: run origin, node-0 and/or worker on this test's topics."""

    def start(*services: str) -> AbstractContextManager[Stack]:
        return running_stack(settings, tmp_path, services or ("origin", "node-0", "worker"))

    return start
