"""`foresight inspect client ID`: is Foresight doing anything for this client, and why?

One view from three places: the stream worker that holds the client's record (GET
/clients/{id}: its last clicks, its current top k with what each signal contributed, its
threshold, budget and pending prefetches), Cassandra (what its agent holds, and its history
across sessions: last seen, sessions, events, recent requests, whether it is ranked the
personal way) and the ring-membership topic (the cache node that owns it). The worker is
required; when Cassandra or the ring cannot be read, the view says so under "problems" and
shows the rest.

The reads are the module functions :func:`fetch_view`, :func:`read_holdings`,
:func:`read_history` and :func:`find_owner`, so tests can replace them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from foresight.cli.common import console, fail, settings_of
from foresight.settings import Settings

Json = dict[str, Any]

#: A worker answers from memory; longer means it is stuck or not a worker.
WORKER_TIMEOUT_S = 5.0
#: Recent requests shown from client_history.
RECENT_REQUESTS = 10
#: Reading the compacted ring-membership topic to its end takes well under a second locally.
RING_WAIT_S = 10.0


class Unavailable(Exception):
    """A source could not be read; the message is one line naming it."""


def fetch_view(url: str) -> tuple[int, Json]:
    """GET a worker's client page: (HTTP status, JSON body). Raises :class:`Unavailable`."""
    try:
        with urllib.request.urlopen(url, timeout=WORKER_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError) as exc:  # refused, timed out, or not JSON
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"worker not reachable at {url}: {reason}") from exc


def read_holdings(settings: Settings, client_id: str) -> list[Json]:
    """What the client's agent holds, as the cache nodes recorded it, newest push first."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    from foresight.cassandra import connect

    where = f"Cassandra at {settings.cassandra_contact_points}:{settings.cassandra_port}"
    try:
        cluster, session = connect(settings)
    except NoHostAvailable as exc:
        raise Unavailable(f"holdings: {where} did not answer") from exc
    try:
        query = session.prepare(
            "SELECT content_id, version, digest, pushed_at"
            f" FROM {settings.cassandra_keyspace}.client_holdings WHERE client_id = ?"
        )
        rows = list(session.execute(query, (client_id,)))
    except DriverException as exc:
        raise Unavailable(f"holdings: {where}: {exc}") from exc
    finally:
        cluster.shutdown()
    held = [
        {
            "content_id": row.content_id,
            "version": row.version,
            "digest": row.digest,
            # The driver returns timestamps as naive UTC datetimes.
            "pushed_at": row.pushed_at.replace(tzinfo=UTC).timestamp() if row.pushed_at else None,
        }
        for row in rows
    ]
    return sorted(held, key=lambda h: -(h["pushed_at"] or 0.0))


def read_history(settings: Settings, client_id: str) -> Json | None:
    """The client's profile and last requests as the workers wrote them to Cassandra; None
    when it has neither (no worker has written its history yet)."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    from foresight.cassandra import connect
    from streams.foresight_config import ForesightConfig
    from streams.history import HistoryStore
    from streams.predictor import seen_before

    where = f"Cassandra at {settings.cassandra_contact_points}:{settings.cassandra_port}"
    try:
        cluster, session = connect(settings)
    except NoHostAvailable as exc:
        raise Unavailable(f"history: {where} did not answer") from exc
    try:
        store = HistoryStore(session, settings.cassandra_keyspace)
        profile = store.profile(client_id)
        recent = store.recent(client_id, RECENT_REQUESTS)
    except DriverException as exc:
        raise Unavailable(f"history: {where}: {exc}") from exc
    finally:
        cluster.shutdown()
    if profile is None and not recent:
        return None
    return {
        "last_seen": profile.last_seen if profile else None,
        "sessions": profile.sessions if profile else None,
        "events": profile.events if profile else None,
        "seen_count": profile.seen_count if profile else None,
        # With the predictor's default configuration (FORESIGHT_* cannot switch it off).
        "personal": seen_before(profile.state, ForesightConfig()) is not None if profile else None,
        "updated_at": profile.updated_at if profile else None,
        "recent": recent,
    }


def find_owner(settings: Settings, client_id: str) -> Json | None:
    """The cache node that owns the client in the current ring; None when no node is live."""
    from foresight.membership import MembershipWatcher
    from foresight.ring import EmptyRingError

    watcher = MembershipWatcher(settings).start()
    try:
        if not watcher.wait_caught_up(RING_WAIT_S):
            raise Unavailable(
                f"owner: {settings.topic_ring_membership} was not read to its end in "
                f"{RING_WAIT_S:.0f} s (Kafka at {settings.kafka_bootstrap_servers})"
            )
        try:
            member = watcher.ring().owner(client_id)
        except EmptyRingError:
            return None
        return {"node_id": member.node_id, "url": member.url, "slot": member.slot}
    finally:
        watcher.stop()


def ask_workers(settings: Settings, client_id: str, workers: int) -> tuple[str, Json]:
    """The first worker that holds the client: its URL and view. Fails in one line."""
    unreachable: list[str] = []
    asked: list[str] = []
    for n in range(workers):
        port = settings.worker_web_port + n
        url = f"http://127.0.0.1:{port}/clients/{quote(client_id, safe='')}"
        try:
            status, view = fetch_view(url)
        except Unavailable as exc:
            unreachable.append(str(exc))
            continue
        if status == 200:
            return url, view
        if status != 404:
            unreachable.append(f"worker at {url} answered HTTP {status}")
        asked.append(str(port))
    if unreachable:
        more = f" (and {len(unreachable) - 1} more)" if len(unreachable) > 1 else ""
        fail(unreachable[0] + more)
    ports = f"port{'s' if len(asked) > 1 else ''} {', '.join(asked)}"
    fail(
        f"unknown client {client_id!r}: no worker holds it (asked {ports}; it has no events "
        "yet, or its partition is being reassigned)"
    )


def gather(settings: Settings, client_id: str, workers: int) -> Json:
    """The whole report: the worker's view, the holdings and the owner node."""
    url, view = ask_workers(settings, client_id, workers)
    problems: list[str] = []
    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(read_holdings, settings, client_id)
        past = pool.submit(read_history, settings, client_id)
        owner = pool.submit(find_owner, settings, client_id)
        holdings: list[Json] | None = None
        history: Json | None = None
        owner_node: Json | None = None
        try:
            holdings = held.result()
        except Unavailable as exc:
            problems.append(str(exc))
        try:
            history = past.result()
        except Unavailable as exc:
            problems.append(str(exc))
        try:
            owner_node = owner.result()
            if owner_node is None:
                problems.append("owner: no live cache node in the ring")
        except Unavailable as exc:
            problems.append(str(exc))
    return {
        "client_id": client_id,
        "at": view.get("at"),
        "worker": {"url": url, **view.get("worker", {})},
        "events": view.get("events"),
        "hits": view.get("hits"),
        "last_events": view.get("last_events", []),
        "top_k": view.get("top_k", []),
        "last_prediction": view.get("last_prediction", []),
        "threshold": view.get("threshold"),
        "budget": view.get("budget"),
        "prefetched": view.get("prefetched", []),
        "holdings": holdings,
        "history": history,
        "owner": owner_node,
        "problems": problems,
    }


def _when(ts: float | None, now: float | None) -> str:
    if ts is None:
        return ""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is None:
        return text
    age = now - ts
    return f"{text} ({abs(age):.0f} s {'ago' if age >= 0 else 'from now'})"


def _terms(parts: dict[str, float], limit: int) -> str:
    """The largest terms by size, signed: what moved this item most."""
    named = [(k, v) for k, v in parts.items() if k != "intercept" and v]
    named.sort(key=lambda kv: -abs(kv[1]))
    return "\n".join(f"{k} {v:+.2f}" for k, v in named[:limit])


def _bytes(value: float | None) -> str:
    return "unlimited" if value is None else f"{value / 1000:,.0f} kB"


def _header(report: Json) -> Panel:
    worker, owner = report["worker"], report["owner"]
    cut, budget = report["threshold"] or {}, report["budget"] or {}
    lines = [
        f"[bold]{report['client_id']}[/]  events {report['events']}, hits {report['hits']}",
        f"worker {worker.get('id', '?')} at {worker['url']}: partition"
        f" {worker.get('partition', '?')}, offset {worker.get('offset', '?')}",
        f"owner node [bold]{owner['node_id']}[/] at {owner['url']} (slot {owner['slot']})"
        if owner
        else "owner node unknown",
        f"threshold {cut.get('value', 0.0):.3f} on {cut.get('connection', '?')}"
        f" (base {cut.get('base', 0.0):.2f}, feedback offset {cut.get('offset', 0.0):+.2f})",
        f"budget {_bytes(budget.get('tokens'))} left of {_bytes(budget.get('capacity'))}",
        f"predicted at its last event: {', '.join(report['last_prediction']) or 'nothing'}",
    ]
    return Panel("\n".join(lines), title="foresight inspect", expand=False)


def _top_k(report: Json) -> Table:
    cut = (report["threshold"] or {}).get("value", 1.0)
    marked = {
        "commanded": {p["content_id"] for p in report["prefetched"]},
        "held": {h["content_id"] for h in report["holdings"] or []},
    }
    table = Table(
        "#", "content", "probability", "", "state", title="top k now", title_justify="left"
    )
    for item in report["top_k"]:
        p, content = item["probability"], item["content_id"]
        state = [f"{'≥' if p >= cut else '<'} threshold"]
        state += [mark for mark, items in marked.items() if content in items]
        bar = ProgressBar(total=1.0, completed=p, width=20)
        table.add_row(str(item["rank"]), content, bar, f"{p:.3f}", ", ".join(state))
    return table


def _why(report: Json) -> Table:
    """Per item: the blend's terms (which brought it into the pool) and the re-ranker's
    biggest terms (which ordered the pool), then the score and calibrated probability."""
    columns = ("#", *_SOURCES, "re-ranker: biggest terms", "score")
    table = Table(*columns, title="why: what each signal contributed", title_justify="left")
    for item in report["top_k"]:
        sources = item["sources"]
        table.add_row(
            str(item["rank"]),
            *(f"{sources[s]:.2f}" if sources.get(s) else "" for s in _SOURCES),
            _terms(item["ranker"], 3) or f"({item['ranking']})",
            f"{item['score']:.2f}",
        )
    return table


_SOURCES = ("sr", "earlier", "reverse", "popularity", "session")


def render(report: Json) -> RenderableType:
    """The report as rich panels and tables."""
    now = report["at"]
    last = Table("#", "content", "at", title="last events, newest first", title_justify="left")
    for n, event in enumerate(report["last_events"], 1):
        last.add_row(str(n), event["content_id"], _when(event.get("ts"), now))
    pending = Table("content", "expires", title="prefetches commanded", title_justify="left")
    for entry in report["prefetched"]:
        pending.add_row(entry["content_id"], _when(entry["expires_at"], now))
    parts: list[RenderableType] = [_header(report), last, _top_k(report), _why(report)]
    parts.append(pending)
    history = report.get("history")
    if history is not None:
        personal = {True: "personal", False: "shared", None: "unknown"}[history["personal"]]
        title = (
            f"history in Cassandra: last seen {_when(history['last_seen'], now) or '?'},"
            f" sessions {history['sessions']}, events {history['events']}, ranked {personal}"
        )
        past = Table("content", "kind", "at", title=title, title_justify="left")
        for row in history["recent"]:
            past.add_row(row["content_id"], row["kind"], _when(row["ts"], now))
        parts.append(past)
    if report["holdings"] is not None:
        columns = ("content", "version", "digest", "pushed at")
        held = Table(*columns, title="agent holds", title_justify="left")
        for h in report["holdings"]:
            held.add_row(
                h["content_id"], str(h["version"]), h["digest"][:12], _when(h["pushed_at"], now)
            )
        parts.append(held)
    parts.extend(f"[yellow]unavailable:[/] {problem}" for problem in report["problems"])
    return Group(*parts)


@click.group("inspect")
def inspect_group() -> None:
    """Look inside Foresight while it runs."""


@inspect_group.command("client")
@click.argument("client_id")
@click.option(
    "--workers",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Stream workers on this host to ask: ports FORESIGHT_WORKER_WEB_PORT + 0..N-1.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.pass_context
def inspect_client(ctx: click.Context, client_id: str, workers: int, as_json: bool) -> None:
    """Why CLIENT_ID gets the prefetches it gets.

    Shows its last events, its current top k with each signal's contribution, its threshold
    and byte budget, the prefetches commanded, what its agent holds and its owner node.
    """
    report = gather(settings_of(ctx), client_id, workers)
    if as_json:
        click.echo(json.dumps(report))
    else:
        console.print(render(report))
