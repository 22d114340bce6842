"""`foresight services up|down|status|logs`: the local Kafka and Cassandra.

Two sets: the single set (one of each on 127.0.0.1) and, with ``--replicated``, the replicated
set (three Kafka brokers in one KRaft quorum and three Cassandra nodes in one ring, on
127.0.0.2-4). They run side by side; each command acts on one set, the one
FORESIGHT_REPLICATED names unless ``--replicated`` or ``--single`` says otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from foresight.cli.common import console, fail, settings_of
from foresight.services import cluster, manager
from foresight.services.provision import ServiceError, ensure_libs, require_tool
from foresight.services.specs import (
    CassandraSpec,
    KafkaSpec,
    ServiceSpec,
    all_specs,
    spec_by_name,
)
from foresight.settings import REPLICATED_DEFAULTS, REPLICATED_HOSTS, Settings

#: Every service `logs` can show, of both sets.
SERVICE_NAMES = [
    "kafka",
    "cassandra",
    *(
        f"{kind}-{n}"
        for kind in ("kafka", "cassandra")
        for n in range(1, len(REPLICATED_HOSTS) + 1)
    ),
]

replicated_option = click.option(
    "--replicated/--single",
    default=None,
    help="The replicated set (three Kafka brokers, three Cassandra nodes on "
    "127.0.0.2-4) or the single set (127.0.0.1). Default: FORESIGHT_REPLICATED.",
)


def _which(settings: Settings, replicated: bool | None) -> bool:
    return settings.replicated if replicated is None else replicated


@click.group("services")
def services_group() -> None:
    """Run Apache Kafka and Apache Cassandra locally, on loopback."""


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[service]:<11}[/]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _provision(spec: ServiceSpec, progress: Progress) -> None:
    task = progress.add_task("checking the jar cache", service=spec.kind, total=None)
    downloads = 0

    def on_line(line: str) -> None:
        nonlocal downloads
        if "Downloaded from" in line:
            downloads += 1
            artifact = line.rsplit("/", 1)[-1].split(" ")[0]
            progress.update(
                task,
                description=f"downloading from Maven Central: {downloads} files, last {artifact}",
            )

    resolved = ensure_libs(spec.settings.cache_dir, spec.kind, on_line)
    if downloads:
        done = f"jars ready: {downloads} files downloaded from Maven Central"
    elif resolved:
        done = "jars ready: copied from the local Maven repository"
    else:
        done = f"jars cached in {spec.lib}"
    progress.update(task, description=done, total=1, completed=1)


def _start(
    spec: ServiceSpec,
    progress: Progress,
    timeout: float,
    ready: Callable[[], bool] | None = None,
) -> str:
    """Start one service (or find it running) and wait until it is ready: by default until
    it answers, or until ``ready()``."""
    existing = manager.running_process(spec)
    task = progress.add_task("starting", service=spec.name, total=None)
    started = time.monotonic()
    address = f"{spec.host}:{spec.port}"
    state = "up" if ready is None else "listening"

    def on_wait() -> None:
        last = manager.tail(spec.log_file, 1)
        hint = last[0][-80:] if last else ""
        progress.update(task, description=f"waiting for {address}  {hint}")

    if existing is not None:
        if not manager.wait_healthy(spec, timeout, on_wait, ready):
            raise ServiceError(
                f"{spec.name} (pid {existing.pid}) is running but does not "
                f"answer on {address}; see `foresight services logs {spec.name}`"
            )
        message = f"already running, pid {existing.pid}, {address}"
    else:
        pid = manager.start(spec, timeout, on_wait, ready)
        message = f"{state}, pid {pid}, {address}, in {time.monotonic() - started:.1f} s"
    progress.update(task, description=message, total=1, completed=1)
    return message


def _wait_whole(
    progress: Progress, label: str, problem: Callable[[], str | None], timeout: float, done: str
) -> None:
    task = progress.add_task("checking", service=label, total=None)
    cluster.wait_until_whole(
        problem,
        f"the {label}",
        timeout,
        on_wait=lambda found: progress.update(task, description=f"waiting: {found}"),
    )
    progress.update(task, description=done, total=1, completed=1)


def _up_replicated(specs: list[ServiceSpec], progress: Progress, timeout: float) -> None:
    """The brokers all at once (none answers before a second voter runs), then the quorum;
    then the Cassandra nodes one after the other, then the ring."""
    brokers = [s for s in specs if isinstance(s, KafkaSpec)]
    nodes = [s for s in specs if isinstance(s, CassandraSpec)]
    for broker in brokers:
        _start(broker, progress, timeout, ready=broker.listening)
    _wait_whole(
        progress,
        "kafka quorum",
        lambda: cluster.kafka_quorum(brokers),
        timeout,
        f"{len(brokers)} of {len(brokers)} brokers registered, seen from each",
    )
    for node in nodes:
        _start(node, progress, timeout)
    _wait_whole(
        progress,
        "cassandra ring",
        lambda: cluster.cassandra_ring(nodes),
        timeout,
        f"{len(nodes)} of {len(nodes)} nodes Up and Normal, seen from each",
    )


def _switch_hint() -> str:
    lines = [f"  FORESIGHT_{name.upper()}={value}" for name, value in REPLICATED_DEFAULTS.items()]
    return (
        "The replicated set is up. FORESIGHT_REPLICATED=1 points Foresight at it; it stands for\n"
        + "\n".join(lines)
        + "\n(a variable set explicitly wins)."
    )


@services_group.command("up")
@replicated_option
@click.pass_context
def up(ctx: click.Context, replicated: bool | None) -> None:
    """Provision (first time only), start and wait until Kafka and Cassandra answer; with
    --replicated, until the three brokers form their quorum and the three nodes are UN."""
    settings = settings_of(ctx)
    chosen = _which(settings, replicated)
    try:
        require_tool("java")
        specs = all_specs(settings, chosen)
        with _progress() as progress:
            for kind in (KafkaSpec, CassandraSpec):
                _provision(next(s for s in specs if isinstance(s, kind)), progress)
            if chosen:
                _up_replicated(specs, progress, settings.services_start_timeout_s)
            else:
                for spec in specs:
                    _start(spec, progress, settings.services_start_timeout_s)
    except ServiceError as exc:
        fail(str(exc))
    if chosen:
        console.print(_switch_hint(), markup=False)


@services_group.command("down")
@replicated_option
@click.pass_context
def down(ctx: click.Context, replicated: bool | None) -> None:
    """Stop the services that `up` started (and nothing else), of one set: Cassandra first;
    the replicated set's nodes of each kind together."""
    settings = settings_of(ctx)
    specs = all_specs(settings, _which(settings, replicated))
    for kind in (CassandraSpec, KafkaSpec):
        group = [s for s in specs if isinstance(s, kind)]
        for spec, pid in zip(group, manager.stop_together(group), strict=True):
            console.print(f"{spec.name}: " + (f"stopped pid {pid}" if pid else "was not running"))


def _set_problems(specs: list[ServiceSpec], health: dict[str, str]) -> list[str]:
    """The replicated set's quorum and ring, each whole or what is wrong with it."""
    brokers = [s for s in specs if isinstance(s, KafkaSpec)]
    nodes = [s for s in specs if isinstance(s, CassandraSpec)]

    def down(members: list[KafkaSpec] | list[CassandraSpec]) -> str | None:
        names = [s.name for s in members if health[s.name] == "down"]
        return f"{', '.join(names)} down" if names else None

    quorum = down(brokers) or cluster.kafka_quorum(brokers)
    ring = down(nodes) or cluster.cassandra_ring(nodes)
    return [f"kafka quorum: {quorum or 'whole'}", f"cassandra ring: {ring or 'whole'}"]


@services_group.command("status")
@replicated_option
@click.pass_context
def status(ctx: click.Context, replicated: bool | None) -> None:
    """Show each service's address, pid and health (with --replicated, the quorum and the
    ring too); exit 1 when one is not healthy. The other set is shown when it runs."""
    settings = settings_of(ctx)
    chosen = _which(settings, replicated)
    specs = all_specs(settings, chosen)
    others = [s for s in all_specs(settings, not chosen) if manager.running_process(s)]
    table = Table("service", "address", "pid", "health", "rss")
    health: dict[str, str] = {}
    for spec in [*specs, *all_specs(settings, not chosen)] if others else specs:
        st = manager.status(spec)
        health[spec.name] = st.health
        colour = {"healthy": "green", "starting": "yellow", "down": "red"}[st.health]
        rss = f"{st.rss_bytes / 2**20:.0f} MiB" if st.rss_bytes else "-"
        name = spec.name if spec in specs else f"[dim]{spec.name}[/]"
        table.add_row(
            name, f"{spec.host}:{spec.port}", str(st.pid or "-"), f"[{colour}]{st.health}[/]", rss
        )
    console.print(table)
    all_healthy = all(health[s.name] == "healthy" for s in specs)
    if chosen:
        verdicts = _set_problems(specs, health)
        for verdict in verdicts:
            console.print(verdict, markup=False)
        all_healthy &= all(v.endswith(": whole") for v in verdicts)
    if not all_healthy:
        sys.exit(1)


@services_group.command("logs")
@click.argument("service", required=False, type=click.Choice(SERVICE_NAMES))
@replicated_option
@click.option(
    "-n",
    "--lines",
    default=40,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many of the last lines to show.",
)
@click.pass_context
def logs(ctx: click.Context, service: str | None, replicated: bool | None, lines: int) -> None:
    """Show the last lines of each service's log (of one set, or the SERVICE named)."""
    settings = settings_of(ctx)
    if service:
        specs = [spec_by_name(settings, service)]
    else:
        specs = all_specs(settings, _which(settings, replicated))
    for spec in specs:
        console.rule(f"{spec.name}: {spec.log_file}")
        for line in manager.tail(spec.log_file, lines) or ["(no log yet)"]:
            console.print(line, markup=False, soft_wrap=True)
