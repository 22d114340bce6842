"""`foresight topics create`, `db migrate`, `schemas export` and `produce`."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from foresight.cli.common import console, fail, log_as_service, settings_of
from foresight.settings import Settings

T = TypeVar("T")


def cassandra_down(settings: Settings) -> str:
    """The one line for a Cassandra that does not answer."""
    return (
        f"Cassandra at {settings.cassandra_contact_points}:{settings.cassandra_port} did "
        "not answer; is it running? try `foresight services up`"
    )


def _kafka_down(settings_servers: str, exc: Exception) -> str:
    return (
        f"Kafka at {settings_servers} did not answer ({exc}); "
        "is it running? try `foresight services up`"
    )


@click.group("topics")
def topics_group() -> None:
    """Kafka topics."""


@topics_group.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create every topic with its configured partitions (idempotent)."""
    from confluent_kafka import KafkaException

    from foresight.topics import create_topics

    settings = settings_of(ctx)
    try:
        results = create_topics(settings)
    except KafkaException as exc:
        fail(_kafka_down(settings.kafka_bootstrap_servers, exc))
    for result in results:
        console.print(f"{result.name:<24} {result.partitions:>3} partitions  {result.action}")
    if all(r.action == "exists" for r in results):
        console.print(f"nothing to do: all {len(results)} topics exist")


@click.group("db")
def db_group() -> None:
    """Cassandra keyspace and tables."""


@db_group.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Create the keyspace and tables (idempotent)."""
    from cassandra.cluster import NoHostAvailable

    from foresight.migrate import migrate

    settings = settings_of(ctx)
    try:
        result = migrate(settings)
    except NoHostAvailable:
        fail(cassandra_down(settings))
    ks = settings.cassandra_keyspace
    if result.keyspace_created:
        console.print(f"created keyspace {ks} ({settings.cassandra_replication_strategy})")
    for name in result.applied:
        console.print(f"applied {name}")
    if not result.applied and not result.keyspace_created:
        console.print(
            f"nothing to do: keyspace {ks} has all {len(result.already_applied)} migrations"
        )


@click.group("schemas")
def schemas_group() -> None:
    """Record schemas."""


@schemas_group.command("export")
@click.option("--check", is_flag=True, help="Exit 1 if the files are not up to date.")
def schemas_export(check: bool) -> None:
    """Write the JSON Schema files in schemas/json from the records."""
    from schemas.export import JSON_DIR, json_schemas, write_json_schemas

    if check:
        stale = [
            n
            for n, c in json_schemas().items()
            if not (JSON_DIR / n).exists() or (JSON_DIR / n).read_bytes() != c
        ]
        if stale:
            fail(f"stale JSON Schemas: {', '.join(stale)}; run `foresight schemas export`")
        console.print("JSON Schemas are up to date")
        return
    changed = write_json_schemas()
    console.print(f"wrote {len(changed)} file(s)" if changed else "nothing to do: up to date")


def _batches_with_progress(
    items: Iterable[T], total: int | None, label: str, size: int = 1000
) -> Iterator[list[T]]:
    """``items`` in lists of ``size``, advancing a progress bar as each list is done."""
    columns = [
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)
        iterator = iter(items)
        while batch := list(itertools.islice(iterator, size)):
            yield batch
            progress.advance(task, len(batch))


@click.command("produce")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option(
    "--dataset",
    type=click.Choice(["yoochoose"]),
    help="Read SOURCE as a session-click TSV (SessionId ItemId Time) instead of JSONL.",
)
@click.pass_context
def produce_command(ctx: click.Context, source: Path, dataset: str | None) -> None:
    """Publish Interaction events from a JSONL file (or - for stdin) or a dataset.

    Each line is validated; invalid ones go to the dead-letter topic with their reason. Ends
    with `sent=N rejected=M`, and exits 1 when M > 0.
    """
    from producers.datasets import DatasetError, count_lines, read_jsonl, read_yoochoose
    from producers.publisher import DeliveryFailed, InteractionPublisher

    settings = settings_of(ctx)
    from_stdin = str(source) == "-"
    if not from_stdin and not source.is_file():
        fail(f"{source}: no such file")
    if dataset and from_stdin:
        fail("--dataset reads a file, not stdin")
    require_topics(settings, [settings.topic_interactions])
    publisher = InteractionPublisher(settings, source="cli")
    try:
        if dataset == "yoochoose":
            total = max(count_lines(source) - 1, 0)
            for events in _batches_with_progress(read_yoochoose(source), total, "producing"):
                publisher.publish_batch(events)
        else:
            stream = sys.stdin.buffer if from_stdin else source.open("rb")
            total_lines = None if from_stdin else count_lines(source)
            with stream:
                for lines in _batches_with_progress(read_jsonl(stream), total_lines, "producing"):
                    publisher.publish_batch(lines)
        publisher.close()
    except DatasetError as exc:
        fail(str(exc))
    except DeliveryFailed as exc:
        fail(f"Kafka refused events: {exc}")
    counts = publisher.counts
    click.echo(f"sent={counts.sent} rejected={counts.rejected}")
    if counts.rejected:
        for reason in counts.reasons[:5]:
            click.echo(f"  rejected: {reason}", err=True)
        sys.exit(1)


def require_topics(settings: Settings, topics: list[str]) -> None:
    """Fail in one line when Kafka is down or a topic is missing, before doing any work."""
    from confluent_kafka import KafkaException

    from foresight.topics import admin_client

    try:
        existing = admin_client(settings).list_topics(timeout=10).topics
    except KafkaException as exc:
        fail(_kafka_down(settings.kafka_bootstrap_servers, exc))
    missing = [t for t in topics if t not in existing]
    if missing:
        fail(f"topic {', '.join(missing)} does not exist; run `foresight topics create`")


@click.command("collector")
@click.option("--port", type=click.IntRange(1, 65535), help="Override FORESIGHT_COLLECTOR_PORT.")
@click.pass_context
def collector_command(ctx: click.Context, port: int | None) -> None:
    """Run the HTTP collector: POST /v1/events (JSON array or NDJSON) into Kafka."""
    from producers import collector

    settings = settings_of(ctx)
    if port is not None:
        settings = settings.model_copy(update={"collector_port": port})
    require_topics(settings, [settings.topic_interactions])
    log_as_service(ctx)
    console.print(
        f"collector on http://{settings.collector_host}:{settings.collector_port}/v1/events"
    )
    collector.run(settings)
