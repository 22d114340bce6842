"""`foresight services up|down|status|logs`: the local Kafka and Cassandra."""

from __future__ import annotations

import sys
import time

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from foresight.cli.common import console, fail, settings_of
from foresight.services import manager
from foresight.services.provision import ServiceError, ensure_libs, require_tool
from foresight.services.specs import ServiceSpec, all_specs, spec_by_name


@click.group("services")
def services_group() -> None:
    """Run Apache Kafka and Apache Cassandra locally, on loopback."""


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[service]:<9}[/]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _provision(spec: ServiceSpec, progress: Progress) -> None:
    task = progress.add_task("checking the jar cache", service=spec.name, total=None)
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

    resolved = ensure_libs(spec.settings.cache_dir, spec.name, on_line)
    if downloads:
        done = f"jars ready: {downloads} files downloaded from Maven Central"
    elif resolved:
        done = "jars ready: copied from the local Maven repository"
    else:
        done = f"jars cached in {spec.lib}"
    progress.update(task, description=done, total=1, completed=1)


def _start(spec: ServiceSpec, progress: Progress, timeout: float) -> str:
    existing = manager.running_process(spec)
    task = progress.add_task("starting", service=spec.name, total=None)
    started = time.monotonic()

    def on_wait() -> None:
        last = manager.tail(spec.log_file, 1)
        hint = last[0][-80:] if last else ""
        progress.update(task, description=f"waiting for it to answer on :{spec.port}  {hint}")

    if existing is not None:
        if not manager.wait_healthy(spec, timeout, on_wait):
            raise ServiceError(
                f"{spec.name} (pid {existing.pid}) is running but does not "
                f"answer on :{spec.port}; see `foresight services logs`"
            )
        message = f"already running, pid {existing.pid}, :{spec.port}"
    else:
        pid = manager.start(spec, timeout, on_wait)
        message = f"up, pid {pid}, :{spec.port}, in {time.monotonic() - started:.1f} s"
    progress.update(task, description=message, total=1, completed=1)
    return message


@services_group.command("up")
@click.pass_context
def up(ctx: click.Context) -> None:
    """Provision (first time only), start and wait until Kafka and Cassandra answer."""
    settings = settings_of(ctx)
    try:
        require_tool("java")
        specs = all_specs(settings)
        with _progress() as progress:
            for spec in specs:
                _provision(spec, progress)
            for spec in specs:
                _start(spec, progress, settings.services_start_timeout_s)
    except ServiceError as exc:
        fail(str(exc))


@services_group.command("down")
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the services that `up` started (and nothing else)."""
    settings = settings_of(ctx)
    for spec in reversed(all_specs(settings)):
        pid = manager.stop(spec)
        console.print(f"{spec.name}: " + (f"stopped pid {pid}" if pid else "was not running"))


@services_group.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show each service's port, pid and health; exit 1 when one is not healthy."""
    settings = settings_of(ctx)
    table = Table("service", "port", "pid", "health", "rss")
    all_healthy = True
    for spec in all_specs(settings):
        st = manager.status(spec)
        all_healthy &= st.health == "healthy"
        colour = {"healthy": "green", "starting": "yellow", "down": "red"}[st.health]
        rss = f"{st.rss_bytes / 2**20:.0f} MiB" if st.rss_bytes else "-"
        table.add_row(st.name, str(st.port), str(st.pid or "-"), f"[{colour}]{st.health}[/]", rss)
    console.print(table)
    if not all_healthy:
        sys.exit(1)


@services_group.command("logs")
@click.argument("service", required=False, type=click.Choice(["kafka", "cassandra"]))
@click.option(
    "-n",
    "--lines",
    default=40,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many of the last lines to show.",
)
@click.pass_context
def logs(ctx: click.Context, service: str | None, lines: int) -> None:
    """Show the last lines of each service's log."""
    settings = settings_of(ctx)
    specs = [spec_by_name(settings, service)] if service else all_specs(settings)
    for spec in specs:
        console.rule(f"{spec.name}: {spec.log_file}")
        for line in manager.tail(spec.log_file, lines) or ["(no log yet)"]:
            console.print(line, markup=False, soft_wrap=True)
