"""What every sub-command shares: the settings, one-line failures and the rich console."""

from __future__ import annotations

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
