"""The throughput-latency curve: click-to-push latency through the whole system at rising
click rates, what each process costs at each, and the cache node's Cassandra write rate.

Starts the origin, a worker and a cache node as real processes (foresight.stack) on the local
Kafka and Cassandra, connects agents over WebSockets, warms the model with real sessions, then
for each offered rate (--rates) publishes clicks for new agents at that rate for --seconds:
unseen sessions (the test set's, then the training sessions the warm-up did not teach), dealt
to the agents so that every click moves their predictions on (:func:`deal`).
Each push carries the command id the worker derived from (client, item, event), so every push
is matched to the exact click that caused it: click-to-push is the time from publishing that
click to the agent receiving the push, and the command's Kafka timestamp splits it in two.

Per rate, over the window (first click published to last): the achieved publishing rate, the
clicks the worker handled, the commands the node handled and the node's Cassandra write
requests per second (by statement: the node counts requests, a batch of holdings is one), CPU
seconds per process (ours, Kafka, Cassandra, the machine's in all) and the load average. Then
the worker's lag: from the last click published to its handled offsets (its own /metrics)
reaching the topic's end; and the node's, to its handling every command the worker sent.
``click_to_push_ms_second_half`` is the latency of the clicks of the window's second half
alone, when a backlog would show. The node sheds a command whose click is older than
FORESIGHT_PREFETCH_SHED_AFTER_S (``late``) instead of pushing it, so past saturation the
latencies stop growing near that age: the lags and ``node_commands_per_s_by_outcome`` say the
rest. Before the first window, ``--prime`` seconds of clicks (not measured) fetch the items
into the node, so the first window does not pay alone for a cold cache.

A window has enough agents that each clicks about once a second (``--agent-clicks-per-s``),
at random moments: a bench client clicking tens of times a second is a scraper to the abuse
guard, which stops its prefetches after 16 clicks, so that every push would follow the first
clicks of a window. Even once a second is fast for a person: the guard still flags many of
them as a window goes on (``worker_flagged_clients``, ``worker_blocked_events_per_s``).

``cassandra_writes_per_s`` (the goal's figure) is the node's store code at full speed in this
process, writing holdings as the node does under load (HOLDINGS_PER_WRITE pairs a request,
each pair a row in both indexes; rows/s). ``--profile DIR`` records the worker and the node
with py-spy during the window of ``--profile-rate`` and says where each spends its time. The
run's topics and keyspace are dropped at the end, whatever ends it. Draws the curve
(``--png``), prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from e2e_measure import (
    Run,
    command_times,
    end_offsets,
    match_pushes,
    snapshot,
    wait_drained,
    window_figures,
    worker_view,
)
from matplotlib.figure import Figure
from pydantic import SecretStr
from spy import Spy

from consumers.node import HOLDINGS_PER_WRITE
from consumers.store import ContentStore, StoredVersion
from foresight import tokens
from foresight.cassandra import connect
from foresight.migrate import drop_keyspaces, migrate
from foresight.replay.measure import metric_sum, percentile, read_metrics
from foresight.services.manager import running_process
from foresight.services.specs import all_specs
from foresight.settings import Settings
from foresight.stack import Child, Stack, free_port, http_text, sigterm_as_ctrl_c
from foresight.topics import create_topics, delete_topics
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction
from schemas.protocol import Hello, Push, Welcome, decode_from_node, encode_message

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parents[1] / "shared" / "data" / "yoochoose-100k"
SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
RATES = (100, 200, 500, 1000, 2000)
#: Every agent of a window is welcomed before its first click, at most this long after the
#: first connects (a few thousand handshakes, each a Cassandra read on the node).
CONNECT_TIMEOUT_S = 120.0
#: Handshakes under way at once: a burst of thousands would measure the burst.
CONNECTING = 50
#: Clicks per second an agent makes, on average. Faster, the abuse guard takes the bench's
#: agents for scrapers and stops their prefetches (16 clicks in 0.5 s is a flood at once).
AGENT_CLICKS_PER_S = 1.0
#: Once the node handled the last command its pushes are on their way: time to land.
PUSH_SETTLE_S = 1.0
#: The issue's bar. Latencies and lag are upper bounds (the lag strictly), rates lower ones.
GOALS: dict[str, float] = {
    "p50_ms_at_200": 10,
    "p99_ms_at_200": 50,
    "achieved_rate_at_1000": 980,
    "p99_ms_at_1000": 250,
    "worker_lag_s_at_1000": 1.0,
    "cassandra_writes_per_s": 8000,
}


# --- one rate ---------------------------------------------------------------------------------
@dataclass
class Audience:
    """The agents of one window, connected to the node: what they were pushed (client,
    command id, item, when), and once every one of them was welcomed."""

    node_url: str
    clients: list[str]
    pushes: list[tuple[str, str, str, float]] = field(default_factory=list)
    welcomed: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    handshakes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONNECTING))

    async def listen(self, http: aiohttp.ClientSession, client: str) -> None:
        token = tokens.issue(SECRET, client, 3600, time.time())
        url = f"{self.node_url}/v1/agents/ws"
        async with self.handshakes:
            ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            await ws.send_str(encode_message(Hello(client_id=client, agent="bench/1")).decode())
        async with ws:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    return
                message = decode_from_node(frame.data)
                if isinstance(message, Push) and message.command_id:
                    self.pushes.append(
                        (client, message.command_id, message.content_id, time.time())
                    )
                elif isinstance(message, Welcome):
                    self.welcomed += 1
                    if self.welcomed == len(self.clients):
                        self.ready.set()


def _ms(values: Sequence[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


async def run_rate(
    run: Run,
    rate: int,
    seconds: float,
    streams: list[list[Interaction]],
    spy: Spy | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Clicks at ``rate`` for ``seconds`` from agents of their own (client ids
    ``bench-<name>-<n>``, the n-th clicking the items of ``streams[n]`` in turn, see
    :func:`deal`); what came of it."""
    settings = run.settings
    name = name or str(rate)
    audience = Audience(run.node_url, [f"bench-{name}-{i}" for i in range(len(streams))])
    clients, pushes = audience.clients, audience.pushes
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    agents = [asyncio.create_task(audience.listen(http, c)) for c in clients]
    try:
        await asyncio.wait_for(audience.ready.wait(), CONNECT_TIMEOUT_S)
    except TimeoutError:
        failed = [a.exception() for a in agents if a.done() and a.exception()]
        welcomed = f"{audience.welcomed} of {len(clients)} agents welcomed"
        raise RuntimeError(f"{welcomed} in {CONNECT_TIMEOUT_S:.0f} s: {failed[:1]}") from None
    commands_from = await asyncio.to_thread(end_offsets, settings, settings.topic_prefetch_commands)
    published: dict[str, list[tuple[float, str]]] = {c: [] for c in clients}
    at_once: dict[str, Any] = {"linger.ms": 0}  # each click goes out as it is published
    publisher = InteractionPublisher(settings, source="bench", **at_once)
    total = int(rate * seconds)
    before = await asyncio.to_thread(snapshot, run)
    if spy is not None:
        await asyncio.to_thread(spy.start, seconds)
    dumping: asyncio.Task[None] | None = None
    pick = random.Random(f"{name}-{rate}")  # the same clicks in the same order, run to run
    start, began = time.perf_counter(), time.time()
    for n in range(total):
        # Each click from an agent picked at random: each agent's gaps are irregular (a
        # person's, to the abuse guard) where a round robin would be machine-regular.
        i = pick.randrange(len(clients))
        source = streams[i][len(published[clients[i]]) % len(streams[i])]
        event_id = f"b{name}-{n}"
        publisher.publish(
            Interaction(
                event_id=event_id,
                client_id=clients[i],
                content_id=source.content_id,
                kind="click",
                ts=time.time(),
            )
        )
        published[clients[i]].append((time.time(), event_id))
        if spy is not None and n == total // 2:
            dumping = asyncio.create_task(asyncio.to_thread(spy.dump))
        delay = start + (n + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif n % 200 == 0:
            await asyncio.sleep(0)
    stopped, ended = time.monotonic(), time.time()
    achieved = total / (time.perf_counter() - start)
    after = await asyncio.to_thread(snapshot, run)
    load = os.getloadavg()[0]
    if dumping is not None:
        await dumping
    await asyncio.to_thread(publisher.close)  # every click acked, so the end offsets hold them
    end = await asyncio.to_thread(end_offsets, settings, settings.topic_interactions)
    worker_lag, node_lag = await asyncio.to_thread(wait_drained, run, end, stopped)
    await asyncio.sleep(PUSH_SETTLE_S)
    for agent in agents:
        agent.cancel()
    await asyncio.gather(*agents, return_exceptions=True)
    await http.close()
    drained = await asyncio.to_thread(snapshot, run)
    commands_to = await asyncio.to_thread(end_offsets, settings, settings.topic_prefetch_commands)
    commanded = await asyncio.to_thread(command_times, settings, commands_from, commands_to)
    latencies, worker_ms, node_ms = match_pushes(published, pushes, commanded)
    # The clicks of the window's second half alone: a backlog shows there, and the abuse
    # guard, flagging agents as they click on, leaves fewer of them prefetches there.
    midpoint = (began + ended) / 2
    late_clicks = {c: [p for p in clicks if p[0] >= midpoint] for c, clicks in published.items()}
    late, _, _ = match_pushes(late_clicks, pushes, {})
    return (
        {
            "rate": rate,
            "agents": len(clients),
            "achieved_rate": round(achieved),
            "events": total,
            "pushes": len(pushes),
            "matched_pushes": len(latencies),
            "click_to_push_ms": {
                "p50": _ms(latencies, 0.5),
                "p99": _ms(latencies, 0.99),
                "mean": round(statistics.fmean(latencies), 2) if latencies else None,
            },
            "click_to_push_ms_second_half": {
                "p50": _ms(late, 0.5),
                "p99": _ms(late, 0.99),
                "pushes": len(late),
            },
            "click_to_command_ms_p50": _ms(worker_ms, 0.5),
            "command_to_push_ms_p50": _ms(node_ms, 0.5),
            "worker_lag_s": None if worker_lag is None else round(worker_lag, 2),
            "node_lag_s": None if node_lag is None else round(node_lag, 2),
            "load_average": load,
        }
        | window_figures(before, after)
        | worker_view(before, drained)
    )


# --- the results ------------------------------------------------------------------------------
def goals_met(runs: Sequence[Mapping[str, Any]], writes: float) -> dict[str, bool | None]:
    """Each goal of GOALS met or not; None when its rate was not run or gave no figure."""
    at = {run["rate"]: run for run in runs}

    def figure(rate: int, key: str, sub: str | None = None) -> float | None:
        value = at.get(rate, {}).get(key)
        return value.get(sub) if isinstance(value, dict) and sub else value

    def check(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    p50, p99 = figure(200, "click_to_push_ms", "p50"), figure(200, "click_to_push_ms", "p99")
    rate, tail = figure(1000, "achieved_rate"), figure(1000, "click_to_push_ms", "p99")
    lag = figure(1000, "worker_lag_s")
    g = GOALS
    return {
        "p50_ms_at_200": check(p50, p50 is not None and p50 <= g["p50_ms_at_200"]),
        "p99_ms_at_200": check(p99, p99 is not None and p99 <= g["p99_ms_at_200"]),
        "achieved_rate_at_1000": check(
            rate, rate is not None and rate >= g["achieved_rate_at_1000"]
        ),
        "p99_ms_at_1000": check(tail, tail is not None and tail <= g["p99_ms_at_1000"]),
        "worker_lag_s_at_1000": check(lag, lag is not None and lag < g["worker_lag_s_at_1000"]),
        "cassandra_writes_per_s": writes >= g["cassandra_writes_per_s"],
    }


def draw_curve(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Offered rate on x; above, the achieved and handled rates; below, click-to-push p50 and
    p99 on a log axis, with the goals as ticks."""
    offered = [run["rate"] for run in runs]
    nan = float("nan")
    figure = Figure(figsize=(8, 7), layout="constrained")
    rates, latency = figure.subplots(2, 1, sharex=True)
    rates.plot(offered, offered, ":", color="grey", label="offered")
    rates.plot(offered, [r["achieved_rate"] for r in runs], "o-", label="published")
    rates.plot(offered, [r["worker_events_per_s"] for r in runs], "s--", label="handled by worker")
    rates.set_ylabel("clicks/s")
    rates.legend()
    for q in ("p50", "p99"):
        values = [r["click_to_push_ms"][q] for r in runs]
        latency.plot(offered, [nan if v is None else v for v in values], "o-", label=q)
    goals = [(200, GOALS["p50_ms_at_200"]), (200, GOALS["p99_ms_at_200"])]
    goals.append((1000, GOALS["p99_ms_at_1000"]))
    latency.plot(*zip(*goals, strict=True), "k_", markersize=14, label="goals")
    latency.set_yscale("log")
    latency.set_ylabel("click-to-push (ms)")
    latency.set_xlabel("offered clicks/s")
    latency.legend()
    for axes in (rates, latency):
        axes.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


async def cassandra_writes(settings: Settings, ops: int) -> float:
    cluster, session = await asyncio.to_thread(connect, settings, settings.cassandra_keyspace)
    try:
        store = ContentStore(session, settings.cassandra_keyspace)
        body = b"x" * 2048
        item = StoredVersion("bench-item", 1, "0" * 64, '"e"', "text/html", len(body), body)
        # As the node writes holdings when pushes pour in: HOLDINGS_PER_WRITE (client, item)
        # pairs per request, each pair a row in both indexes.
        pairs = [(f"bench-client-{n}", item) for n in range(ops)]
        groups = [pairs[i : i + HOLDINGS_PER_WRITE] for i in range(0, ops, HOLDINGS_PER_WRITE)]
        start = time.perf_counter()
        await asyncio.gather(*(store.record_holdings(group) for group in groups))
        elapsed = time.perf_counter() - start
        return 2 * ops / elapsed
    finally:
        await asyncio.to_thread(cluster.shutdown)


# --- the command ------------------------------------------------------------------------------
def run_settings(base: Settings, tag: str, state: Path) -> Settings:
    origin_port = free_port()
    return base.with_topic_prefix(f"e2e-{tag}").model_copy(
        update={
            "cassandra_keyspace": f"e2e_{tag}",
            "worker_group": f"e2e-{tag}",  # its changelogs: e2e-<tag>-*, like the topics
            "worker_web_port": free_port(),
            "origin_port": origin_port,
            "origin_latency_ms": 0.0,
            "origin_url_template": f"http://127.0.0.1:{origin_port}/content/{{content_id}}",
            "cache_node_base_port": free_port(),
            "state_dir": state,
            "snapshot_interval_s": 3600.0,
            "prefetch_command_slots": 1,
            "agent_token_secrets": [SecretStr(SECRET)],
        }
    )


def start(stack: Stack, settings: Settings, services: Settings, logs: Path) -> Run:
    """The origin, the node and the worker, started together and each waited for; the
    processes whose CPU the run accounts for (Kafka and Cassandra: ``services``' own)."""
    env = dict(os.environ) | settings.as_environment()
    ports = {
        "origin": (["origin"], settings.origin_port),
        "node": (["cache-node", "--node-id", "0"], settings.cache_node_base_port),
        "worker": (["worker", "-l", "warning"], settings.worker_web_port),
    }
    for name, (args, port) in ports.items():
        url = f"http://127.0.0.1:{port}/healthz"
        stack.start(Child(name, args, url, logs / f"{name}.log", env), wait=False)
    processes = {"bench": psutil.Process()}
    for name, child in stack.children.items():
        child.wait_healthy()
        assert child.process is not None
        processes[name] = psutil.Process(child.process.pid)
    for spec in all_specs(services):
        if (service := running_process(spec)) is not None:
            processes[spec.name] = service
    return Run(
        settings,
        f"http://127.0.0.1:{settings.worker_web_port}",
        f"http://127.0.0.1:{settings.cache_node_base_port}",
        processes,
    )


def warm(run: Run, clicks: Sequence[Interaction]) -> None:
    """The model learns these clicks before any rate is measured."""
    with InteractionPublisher(run.settings) as publisher:
        publisher.publish_batch(clicks)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        metrics = read_metrics(http_text(f"{run.worker_url}/metrics"))
        if metric_sum(metrics, "foresight_worker_events_total", topic="interactions") >= len(
            clicks
        ):
            return
        time.sleep(0.5)
    raise TimeoutError("the worker did not finish the warm-up in 600 s")


def sessions_of(clicks: Iterable[Interaction]) -> list[list[Interaction]]:
    """Clicks grouped by session (client id), in the order the sessions start."""
    by_session: dict[str, list[Interaction]] = {}
    for event in clicks:
        by_session.setdefault(event.client_id, []).append(event)
    return list(by_session.values())


def deal(
    pool: Sequence[list[Interaction]], agents: int, clicks: int, first: int
) -> tuple[list[list[Interaction]], int]:
    """At least ``clicks / agents`` clicks for each of ``agents`` clients: whole sessions of
    ``pool`` from its ``first`` on (round again when it runs out), each to the client with the
    fewest so far; and where the next deal starts. A client that played one session round and
    round would soon be predicted only what it was already sent, and get no more pushes: here
    each click moves its predictions on, as a stream of new visitors would.

    >>> a, b, c = (Interaction(event_id=x, client_id=x, content_id=x, kind="click", ts=0.0)
    ...            for x in "abc")
    >>> streams, after = deal([[a, b], [c]], agents=2, clicks=3, first=1)
    >>> [[e.event_id for e in s] for s in streams], after
    ([['c', 'c'], ['a', 'b']], 0)
    """
    streams: list[list[Interaction]] = [[] for _ in range(agents)]
    need, n = -(-clicks // agents), first
    while min(len(s) for s in streams) < need:
        shortest = min(range(agents), key=lambda i: len(streams[i]))
        streams[shortest].extend(pool[n % len(pool)])
        n += 1
    return streams, n % len(pool)


@sigterm_as_ctrl_c()  # SIGTERM too ends in the `finally` that drops the run's topics
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--seconds", type=float, default=20.0, help="Window per rate.")
    parser.add_argument("--agents", type=int, default=50, help="Agents per window, at least.")
    parser.add_argument(
        "--agent-clicks-per-s",
        type=float,
        default=AGENT_CLICKS_PER_S,
        help="Each window has enough agents that each clicks this often on average.",
    )
    parser.add_argument("--warm", type=int, default=20_000, help="Training clicks learnt first.")
    parser.add_argument("--writes", type=int, default=20_000, help="Holdings in the write bench.")
    parser.add_argument(
        "--prime",
        type=float,
        default=5.0,
        help="Seconds of clicks at the first rate, not measured, before the first window: the "
        "first window would otherwise pay alone for fetching the items from the origin.",
    )
    parser.add_argument("--png", type=Path, default=BENCH / "results" / "e2e-curve.png")
    parser.add_argument("--profile", type=Path, help="Record py-spy profiles into this folder.")
    parser.add_argument("--profile-rate", type=int, default=200)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    load_at_start = os.getloadavg()[0]
    base = Settings()
    profile: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as state:
        settings = run_settings(base, tag, Path(state))
        try:
            with Stack() as stack:
                create_topics(settings)
                migrate(settings)
                run = start(stack, settings, base, Path(state) / "logs")
                train = sorted(read_yoochoose(DATA / "train_full.tsv"), key=lambda e: e.ts)
                warm(run, train[-args.warm :])
                # New visitors for every window: the test sessions, then the untaught training.
                test = sorted(read_yoochoose(DATA / "test.tsv"), key=lambda e: e.ts)
                pool, first = sessions_of(test) + sessions_of(train[: -args.warm]), 0
                if args.prime > 0:  # the node's caches as warm for the first rate as the rest
                    rate = args.rates[0]
                    agents = max(args.agents, math.ceil(rate / args.agent_clicks_per_s))
                    streams, first = deal(pool, agents, round(rate * args.prime), first)
                    asyncio.run(run_rate(run, rate, args.prime, streams, name="prime"))
                runs = []
                for rate in args.rates:
                    spy = None
                    if args.profile is not None and rate == args.profile_rate:
                        pids = {n: run.processes[n].pid for n in ("worker", "node")}
                        spy = Spy(pids, args.profile)
                    agents = max(args.agents, math.ceil(rate / args.agent_clicks_per_s))
                    streams, first = deal(pool, agents, round(rate * args.seconds), first)
                    runs.append(asyncio.run(run_rate(run, rate, args.seconds, streams, spy)))
                    if spy is not None:
                        profile = spy.wait()
                writes = asyncio.run(cassandra_writes(settings, args.writes))
        finally:
            delete_topics(base, (f"e2e-{tag}-",))  # the run's and its worker's
            drop_keyspaces(base, f"e2e_{tag}")
    draw_curve(runs, args.png)
    result: dict[str, Any] = {
        "bench": "e2e",
        "runs": runs,
        "cassandra_writes_per_s": round(writes),
        "goals": GOALS,
        "goals_met": goals_met(runs, writes),
        "agents": args.agents,
        "agent_clicks_per_s": args.agent_clicks_per_s,
        "seconds": args.seconds,
        "png": str(args.png),
        "topic_prefix": f"e2e-{tag}",
        "keyspace": f"e2e_{tag}",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average": os.getloadavg()[0],
    }
    if profile is not None:
        result["profile"] = profile | {"folder": str(args.profile)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
