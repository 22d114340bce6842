"""The `foresight` command: one entry point for every Foresight process and tool.

Each sub-command reads the settings once and passes them down. Errors a user can fix (a bad
argument, a service that is down) end in one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import logging
import sys

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from foresight.cli.common import CliError, fail
from foresight.cli.data import (
    collector_command,
    db_group,
    produce_command,
    schemas_group,
    topics_group,
)
from foresight.cli.delivery import (
    agent_command,
    cache_node_command,
    origin_command,
    token_group,
)
from foresight.cli.demo import demo_command, replay_command
from foresight.cli.inspect import inspect_group
from foresight.cli.services import services_group
from foresight.cli.streams import eval_command, worker_command
from foresight.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.version_option(package_name="foresight")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Foresight: predictive content delivery on Kafka, Faust, River and Cassandra."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not verbose:
        # The clients' own connection chatter (one line per retry, with tracebacks) drowns the
        # one-line error the command prints when a service is down; -v shows it.
        for noisy in ("librdkafka", "cassandra"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        ctx.obj = Settings()
    except SettingsError as exc:
        fail(f"invalid setting: {exc}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        fail(f"invalid setting FORESIGHT_{field.upper()}: {first['msg']}")


cli.add_command(services_group)
cli.add_command(topics_group)
cli.add_command(db_group)
cli.add_command(schemas_group)
cli.add_command(produce_command)
cli.add_command(collector_command)
cli.add_command(worker_command)
cli.add_command(eval_command)
cli.add_command(origin_command)
cli.add_command(token_group)
cli.add_command(cache_node_command)
cli.add_command(agent_command)
cli.add_command(replay_command)
cli.add_command(demo_command)
cli.add_command(inspect_group)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(standalone_mode=True)
    except CliError as exc:  # raised outside a click context
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
