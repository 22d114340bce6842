"""A replay: real sessions through the whole system, measured from the agents' side.

1. The run gets topics, a keyspace and a worker group of its own (``replay-<run>``), so runs
   never mix, and starts the origin and a worker as child processes.
2. Warm: the training clicks are published and the worker learns them before any cache node
   is up, so they teach the model without sending a single prefetch. Then the services warm
   up: nodes on a keyspace of their own serve the last ``WARM_UP_REQUESTS`` training clicks
   as Global Privacy Control requests (not learned), and stop; the keyspace is dropped. A JVM
   just started runs its first minute or so several times slower, and the "without" pass
   comes after the "with" one, so without this the first pass alone would pay for it (on a
   freshly started Cassandra the first 45 s of "with" cost 31, 13 and 11 ms a request against
   4 ms later). Caches stay cold for both passes: new node processes, new keyspaces.
3. The cache nodes start. Each test session becomes one client with its own agent (the Python
   SDK); sessions start in the order they started in the data, up to ``clients`` at a time.
   Within a session the gaps between requests are the recorded ones divided by ``speed`` (at
   most ``max_gap_s``). Every request is an ``agent.get``: a local hit, or a fetch from the
   client's node. Hits reach the model as views, fetches as requests.
4. Without prefetching: the nodes restart on an empty keyspace and serve the same requests,
   in the same order, to clients that never receive a push (Global Privacy Control requests,
   so the model does not learn them twice). Both passes start cold, origin included.
5. Optionally the offline threshold sweep (streams.simulate), for the report's trade-off plot.

Under a network profile (``options.network``, foresight.replay.network) each agent's link is
shaped in the with-prefetching pass: a fetch costs the round trip and its bytes behind what is
already on the downlink, a pushed item is usable once its bytes are in, and the agent waits each
answer out. The "without" latencies are then fetches over an idle link. Loopback shapes nothing.
An access log's replay (``options.log``, foresight.replay.site) comes as session files and a
sizes map the run hands to its origin (FORESIGHT_ORIGIN_SIZES_FILE).

lost_events is published minus processed: requests the agents made minus the interactions
the worker processed over the pass (each request is exactly one interaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from agents.sdk import Agent, AgentError, GetResult
from consumers.node import SHED_OUTCOMES
from foresight import tokens
from foresight.migrate import drop_keyspaces, migrate
from foresight.replay.chaos import (
    CHAOS_FIRST_S,
    CHAOS_GAP_S,
    Chaos,
    cassandra_is_durable,
    restart_cassandra_durable,
)
from foresight.replay.measure import (
    Request,
    Tally,
    metric_sum,
    read_metrics,
    request_indices,
    summarize,
    timeline,
)
from foresight.replay.network import LOOPBACK, Link, NetworkProfile
from foresight.replay.savings import savings
from foresight.report import ReportData, write_report
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from foresight.stack import Child, Stack, http_text
from foresight.topics import create_topics, delete_topics
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Interaction, InvalidRecord, decode
from schemas.protocol import Push

log = logging.getLogger(__name__)

#: The offline sweep's thresholds (streams.simulate), for the trade-off plot.
DEFAULT_SWEEP = (0.02, 0.05, 0.1, 0.2, 0.4)
#: How long the worker may go without processing anything before we stop waiting for it.
DRAIN_IDLE_S = 30.0
BASELINE_CONCURRENCY = 8
#: Requests the warm-up serves before the passes (see the module's step 2).
WARM_UP_REQUESTS = 12_000
#: The first ``clients`` sessions start spread over this many seconds, not all at once: a
#: site's visitors do not arrive in one instant, and a burst of cold connects would measure
#: the burst rather than prefetching.
RAMP_S = 10.0


class Progress(Protocol):
    """Told how a phase goes: ``done`` of ``total`` (None: unknown), live figures if any."""

    def __call__(
        self, phase: str, done: int, total: int | None, live: Mapping[str, float] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class ReplayOptions:
    train: Path
    test: Path
    speed: float = 10.0
    clients: int = 100
    max_gap_s: float = 2.0
    nodes: int = 2
    baseline: bool = True
    sweep: Sequence[float] = DEFAULT_SWEEP
    sessions: int | None = None  # only the first N test sessions (a quick run)
    run_dir: Path = Path("replay")
    chaos: tuple[str, ...] = ()  # faults during the pass (foresight.replay.chaos)
    chaos_first_s: float = CHAOS_FIRST_S
    chaos_gap_s: float = CHAOS_GAP_S
    # Each agent's link in both passes (foresight.replay.network); loopback: not shaped.
    network: NetworkProfile = LOOPBACK
    # The sessions come from this access log (foresight.replay.site), its pages' sizes from
    # ``sizes`` (the origin serves them), what reading it counted in ``log_summary``.
    log: Path | None = None
    sizes: Path | None = None
    log_summary: Mapping[str, Any] | None = None


@dataclass
class ReplayResult:
    summary: dict[str, Any]
    report: ReportData
    report_path: Path | None = None
    interrupted: bool = False
    tally: Tally = field(default_factory=Tally)


def run_settings(settings: Settings, options: ReplayOptions, tag: str) -> Settings:
    """The run's own topics, keyspace, worker group and state folder; a token secret if none
    is configured (a fresh random one, handed only to the run's children)."""
    secrets_ = settings.agent_token_secrets or [SecretStr(secrets.token_hex(32))]
    sizes = options.sizes.resolve() if options.sizes is not None else settings.origin_sizes_file
    return settings.with_topic_prefix(f"replay-{tag}").model_copy(
        update={
            "cassandra_keyspace": f"{settings.cassandra_keyspace[:20]}_r{tag}",  # <= 40 chars
            "worker_group": f"foresight-replay-{tag}",
            "state_dir": options.run_dir / "state",
            "prefetch_command_slots": max(settings.prefetch_command_slots, options.nodes),
            "agent_token_secrets": secrets_,
            "origin_sizes_file": sizes,
        }
    )


def sessions_of(path: Path, limit: int | None = None) -> list[list[Interaction]]:
    """A TSV's sessions, each in time order, in the order they started."""
    by_client: dict[str, list[Interaction]] = {}
    for event in read_yoochoose(path):
        by_client.setdefault(event.client_id, []).append(event)
    sessions = [sorted(events, key=lambda e: e.ts) for events in by_client.values()]
    sessions.sort(key=lambda events: (events[0].ts, events[0].client_id))
    return sessions[:limit] if limit is not None else sessions


class Replay:
    """One replay run: its settings, its child processes and what it measured."""

    def __init__(self, settings: Settings, options: ReplayOptions, progress: Progress) -> None:
        self.options = options
        self.tag = f"{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"
        self.settings = run_settings(settings, options, self.tag)
        self.services = settings  # the local services' own settings (state folder, ports)
        self.chaos: Chaos | None = None
        self.progress = progress
        self.stack = Stack()
        self.tally = Tally()
        self.total_requests: int | None = None
        self.warm_up_s: float | None = None
        self.warm_up_clicks: list[Interaction] = []  # the training data's last, kept by warm()
        self.secret = self.settings.agent_token_secrets[0].get_secret_value()
        self.logs = options.run_dir / "logs"
        self.node_urls = [
            f"http://127.0.0.1:{self.settings.cache_node_base_port + n}"
            for n in range(options.nodes)
        ]

    # --- processes --------------------------------------------------------------------------
    def _child(self, name: str, args: list[str], port: int, settings: Settings) -> Child:
        return Child(
            name,
            args,
            f"http://127.0.0.1:{port}/healthz",
            self.logs / f"{name}.log",
            settings.as_environment(),
        )

    @property
    def ring(self) -> HashRing:
        """The ring the run's cache nodes form, as every process computes it."""
        return HashRing(
            Member(f"node-{n}", url=url, slot=n) for n, url in enumerate(self.node_urls)
        )

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.worker_web_port}"

    def start_core(self) -> None:
        s = self.settings
        create_topics(s)
        migrate(s)
        self.stack.start(self._child("origin", ["origin"], s.origin_port, s))
        self.stack.start(self._child("worker", ["worker", "-l", "warning"], s.worker_web_port, s))

    def start_nodes(self, settings: Settings) -> None:
        for n in range(self.options.nodes):
            port = settings.cache_node_base_port + n
            args = ["cache-node", "--node-id", str(n), "--port", str(port)]
            self.stack.start(self._child(f"node-{n}", args, port, settings), wait=False)
        for n in range(self.options.nodes):
            self.stack.children[f"node-{n}"].wait_healthy()

    def stop_nodes(self) -> None:
        for n in range(self.options.nodes):
            self.stack.stop(f"node-{n}")

    def keep_metrics(self, name: str, text: str) -> None:
        """Keep a process's last /metrics page in the run folder, for a closer look."""
        folder = self.options.run_dir / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.prom").write_text(text)

    def worker_metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return read_metrics(http_text(f"{self.worker_url}/metrics"))

    def processed(self) -> int:
        values = self.worker_metrics()
        return int(metric_sum(values, "foresight_worker_events_total", topic="interactions"))

    def wait_processed(self, target: int, phase: str, first: int = 0) -> int:
        """Wait until the worker processed ``target`` interactions more than ``first`` (or made
        no progress for DRAIN_IDLE_S); return how many it processed."""
        done, idle_since = self.processed() - first, time.monotonic()
        while done < target and time.monotonic() - idle_since < DRAIN_IDLE_S:
            time.sleep(0.25)
            now = self.processed() - first
            if now > done:
                done, idle_since = now, time.monotonic()
            self.progress(phase, done, target)
        return done

    def interaction_offsets(self) -> dict[int, int]:
        """The run's interactions topic: each partition's end offset."""
        topic = self.settings.topic_interactions
        consumer = Consumer(self._probe_config(f"foresight-replay-probe-{self.tag}"))
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in meta.partitions
            }
        finally:
            consumer.close()

    def committed_offsets(self) -> dict[int, int]:
        """The offsets the worker group committed on the run's interactions topic: what it
        processed, whatever became of the worker processes (a restart resets their metrics);
        Faust commits every few seconds, so wait_consumed also reads the worker's own handled
        offsets."""
        topic = self.settings.topic_interactions
        consumer = Consumer(self._probe_config(self.settings.worker_group))
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            wanted = [TopicPartition(topic, p) for p in meta.partitions]
            return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=30)}
        finally:
            consumer.close()

    def _probe_config(self, group: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "logger": logging.getLogger("librdkafka"),
        }

    def wait_consumed(self, start: Mapping[int, int], target: int) -> tuple[int, int]:
        """Wait until the worker group committed ``target`` interactions past ``start`` (or
        made no progress for DRAIN_IDLE_S); return (processed, published to Kafka)."""

        def consumed() -> int:
            done = self.committed_offsets()
            try:
                values = self.worker_metrics()
            except OSError:  # a worker restarting: its commits still count
                values = {}
            for (name, labels), value in values.items():
                if name == "foresight_worker_handled_offset":
                    partition = int(dict(labels)["partition"])
                    done[partition] = max(done.get(partition, 0), int(value))
            return sum(max(0, done.get(p, 0) - first) for p, first in start.items())

        done, idle_since = consumed(), time.monotonic()
        while done < target and time.monotonic() - idle_since < DRAIN_IDLE_S:
            time.sleep(0.5)
            now = consumed()
            if now > done:
                done, idle_since = now, time.monotonic()
            self.progress("draining", done, target)
        end = self.interaction_offsets()
        return done, sum(end.get(p, 0) - first for p, first in start.items())

    def published(
        self, start: Mapping[int, int], limit: int = 10
    ) -> tuple[int, list[dict[str, Any]]]:
        """The pass's interactions in Kafka, each event counted once (an agent sends a view
        again when its ack never came; the copy has the same event id), and the requests
        with none (up to ``limit``): which, when, and whether the agent's cache answered
        them (a view) or its node did (a request)."""
        topic = self.settings.topic_interactions
        end = self.interaction_offsets()
        want = sum(max(0, end.get(p, 0) - first) for p, first in start.items())
        consumer = Consumer(self._probe_config(f"foresight-replay-probe-{self.tag}"))
        seen: Counter[tuple[str, str]] = Counter()
        events: set[str] = set()
        try:
            consumer.assign([TopicPartition(topic, p, first) for p, first in start.items()])
            read, deadline = 0, time.monotonic() + 60
            while read < want and time.monotonic() < deadline:
                for message in consumer.consume(1000, timeout=1.0):
                    if message.error() is not None:
                        continue
                    read += 1
                    with contextlib.suppress(InvalidRecord):
                        event = decode(Interaction, message.value() or b"")
                        if event.event_id not in events:
                            events.add(event.event_id)
                            seen[(event.client_id, event.content_id)] += 1
        finally:
            consumer.close()
        missing: list[dict[str, Any]] = []
        for r in sorted(self.tally.requests, key=lambda r: r.at):
            if seen[(r.client_id, r.content_id)] > 0:
                seen[(r.client_id, r.content_id)] -= 1
            elif len(missing) < limit:
                kind = "view" if r.hit else "request"
                missing.append(
                    {
                        "client_id": r.client_id,
                        "content_id": r.content_id,
                        "at_s": r.at,
                        "kind": kind,
                    }
                )
        return len(events), missing

    def wait_ring(self, members: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if metric_sum(self.worker_metrics(), "foresight_ring_members") >= members:
                return
            time.sleep(0.25)
        raise TimeoutError(f"the worker's ring did not reach {members} cache nodes")

    def live(self) -> dict[str, float]:
        return self.tally.live() | {"pushes": float(len(self.tally.click_to_push_ms))}

    # --- phases -----------------------------------------------------------------------------
    def warm(self) -> int:
        """Publish the training clicks and wait until the worker learned them all."""
        train = sorted(read_yoochoose(self.options.train), key=lambda e: e.ts)
        self.warm_up_clicks = train[-WARM_UP_REQUESTS:]
        before = self.processed()
        with InteractionPublisher(self.settings, source="replay-warm") as publisher:
            for start in range(0, len(train), 10_000):
                publisher.publish_batch(train[start : start + 10_000])
                self.progress("publishing training clicks", start, len(train))
        return self.wait_processed(len(train), "learning training clicks", before)

    async def with_prefetching(self, sessions: list[list[Interaction]]) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(self.options.clients)
        self.total_requests = sum(len(s) for s in sessions)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def play(index: int, events: list[Interaction]) -> None:
                # The gate first: the first `clients` sessions hold it while they wait their
                # turn in the ramp, so no later session starts ahead of them at once.
                async with gate:
                    if index < self.options.clients:
                        await asyncio.sleep(index * RAMP_S / self.options.clients)
                    await self._play_session(http, index, events, started)

            chaos = None
            if self.options.chaos:
                chaos = asyncio.create_task(self._strike(started))
            await asyncio.gather(*(play(i, s) for i, s in enumerate(sessions)))
            if chaos is not None:
                await chaos

    async def _strike(self, started: float) -> None:
        """The faults, one after the other, while the agents play (foresight.replay.chaos)."""
        self.chaos = Chaos(
            self.options.chaos,
            self.stack,
            self.services,
            [f"node-{n}" for n in range(self.options.nodes)],
        )
        await asyncio.sleep(self.options.chaos_first_s)
        for n, fault in enumerate(self.options.chaos):
            if n:
                await asyncio.sleep(self.options.chaos_gap_s)
            self.progress(f"chaos: {fault}", 0, 1)
            await asyncio.to_thread(self.chaos.strike, fault, started)
            self.progress(f"chaos: {fault}", 1, 1)

    async def _play_session(
        self, http: aiohttp.ClientSession, index: int, events: list[Interaction], t0: float
    ) -> None:
        client = events[0].client_id
        token = tokens.issue(self.secret, client, 24 * 3600, time.time())
        bootstrap = self.node_urls[index % len(self.node_urls)]  # a non-owner redirects
        network = self.options.network
        link = Link(network) if network.shaped else None

        def on_push(push: Push, received_at: float) -> None:
            self.tally.on_push(push, received_at)
            if link is not None:  # received_at is the agent's clock: time.time()
                link.pushed(push.content_id, len(push.body), received_at)

        agent = Agent(
            client,
            token,
            bootstrap,
            nodes=self.node_urls,
            session=http,
            unused_ttl_s=None,
            on_push=on_push,
        )
        try:
            await agent.connect()
            previous: float | None = None
            for position, event in enumerate(events):
                if previous is not None:
                    gap = (event.ts - previous) / self.options.speed
                    await asyncio.sleep(min(max(0.0, gap), self.options.max_gap_s))
                previous = event.ts
                asked = time.time()
                try:
                    result = await agent.get(event.content_id)
                except AgentError as exc:
                    self.tally.errors.append(f"{client} {event.content_id}: {exc}")
                    continue
                latency_ms = result.latency_ms
                if link is not None:
                    latency_ms = await _over_link(link, result, asked)
                self.tally.add(
                    Request(
                        at=time.monotonic() - t0,
                        client_id=client,
                        content_id=event.content_id,
                        landing=position == 0,
                        hit=result.from_cache,
                        latency_ms=latency_ms,
                        size=len(result.body),
                    )
                )
                if len(self.tally.requests) % 50 == 0:
                    self.progress(
                        "replaying", len(self.tally.requests), self.total_requests, self.live()
                    )
        except AgentError as exc:
            self.tally.errors.append(f"{client}: {exc}")
        finally:
            await agent.close()  # sends the last views and feedback
            self.tally.agent_done(agent)

    def warm_up(self) -> None:
        """Nodes on a keyspace of their own serve the training data's last clicks (after
        :meth:`warm`), then stop (the module's step 2): the JVMs are warm for both passes, the
        caches for neither."""
        requests = [
            Request(0.0, f"warm-up-{e.client_id}", e.content_id, False, False, 0.0, 0)
            for e in self.warm_up_clicks
        ]
        if not requests:
            return
        keyspace = f"{self.settings.cassandra_keyspace}_w"
        settings = self.settings.model_copy(update={"cassandra_keyspace": keyspace})
        migrate(settings)
        started = time.monotonic()
        self.start_nodes(settings)
        try:
            asyncio.run(self.without_prefetching(requests, "warming up the services"))
            self.warm_up_s = round(time.monotonic() - started, 1)
            log.info("warmed up the services: %d requests in %s s", len(requests), self.warm_up_s)
        finally:
            self.stop_nodes()
            drop_keyspaces(self.settings, keyspace)

    async def without_prefetching(
        self, requests: Sequence[Request], phase: str = "serving without prefetching"
    ) -> list[float]:
        """The same requests, in the same order, served by freshly started nodes to clients
        that hold nothing; latencies in request order."""
        ring = self.ring
        latencies = [0.0] * len(requests)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(requests)):
            queue.put_nowait(i)
        tokens_by_client: dict[str, str] = {}
        done = 0

        async def worker(http: aiohttp.ClientSession) -> None:
            nonlocal done
            while not queue.empty():
                i = queue.get_nowait()
                r = requests[i]
                token = tokens_by_client.setdefault(
                    r.client_id, tokens.issue(self.secret, r.client_id, 24 * 3600, time.time())
                )
                url = f"{ring.owner(r.client_id).url}/v1/content/{quote(r.content_id, safe='')}"
                headers = {"Authorization": f"Bearer {token}", "Sec-GPC": "1"}
                began = time.perf_counter()
                async with http.get(url, headers=headers, allow_redirects=False) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies[i] = (time.perf_counter() - began) * 1000
                done += 1
                if done % 100 == 0:
                    self.progress(phase, done, len(requests))

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await asyncio.gather(*(worker(http) for _ in range(BASELINE_CONCURRENCY)))
        return latencies

    def node_load(self, sessions: list[list[Interaction]]) -> dict[str, dict[str, float]]:
        ring = self.ring
        owners = [ring.owner(s[0].client_id).node_id for s in sessions]
        load: dict[str, dict[str, float]] = {}
        for n, url in enumerate(self.node_urls):
            node = f"node-{n}"
            try:
                text = http_text(f"{url}/metrics")
            except OSError:
                text = ""
            self.keep_metrics(node, text)
            values = read_metrics(text)
            load[node] = {
                "ring_share": owners.count(node) / len(owners) if owners else 0.0,
                "clients": float(self.tally.clients_by_node.get(node, 0)),
                "commands": metric_sum(values, "foresight_node_commands_total"),
                "pushes": metric_sum(values, "foresight_node_pushes_total"),
                # Prefetch work shed under load (consumers.node.CacheNode.shed).
                **{
                    f"shed_{why}": metric_sum(values, "foresight_node_commands_total", outcome=why)
                    for why in SHED_OUTCOMES
                },
            }
        return load


def sweep_points(
    settings: Settings, options: ReplayOptions, progress: Progress
) -> list[dict[str, float]]:
    """The offline trade-off: hit ratio and waste per threshold (streams.simulate)."""
    if not options.sweep:
        return []
    from streams.simulate import sweep

    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress("threshold sweep (offline)", done, None)

    results = sweep(
        options.train, options.test, list(options.sweep), settings=settings, progress=advance
    )
    return [
        {
            "threshold": float(r.threshold),
            "hit_ratio": r.hit_ratio,
            "wasted_per_requested_byte": r.wasted_per_requested_byte,
        }
        for r in results
    ]


def replay(settings: Settings, options: ReplayOptions, progress: Progress) -> ReplayResult:
    """Run a whole replay (children started and stopped here) and write its report."""
    run = Replay(settings, options, progress)
    sessions = sessions_of(options.test, options.sessions)
    without: list[float] = []
    sweep: list[dict[str, float]] = []
    interrupted = False
    processed = published = redelivered = 0
    unpublished: list[dict[str, Any]] = []
    online_hr: float | None = None
    worker_lag_ms: float | None = None
    shed_predictions = 0.0
    load: dict[str, dict[str, float]] = {}
    began = time.monotonic()
    try:
        if "cassandra" in options.chaos and not cassandra_is_durable(settings):
            # A durability run must not use the test-only no-fsync flags.
            progress("restarting Cassandra with fsync on", 0, None)
            restart_cassandra_durable(settings)
        with run.stack:
            run.start_core()
            run.warm()
            if options.baseline:  # the warm-up is for the with/without comparison
                run.warm_up()
            run.start_nodes(run.settings)
            run.wait_ring(options.nodes)
            before = run.worker_metrics()
            start = run.interaction_offsets()
            began = time.monotonic()
            try:
                asyncio.run(run.with_prefetching(sessions))
            except KeyboardInterrupt:
                interrupted = True
            duration = time.monotonic() - began
            if not interrupted:
                processed, records = run.wait_consumed(start, len(run.tally.requests))
                published, unpublished = run.published(start)
                # A copy is consumed like any record; each event counts once.
                redelivered = records - published
                processed -= redelivered
                after = run.worker_metrics()
                if metric_sum(after, "foresight_online_scored_total") < metric_sum(
                    before, "foresight_online_scored_total"
                ):
                    before = {}  # the worker restarted (chaos): its counters began again
                scored = metric_sum(after, "foresight_online_scored_total") - metric_sum(
                    before, "foresight_online_scored_total"
                )
                hits = metric_sum(after, "foresight_online_hits_total") - metric_sum(
                    before, "foresight_online_hits_total"
                )
                online_hr = hits / scored if scored else None
                lag = "foresight_worker_consume_lag_seconds"
                lagged = metric_sum(after, f"{lag}_count") - metric_sum(before, f"{lag}_count")
                lag_s = metric_sum(after, f"{lag}_sum") - metric_sum(before, f"{lag}_sum")
                worker_lag_ms = round(lag_s / lagged * 1000, 1) if lagged else None
                shed = "foresight_worker_shed_predictions_total"
                shed_predictions = metric_sum(after, shed) - metric_sum(before, shed)
                load = run.node_load(sessions)
                run.keep_metrics("worker", http_text(f"{run.worker_url}/metrics"))
                if options.baseline:
                    run.stop_nodes()
                    base = run.settings.model_copy(
                        update={"cassandra_keyspace": f"{run.settings.cassandra_keyspace}_b"}
                    )
                    migrate(base)
                    run.start_nodes(base)
                    requests = run.tally.requests
                    order = sorted(range(len(requests)), key=lambda i: requests[i].at)
                    latencies = asyncio.run(run.without_prefetching([requests[i] for i in order]))
                    without = [0.0] * len(requests)  # aligned with run.tally.requests
                    for i, latency in zip(order, latencies, strict=True):
                        without[i] = latency
                    if options.network.shaped:  # a fetch over an idle link: no push shares it
                        without = [
                            options.network.idle_fetch_ms(ms, r.size)
                            for ms, r in zip(without, requests, strict=True)
                        ]
    except KeyboardInterrupt:
        interrupted = True
        duration = time.monotonic() - began
    finally:
        # The run's keyspaces and topics served only this run; left, they cost Cassandra heap
        # and broker memory run after run.
        with contextlib.suppress(Exception):
            drop_keyspaces(run.settings, run.settings.cassandra_keyspace)
        with contextlib.suppress(Exception):
            delete_topics(run.settings, (f"replay-{run.tag}", run.settings.worker_group))
    if not interrupted:
        sweep = sweep_points(run.settings, options, progress)
    summary = summarize(
        run.tally,
        without_ms=without,
        processed=processed,
        online_hr=online_hr,
        duration_s=duration,
        extra={
            "run": run.tag,
            "speed": options.speed,
            "clients": options.clients,
            "max_gap_s": options.max_gap_s,
            "nodes": options.nodes,
            "sessions": len(sessions),
            "interrupted": interrupted,
            # From a request's Kafka timestamp to the worker starting on it, mean over the pass.
            "worker_consume_lag_ms": worker_lag_ms,
            # The services' warm-up before the passes (None: no baseline pass, no warm-up).
            "warm_up_s": run.warm_up_s,
            # Interactions that reached Kafka (requests minus this: never published).
            "published_events": published,
            "unpublished_samples": unpublished,
            # Copies of events in Kafka (views an agent sent again for want of an ack; the
            # worker drops them by event id).
            "redelivered_events": redelivered,
            "chaos": run.chaos.as_json() if run.chaos is not None else [],
            # Clicks the worker learned without predicting, too far behind for a prefetch.
            "shed_predictions": shed_predictions,
            # Prefetch commands the nodes shed under load, by why (summed over the nodes).
            "shed_commands": {
                why: sum(node.get(f"shed_{why}", 0.0) for node in load.values())
                for why in SHED_OUTCOMES
            },
            # The visitors' link in both passes (foresight.replay.network).
            "network": options.network.as_json(),
            # What prefetching saved the visitors and cost them, per top page too.
            "savings": savings(
                run.tally.requests,
                without,
                run.tally.pushed_bytes_by_item,
                run.tally.used_bytes_by_item,
            ),
            **({"log": dict(options.log_summary)} if options.log_summary is not None else {}),
        },
    )
    nexts = request_indices(run.tally.requests)
    report = ReportData(
        summary=summary,
        hit_timeline=timeline(run.tally.requests[i] for i in nexts),
        latency_with_ms=[run.tally.requests[i].latency_ms for i in nexts],
        latency_without_ms=[without[i] for i in nexts] if without else [],
        sweep=sweep,
        node_load=load,
        title=f"Foresight replay of {(options.log or options.test).name}",
    )
    path = write_report(report, options.run_dir / "report")
    write_requests(run.tally.requests, without, options.run_dir / "report" / "requests.csv")
    return ReplayResult(summary, report, path, interrupted, run.tally)


async def _over_link(link: Link, result: GetResult, asked: float) -> float:
    """A request's latency over its agent's link (foresight.replay.network), waited out so that
    the session goes on when its visitor could: a local answer once its pushed bytes are in, a
    fetch once its answer has come down the link behind what was ahead of it."""
    if result.from_cache:
        done = max(asked, link.ready_at(result.content_id) or asked)
        latency_ms = max(result.latency_ms, (done - asked) * 1000)
    else:
        done = link.fetched(result.content_id, len(result.body), time.time())
        latency_ms = (done - asked) * 1000
    await asyncio.sleep(max(0.0, done - time.time()))
    return latency_ms


def write_requests(requests: Sequence[Request], without: Sequence[float], path: Path) -> None:
    """Every click of the with-prefetching pass, and its latency without, as CSV.

    ``without[i]`` belongs to ``requests[i]`` (empty: no baseline pass)."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(
            [
                "at_s",
                "client_id",
                "content_id",
                "landing",
                "hit",
                "latency_ms",
                "latency_without_ms",
                "bytes",
            ]
        )
        for i, r in enumerate(requests):
            base = without[i] if without else None
            out.writerow(
                [
                    f"{r.at:.3f}",
                    r.client_id,
                    r.content_id,
                    int(r.landing),
                    int(r.hit),
                    f"{r.latency_ms:.3f}",
                    "" if base is None else f"{base:.3f}",
                    r.size,
                ]
            )
