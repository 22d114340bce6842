"""Soak: the whole system under a steady replay for about five minutes, on loopback only.

The replay's processes (origin, a worker, two cache nodes) run as in `foresight replay`; after
the model learned train_full, the test sessions are played again and again (each round under
new client ids, so every round is new visitors) by CLIENTS concurrent agents until SOAK_S has
passed. Every SAMPLE_S it samples each process's resident memory (Kafka and Cassandra too)
and the queues that would grow if the system fell behind: the interactions the worker has not
committed yet, the nodes' Kafka producer queues, agent outboxes and Cassandra writes in
flight. The nodes' body caches are bounded at 8 MiB here, so they are full after the first
minute instead of filling toward 64 MiB for the whole run. Prints one JSON
object: per process RSS at the start and the end (and every sample) and per queue its first,
last and largest sample, with "flat" and "growing" verdicts.

    python bench/soak.py [--seconds 300] [--clients 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec
import psutil

from foresight.replay.measure import metric_sum, read_metrics
from foresight.replay.run import Replay, ReplayOptions, sessions_of
from foresight.services.manager import running_process
from foresight.services.specs import all_specs
from foresight.settings import Settings
from foresight.stack import http_text
from schemas import Interaction

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "yoochoose-100k"
SAMPLE_S = 15.0
#: The nodes' body caches in this run (64 MiB by default): full within the first minute.
NODE_BODY_CACHE_MB = 8
#: Memory may grow this much from the first sample after warm-up to the last and count as flat
#: (allocator arenas, caches filling up to their bound).
FLAT_RSS = 1.25


def _quiet(
    phase: str, done: int, total: int | None, live: Mapping[str, float] | None = None
) -> None:
    if total is None and done % 2000 == 0:
        print(f"soak: {phase} {done}", file=sys.stderr)


class Sampler(threading.Thread):
    def __init__(self, run: Replay, services: Settings) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.run_ = run
        self.services = services
        self.stop = threading.Event()
        self.rss: dict[str, list[float]] = {}
        self.queues: dict[str, list[float]] = {}
        self.start_offsets: dict[int, int] = {}

    def processes(self) -> dict[str, psutil.Process]:
        found = {}
        for spec in all_specs(self.services):
            process = running_process(spec)
            if process is not None:
                found[spec.name] = process
        for name, child in self.run_.stack.children.items():
            if child.process is not None and child.process.poll() is None:
                found[name] = psutil.Process(child.process.pid)
        return found

    def sample(self) -> None:
        for name, process in self.processes().items():
            try:
                rss = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.rss.setdefault(name, []).append(round(rss, 1))
        end, committed = self.run_.interaction_offsets(), self.run_.committed_offsets()
        behind = sum(max(0, end[p] - committed.get(p, 0)) for p in end)
        self._queue("interactions_not_committed", behind)
        for n, url in enumerate(self.run_.node_urls):
            try:
                node = read_metrics(http_text(f"{url}/metrics"))
            except OSError:
                continue
            for metric, queue in (
                ("foresight_node_producer_queue", "producer_queue"),
                ("foresight_node_outbox_frames", "agent_outboxes"),
                ("foresight_node_store_writes_in_flight", "store_writes"),
            ):
                self._queue(f"node-{n}_{queue}", metric_sum(node, metric))

    def _queue(self, name: str, value: float) -> None:
        self.queues.setdefault(name, []).append(round(value, 3))

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            try:
                self.sample()
            except OSError as exc:
                print(f"soak: sample failed: {exc!r}", file=sys.stderr)


def renamed(sessions: list[list[Interaction]], round_: int) -> list[list[Interaction]]:
    """The same sessions as new visitors: client ids suffixed with the round."""
    return [
        [msgspec.structs.replace(e, client_id=f"{e.client_id}-r{round_}") for e in s]
        for s in sessions
    ]


async def soak(run: Replay, sessions: list[list[Interaction]], seconds: float) -> int:
    deadline, round_, played = time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline:
        batch = renamed(sessions, round_)
        task = asyncio.create_task(run.with_prefetching(batch))
        await asyncio.wait([task], timeout=max(0.0, deadline - time.monotonic()))
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        played += 1
        round_ += 1
    return played


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    # A node's body cache fills up to its bound and then stays there; a small bound fills in
    # the warm-up, so growth after it is what would be a leak.
    settings = Settings().model_copy(update={"node_body_cache_mb": NODE_BODY_CACHE_MB})
    options = ReplayOptions(
        train=args.data / "train_full.tsv",
        test=args.data / "test.tsv",
        clients=args.clients,
        baseline=False,
        sweep=(),
        run_dir=Path("soak"),
    )
    run = Replay(settings, options, _quiet)
    sessions = sessions_of(options.test)
    sampler = Sampler(run, settings)
    with run.stack:
        run.start_core()
        run.warm()
        run.start_nodes(run.settings)
        run.wait_ring(options.nodes)
        sampler.sample()
        sampler.start()
        began = time.monotonic()
        rounds = asyncio.run(soak(run, sessions, args.seconds))
        duration = time.monotonic() - began
        sampler.stop.set()
        sampler.join()
        sampler.sample()
    requests = len(run.tally.requests)
    memory = {
        name: {
            "rss_mib_start": values[1] if len(values) > 1 else values[0],
            "rss_mib_end": values[-1],
            "rss_mib_max": max(values),
            "flat": values[-1] <= FLAT_RSS * (values[1] if len(values) > 1 else values[0]),
            "rss_mib_samples": values,
        }
        for name, values in sampler.rss.items()
    }
    queues = {
        name: {
            "first": values[0],
            "last": values[-1],
            "max": max(values),
            # A queue that keeps growing ends at its largest sample and well above its start.
            "growing": len(values) > 2
            and values[-1] == max(values)
            and values[-1] > 2 * (values[1] + 1),
        }
        for name, values in sampler.queues.items()
    }
    print(
        json.dumps(
            {
                "bench": "soak",
                "seconds": round(duration, 1),
                "clients": args.clients,
                "rounds_started": rounds,
                "requests": requests,
                "requests_per_s": round(requests / duration, 1) if duration else None,
                "hits": run.tally.hits,
                "errors": len(run.tally.errors),
                "memory": memory,
                "queues": queues,
                "samples": len(next(iter(sampler.rss.values()), [])),
                "memory_flat": all(m["flat"] for m in memory.values()),
                "no_queue_growing": not any(q["growing"] for q in queues.values()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
