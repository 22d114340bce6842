"""`foresight worker` and `foresight eval`: the prediction engine, live and offline.

`foresight eval` reads session files or an access log (producers/accesslog.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
)

from foresight.cli.common import console, fail, settings_of

if TYPE_CHECKING:
    from producers.accesslog import LogOptions
    from producers.accesslog import Session as LogSession
    from streams.evaluation import Session
    from streams.predictor import Predictor

#: Bad lines printed by `eval --log` (the JSON keeps more).
BAD_SHOWN = 5


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


def log_reading_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of reading an access log (docs/access-logs.md), for every command that can."""
    options = [
        click.option(
            "--test-fraction",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.2,
            show_default=True,
            help="With --log: sessions starting in this last fraction of the log's time span "
            "are the test (evaluated, or replayed), the earlier ones train the model.",
        ),
        click.option(
            "--session-gap-min",
            type=click.FloatRange(0, min_open=True),
            default=30.0,
            show_default=True,
            help="With --log: minutes without a request that end a client's session.",
        ),
        click.option(
            "--attach-window-s",
            type=click.FloatRange(0),
            default=10.0,
            show_default=True,
            help="With --log: a subresource whose Referer names no page of its client goes "
            "to the client's latest page view if that is at most this many seconds older.",
        ),
        click.option(
            "--subresource-ext",
            metavar="EXT,...",
            help="With --log: extensions of subresources, replacing the default list "
            "(css, js, images, fonts, media); other paths are page views.",
        ),
        click.option(
            "--robots",
            metavar="TEXT,...",
            help="With --log: user-agent substrings and /paths of robots and health checks to "
            "drop, replacing the default list; an empty string keeps every request.",
        ),
        click.option(
            "--keep-query", is_flag=True, help="With --log: the query string is part of the item."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


#: The options that only mean something with --log.
LOG_ONLY = (
    "session_gap_min",
    "attach_window_s",
    "subresource_ext",
    "robots",
    "keep_query",
    "test_fraction",
)


def log_options_of(
    session_gap_min: float,
    attach_window_s: float,
    subresource_ext: str | None,
    robots: str | None,
    keep_query: bool,
) -> LogOptions:
    """The reader's options from :func:`log_reading_options`' values."""
    from producers.accesslog import ROBOTS, SUBRESOURCE_EXTENSIONS, LogOptions

    def listed(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    extensions = SUBRESOURCE_EXTENSIONS
    if subresource_ext is not None:
        extensions = frozenset(e.lower().lstrip(".") for e in listed(subresource_ext))
    return LogOptions(
        session_gap_s=60.0 * session_gap_min,
        attach_window_s=attach_window_s,
        subresource_extensions=extensions,
        robots=ROBOTS if robots is None else tuple(listed(robots)),
        keep_query=keep_query,
    )


@click.command("eval")
@click.option(
    "--train",
    "train",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training sessions: TSV with header SessionId ItemId Time (with --test).",
)
@click.option(
    "--test",
    "test",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Test sessions, same format.",
)
@click.option(
    "--log",
    "log",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead of --train/--test: an access log, Common or Combined Log Format, plain or "
    "gzip (docs/access-logs.md).",
)
@log_reading_options
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result as JSON here.",
)
@click.option("--ablations", is_flag=True, help="Also run Foresight without its River re-ranker.")
@click.pass_context
def eval_command(
    ctx: click.Context,
    train: Path | None,
    test: Path | None,
    log: Path | None,
    test_fraction: float,
    session_gap_min: float,
    attach_window_s: float,
    subresource_ext: str | None,
    robots: str | None,
    keep_query: bool,
    json_out: Path | None,
    ablations: bool,
) -> None:
    """Evaluate Foresight against Markov-1, SR and popularity (test-then-learn).

    Every model learns the training sessions in time order, then each test click after a
    session's first is predicted from the session's prefix, scored, then learned. With --log,
    the sessions are the page views of an access log's visitors, split by time.
    """
    from streams.evaluation import ABLATIONS, DEFAULT_MODELS, read_sessions, render_table

    _check_inputs(ctx, train, test, log)
    models = {**DEFAULT_MODELS, **ABLATIONS} if ablations else dict(DEFAULT_MODELS)
    summary: dict[str, Any] | None = None
    try:
        if log is None:
            assert train is not None and test is not None
            train_sessions, test_sessions = read_sessions(train), read_sessions(test)
        else:
            options = log_options_of(
                session_gap_min, attach_window_s, subresource_ext, robots, keep_query
            )
            train_sessions, test_sessions, summary = _read_log(log, options, test_fraction)
            _print_log_summary(log, summary)
        result = _evaluate_with_bar(train_sessions, test_sessions, models)
    except ValueError as exc:
        fail(str(exc))
    if summary is not None:
        result["log"] = summary
    # Twelve columns of scores: never squeeze them into an 80-column pipe.
    Console(width=max(console.width, 140), highlight=False).print(render_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_out}")


def _check_inputs(
    ctx: click.Context, train: Path | None, test: Path | None, log: Path | None
) -> None:
    """One line and exit 1 unless the input is --log alone or --train with --test."""
    if log is not None and (train is not None or test is not None):
        fail("give either --log or --train and --test, not both")
    if log is None and (train is None or test is None):
        fail("give --train and --test (session files), or --log (an access log)")
    if log is None:
        given = [
            "--" + name.replace("_", "-")
            for name in LOG_ONLY
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
        ]
        if given:
            fail(f"only with --log: {', '.join(given)}")


def _read_log(
    log: Path, options: LogOptions, test_fraction: float
) -> tuple[list[Session], list[Session], dict[str, Any]]:
    """The log's sessions as (train, test) for the evaluation, and what reading counted."""
    from producers.accesslog import AccessLog, split_sessions

    reader = AccessLog(options)
    columns = (BarColumn(), DownloadColumn(), TimeElapsedColumn())
    # Transient: the summary replaces it. Off in a pipe, where a transient bar leaves a blank line.
    with Progress(
        "[bold]reading", *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("reading", total=log.stat().st_size or None)  # None: a pipe
        split = split_sessions(reader.read(log, partial(bar.advance, task)), test_fraction)
    summary: dict[str, Any] = reader.counts.as_dict()
    summary.update(
        test_fraction=test_fraction,
        split_time=split.cut,
        train_sessions=len(split.train),
        test_sessions=len(split.test),
    )

    def clicks(sessions: list[LogSession]) -> list[Session]:
        return [(s.id, [(page.time, page.path) for page in s.pages]) for s in sessions]

    return clicks(split.train), clicks(split.test), summary


def _print_log_summary(log: Path, summary: dict[str, Any]) -> None:
    filtered = summary["filtered"]
    lines = [
        f"{log}: {summary['lines']:,} lines, {summary['good']:,} good, {summary['bad']:,} bad; "
        f"filtered {filtered['robots']:,} robots or health checks, {filtered['method']:,} not "
        f"GET, {filtered['status']:,} neither 2xx nor 304",
        f"{summary['pages']:,} page views with {summary['subresources']:,} subresources "
        f"({summary['orphans']:,} with no page) in {summary['sessions']:,} sessions: "
        f"{summary['train_sessions']:,} to train, {summary['test_sessions']:,} to test",
    ]
    lines += [f"bad line {where}" for where in summary["bad_locations"][:BAD_SHOWN]]
    if summary["bad"] > BAD_SHOWN:
        more = summary["bad"] - BAD_SHOWN
        lines.append(f"... {more:,} more bad lines (the JSON lists the first 20)")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)


def _evaluate_with_bar(
    train: list[Session], test: list[Session], models: Mapping[str, Callable[[], Predictor]]
) -> dict[str, Any]:
    from streams.evaluation import count_clicks, evaluate_sessions

    total = len(models) * (count_clicks(train) + count_clicks(test))
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress("[bold]evaluating", *columns, console=console) as bar:
        task = bar.add_task("evaluating", total=total)
        return evaluate_sessions(train, test, models, progress=partial(bar.advance, task))
