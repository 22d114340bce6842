"""`foresight worker` and `foresight eval`: the prediction engine, live and offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from foresight.cli.common import console, fail, settings_of


@click.command("worker")
@click.option(
    "--worker-id",
    type=click.IntRange(0, 1000),
    default=None,
    help="This worker's number on the host (web port and data folder); "
    "overrides FORESIGHT_WORKER_ID.",
)
@click.option(
    "-l",
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.pass_context
def worker_command(ctx: click.Context, worker_id: int | None, loglevel: str) -> None:
    """Run a stream worker: the Faust app over interactions and feedback."""
    import os

    from foresight.cli.data import require_topics

    settings = settings_of(ctx)
    if worker_id is not None:
        os.environ["FORESIGHT_WORKER_ID"] = str(worker_id)
    require_topics(
        settings,
        [settings.topic_interactions, settings.topic_feedback, settings.topic_prefetch_commands],
    )
    import faust

    from foresight.logs import dict_config
    from streams.app import app

    sys.argv = [sys.argv[0]]  # Faust's worker reads argv; ours are already parsed
    # Faust sets logging up itself when it starts: hand it our handler and format.
    logging_config = dict_config(settings.log_format, loglevel)
    # mode leaves the root logger at DEBUG whatever the level asked for: every debug call of
    # Faust and aiokafka then builds a record (measured: 5 % of the worker's time in a
    # replay) for the handler to drop. The app sets the root level once it runs.
    app.foresight_log_level = loglevel.upper()  # type: ignore[attr-defined]
    faust.Worker(app, loglevel=loglevel, logging_config=logging_config).execute_from_commandline()


@click.command("eval")
@click.option(
    "--train",
    "train",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training sessions: TSV with header SessionId ItemId Time.",
)
@click.option(
    "--test",
    "test",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Test sessions, same format.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result as JSON here.",
)
@click.option("--ablations", is_flag=True, help="Also run Foresight without its River re-ranker.")
def eval_command(train: Path, test: Path, json_out: Path | None, ablations: bool) -> None:
    """Evaluate Foresight against Markov-1, SR and popularity (test-then-learn).

    Every model learns the training sessions in time order, then each test click after a
    session's first is predicted from the session's prefix, scored, then learned.
    """
    from functools import partial

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from streams.evaluation import ABLATIONS, DEFAULT_MODELS, evaluate, render_table, work

    models = {**DEFAULT_MODELS, **ABLATIONS} if ablations else dict(DEFAULT_MODELS)
    try:
        total = work(train, test, models)
        with Progress(
            "[bold]evaluating",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("evaluating", total=total)
            result = evaluate(train, test, models, progress=partial(bar.advance, task))
    except ValueError as exc:
        fail(str(exc))
    # Twelve columns of scores: never squeeze them into an 80-column pipe.
    Console(width=max(console.width, 140), highlight=False).print(render_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_out}")
