"""`foresight replay` and `foresight demo`: real sessions through the whole running system."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from foresight.cli.common import console, fail, settings_of
from foresight.cli.streams import LOG_ONLY, log_options_of, log_reading_options
from foresight.settings import Settings

if TYPE_CHECKING:
    from foresight.replay.site import SiteFiles
    from producers.accesslog import LogOptions

DEFAULT_DATA = Path("../shared/data/yoochoose-100k")


class _Display:
    """One progress line per phase, the replay's with its live hit ratio, pushes and p50."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(
        self, phase: str, done: int, total: int | None, live: Mapping[str, float] | None = None
    ) -> None:
        task = self.tasks.get(phase)
        if task is None:
            task = self.tasks[phase] = self.progress.add_task(phase, total=total, live="")
        figures = ""
        if live:
            figures = (
                f"hit ratio {live.get('hit_ratio', 0.0):.1%}  pushes {live.get('pushes', 0):,.0f}"
                f"  p50 {live.get('p50_ms', 0.0):.2f} ms"
            )
        self.progress.update(task, completed=done, live=figures)
        if total is not None:
            self.progress.update(task, total=total)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<32}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[live]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "%":
        return f"{value:.1%}"
    if kind == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if kind == "kB":
        return f"{value / 1000:,.1f} kB"
    if kind == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def summary_table(summary: Mapping[str, Any]) -> Table:
    """The printed summary: the JSON's own numbers, formatted."""
    table = Table(title="Replay summary", show_header=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    lat = summary["latency_ms"]
    every = summary["all_clicks"]
    rows = [
        ("events (clicks)", _fmt(summary["events"])),
        ("landings (sessions' first clicks)", _fmt(summary["landings"])),
        ("requests (each next item)", _fmt(summary["requests"])),
        ("hit ratio", _fmt(summary["hit_ratio"], "%")),
        ("online HR@5", _fmt(summary["online_hr@5"], "%")),
        ("latency reduction", _fmt(summary["latency_reduction"], "%")),
        ("mean latency with prefetching", _fmt(lat["with"]["mean"], "ms")),
        ("mean latency without", _fmt(lat["without"]["mean"], "ms")),
        ("p50 / p99 with", f"{_fmt(lat['with']['p50'], 'ms')} / {_fmt(lat['with']['p99'], 'ms')}"),
        (
            "p50 / p99 without",
            f"{_fmt(lat['without']['p50'], 'ms')} / {_fmt(lat['without']['p99'], 'ms')}",
        ),
        ("prefetched", _fmt(summary["prefetched_bytes"], "bytes")),
        ("wasted", _fmt(summary["wasted_bytes"], "bytes")),
        ("wasted per requested byte", _fmt(summary["wasted_per_requested_byte"])),
        (
            "click-to-push p50 / p99",
            f"{_fmt(summary['click_to_push_ms']['p50'], 'ms')} / "
            f"{_fmt(summary['click_to_push_ms']['p99'], 'ms')}",
        ),
        ("lost events", _fmt(summary["lost_events"])),
        ("requests that failed", _fmt(summary["errors"])),
        ("duplicate pushes", _fmt(summary["duplicate_pushes"])),
        ("duration", f"{summary['duration_s']:.0f} s"),
        *_savings_rows(summary),
        ("counting landings as requests:", ""),
        ("  hit ratio", _fmt(every["hit_ratio"], "%")),
        ("  latency reduction", _fmt(every["latency_reduction"], "%")),
        ("  wasted per requested byte", _fmt(every["wasted_per_requested_byte"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _savings_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The network and what prefetching saved and cost the visitors (foresight.replay.savings)."""
    net, saved = summary.get("network"), summary.get("savings")
    rows = []
    if net and (net["rtt_ms"] or net["down_mbps"] is not None):  # shaped
        down = net["down_mbps"]
        rate = "unlimited" if down is None else f"{down:g} Mbit/s"
        rows.append(("network", f"{net['profile']}: {net['rtt_ms']:g} ms round trip, {rate}"))
    if saved:
        rows += [
            ("latency saved per request", _fmt(saved["saved_ms_per_request"], "ms")),
            ("latency saved per session", _fmt(saved["saved_ms_per_session"], "ms")),
            ("page views answered locally", _fmt(saved["answered_locally_share"], "%")),
            (
                "pushed / wasted per session",
                f"{_fmt(saved['prefetched_bytes_per_session'], 'kB')}"
                f" / {_fmt(saved['wasted_bytes_per_session'], 'kB')}",
            ),
        ]
    return rows


def top_pages_table(summary: Mapping[str, Any]) -> Table | None:
    """The top pages by views and what each gained, when the summary has them."""
    pages = (summary.get("savings") or {}).get("top_pages")
    if not pages:
        return None
    table = Table(title="Top pages by views")
    for name in ("page", "views", "local", "with", "without", "saved/view", "wasted"):
        table.add_column(name, justify="left" if name == "page" else "right")
    for page in pages:
        table.add_row(
            Text(page["page"]),  # a path, never markup
            _fmt(page["views"]),
            _fmt(page["answered_locally_share"], "%"),
            _fmt(page["latency_ms_with"], "ms"),
            _fmt(page["latency_ms_without"], "ms"),
            _fmt(page["saved_ms_per_view"], "ms"),
            _fmt(page["wasted_bytes"], "kB"),
        )
    return table


def _check_file(path: Path, option: str) -> Path:
    if not path.is_file():
        fail(f"{option} {path}: no such file")
    return path


def run_and_report(settings: Settings, options: Any, json_out: Path | None) -> dict[str, Any]:
    from foresight.replay import replay
    from foresight.stack import ChildFailed

    with _progress() as progress:
        try:
            result = replay(settings, options, _Display(progress))
        except ChildFailed as exc:
            fail(str(exc))
        except TimeoutError as exc:
            fail(str(exc))
    console.print(summary_table(result.summary))
    if (pages := top_pages_table(result.summary)) is not None:
        console.print(pages)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.summary, indent=2) + "\n")
        console.print(f"JSON: {json_out}")
    console.print(f"report: {result.report_path}")
    if result.interrupted:
        fail("interrupted: the report shows what was measured until then")
    return result.summary


def _replay_options(
    train: Path,
    test: Path,
    speed: float,
    clients: int,
    max_gap: float,
    sessions: int | None,
    baseline: bool,
    sweep: bool,
    out: Path,
    chaos: tuple[str, ...] = (),
) -> Any:
    from foresight.replay import DEFAULT_SWEEP, ReplayOptions

    return ReplayOptions(
        train=train,
        test=test,
        speed=speed,
        clients=clients,
        max_gap_s=max_gap,
        sessions=sessions,
        baseline=baseline,
        sweep=DEFAULT_SWEEP if sweep else (),
        run_dir=out,
        chaos=chaos,
    )


def _common(command: Any) -> Any:
    options = [
        click.option(
            "--speed",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Divide the recorded gaps between a session's requests by this.",
        ),
        click.option(
            "--clients",
            type=click.IntRange(1, 5000),
            default=100,
            show_default=True,
            help="Agents (sessions) replaying at the same time.",
        ),
        click.option(
            "--max-gap",
            type=click.FloatRange(min=0.0),
            default=2.0,
            show_default=True,
            help="Longest wait between two requests of a session, seconds.",
        ),
        click.option(
            "--sessions",
            type=click.IntRange(min=1),
            default=None,
            help="Replay only the first N test sessions (a quick run).",
        ),
        click.option(
            "--baseline/--no-baseline",
            default=True,
            show_default=True,
            help="Serve the same requests again without prefetching, for the 'without' latency.",
        ),
        click.option(
            "--sweep/--no-sweep",
            default=True,
            show_default=True,
            help="Run the offline threshold sweep for the report's trade-off plot.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("replay"),
            show_default=True,
            help="Folder for the report, the processes' logs and state.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _network_options(command: Any) -> Any:
    from foresight.replay.network import PROFILES

    options = [
        click.option(
            "--network",
            type=click.Choice(list(PROFILES)),
            default="loopback",
            show_default=True,
            help="Each agent's link in both passes: a fetch costs the round trip plus its "
            "bytes over the downlink, pushes share the downlink (README: the profiles' numbers "
            "and where they come from). loopback: not shaped.",
        ),
        click.option(
            "--rtt-ms",
            type=click.FloatRange(min=0.0),
            default=None,
            help="Round trip in ms, instead of the profile's.",
        ),
        click.option(
            "--down-mbps",
            type=click.FloatRange(min=0.0, min_open=True),
            default=None,
            help="Downlink in Mbit/s, instead of the profile's.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("replay")
@click.option("--train", type=click.Path(path_type=Path), help="Training TSV (with --test).")
@click.option("--test", type=click.Path(path_type=Path), help="Test TSV.")
@click.option(
    "--log",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead of --train/--test: an access log, Common or Combined Log Format, plain or "
    "gzip; its page views are the sessions, its pages' sizes the origin's "
    "(docs/access-logs.md).",
)
@log_reading_options
@_network_options
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the result as JSON.",
)
@click.option(
    "--chaos",
    "chaos_text",
    default=None,
    metavar="FAULTS",
    help="Faults during the replay, in order, comma-separated: worker (kill -9, restart), "
    "node (kill -9 one cache node), kafka, cassandra (each down for 10 s).",
)
@_common
@click.pass_context
def replay_command(
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
    network: str,
    rtt_ms: float | None,
    down_mbps: float | None,
    json_out: Path,
    chaos_text: str | None,
    speed: float,
    clients: int,
    max_gap: float,
    sessions: int | None,
    baseline: bool,
    sweep: bool,
    out: Path,
) -> None:
    """Replay TEST's sessions (SessionId, ItemId, Time TSV) as agents, after learning TRAIN;
    or an access log's page views (--log), its earlier sessions learned, its later replayed.

    Starts the origin, a worker and two cache nodes (Kafka and Cassandra must be up), and
    writes the JSON result and an HTML report. With --log there is no offline sweep (it sizes
    items from the synthetic catalogue, not the log's).
    """
    from foresight.replay.chaos import parse_faults
    from foresight.replay.network import profile_of

    settings = settings_of(ctx)
    _check_replay_inputs(ctx, train, test, log)
    try:
        chaos = parse_faults(chaos_text) if chaos_text is not None else ()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--chaos") from None
    profile = profile_of(network, rtt_ms, down_mbps)
    site = None
    if log is not None:
        options = log_options_of(
            session_gap_min, attach_window_s, subresource_ext, robots, keep_query
        )
        site = _read_site(log, options, test_fraction, out, settings)
        train, test, sweep = site.train, site.test, False
    assert train is not None and test is not None
    replay_options = _replay_options(
        _check_file(train, "--train"),
        _check_file(test, "--test"),
        speed,
        clients,
        max_gap,
        sessions,
        baseline,
        sweep,
        out,
        chaos,
    )
    replay_options = replace(
        replay_options,
        network=profile,
        log=log,
        sizes=site.sizes if site is not None else None,
        log_summary=site.summary if site is not None else None,
    )
    _require_services(settings)
    run_and_report(settings, replay_options, json_out)


def _check_replay_inputs(
    ctx: click.Context, train: Path | None, test: Path | None, log: Path | None
) -> None:
    """One line and exit 1 unless the input is --log alone or --train with --test."""
    if log is not None and (train is not None or test is not None):
        fail("give either --log or --train and --test, not both")
    if log is None and (train is None or test is None):
        fail("give --train and --test (session files), or --log (an access log)")
    given = [
        "--" + name.replace("_", "-")
        for name in LOG_ONLY
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    ]
    if log is None and given:
        fail(f"only with --log: {', '.join(given)}")


def _read_site(
    log: Path, options: LogOptions, test_fraction: float, out: Path, settings: Settings
) -> SiteFiles:
    """The log as the replay's input, in OUT/log (foresight.replay.site), with a progress line."""
    from foresight.replay.site import write_site

    with _progress() as progress:
        display, done = _Display(progress), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            display("reading the access log", done, log.stat().st_size or None)

        try:
            site = write_site(
                log, options, test_fraction, out / "log", settings.fetch_max_bytes, advance
            )
        except ValueError as exc:
            fail(str(exc))
    counts = site.summary
    console.print(
        f"{log}: {counts['lines']:,} lines, {counts['bad']:,} bad; {counts['pages']:,} page "
        f"views in {counts['sessions']:,} sessions: {counts['train_sessions']:,} to train, "
        f"{counts['test_sessions']:,} to replay; {counts['items']:,} pages, median "
        f"{counts['item_bytes_median']:,} bytes with what they load",
        soft_wrap=True,
        markup=False,
    )
    return site


@click.command("demo")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="Folder with yoochoose train_full.tsv and test.tsv.",
)
@_common
@click.pass_context
def demo_command(
    ctx: click.Context,
    data: Path,
    speed: float,
    clients: int,
    max_gap: float,
    sessions: int | None,
    baseline: bool,
    sweep: bool,
    out: Path,
) -> None:
    """The whole system on real local services: Kafka and Cassandra (started if needed),
    topics and tables, the origin, a worker and two cache nodes, then yoochoose-100k's test
    sessions replayed as agents after learning train_full; prints a summary, writes a report."""
    from foresight.cli.services import up

    options = _replay_options(
        _check_file(data / "train_full.tsv", "--data"),
        _check_file(data / "test.tsv", "--data"),
        speed,
        clients,
        max_gap,
        sessions,
        baseline,
        sweep,
        out,
    )
    ctx.invoke(up)
    run_and_report(settings_of(ctx), options, out / "result.json")


def _require_services(settings: Settings) -> None:
    """One line, before any work, when Kafka or Cassandra does not answer."""
    from cassandra.cluster import NoHostAvailable

    from foresight.cassandra import connect
    from foresight.cli.data import cassandra_down, require_topics

    require_topics(settings, [])
    try:
        cluster, _ = connect(settings)
    except NoHostAvailable:
        fail(cassandra_down(settings))
    cluster.shutdown()
