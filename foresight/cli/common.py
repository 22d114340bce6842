"""What every sub-command shares: the settings, one-line failures and the rich console."""

from __future__ import annotations

import logging
from typing import NoReturn

import click
from rich.console import Console

from foresight.settings import Settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class CliError(click.ClickException):
    """A failure the user can act on: printed as one line, exit status 1."""

    def show(self, file: object = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.format_message()}", soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise CliError(message)


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def log_as_service(ctx: click.Context) -> None:
    """A long-running process logs each event worth noting at INFO (everything with -v), one
    line each, as FORESIGHT_LOG_FORMAT says. Call it after the start-up checks, so that a
    service that is down is still one line, not the clients' retry chatter."""
    from foresight.logs import configure

    verbose = bool(ctx.find_root().params.get("verbose"))
    configure(settings_of(ctx).log_format, logging.DEBUG if verbose else logging.INFO)
