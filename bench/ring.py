"""Foresight's hash ring next to uhashring, on the same keys in the same run.

For 8 and 64 nodes: lookups/s with hashing included (keys are plain strings, never pre-hashed),
peak/mean load under plain consistent hashing and under Foresight's bounded loads, the share of
keys that move when a node joins (n -> n+1) or leaves (n -> n-1) against the ideal 1/(n+1) or
1/n, and ring build time and memory. uhashring runs twice: with its default MD5 positions and
with Foresight's SHA-256 positions (its ``hash_fn``). Foresight also runs with more virtual
points per node, to show what it takes to meet the movement goal and what that costs.

Lookups/s are the median over rounds in which the rings take turns, so a busy machine slows
them all alike; beside it are the best round, the median by this process's CPU time and the
load average. The keys are fixed, so every figure but the timings and memory repeats. Prints
one JSON object:

    .venv/bin/python bench/ring.py [--keys 200000] [--rounds 9] [--joiners 8]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from uhashring import HashRing as UHashRing

from foresight import ring as foresight_ring
from foresight.ring import DEFAULT_VNODES, HashRing, Member

NODE_COUNTS = (8, 64)
EXTRA_VNODES = (320, 640, 1280)  # Foresight only: what more virtual points buy
EPSILONS = (0.05, 0.04)
UHASHRING_VNODES = 160  # uhashring's default
LOOKUPS_GOAL = 1_500_000
BALANCE_GOAL = 1.05
MOVED_GOAL = 1.1

Lookup = Callable[[str], Any]  # key -> whatever the library returns for its owner


@dataclass(frozen=True)
class Contender:
    """One ring implementation: how to build it over node ids and read a node id back."""

    name: str
    hash: str
    vnodes: int
    build: Callable[[list[str]], Lookup]
    node_id: Callable[[Any], str]
    forget: Callable[[], None] = lambda: None  # drop caches, for a cold build


def sha256_position(key: str) -> int:
    """Foresight's position of a key (the first 8 bytes of SHA-256), as uhashring's hash_fn."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def foresight(vnodes: int) -> Contender:
    return Contender(
        name=f"foresight_v{vnodes}",
        hash="sha256, first 8 bytes big-endian",
        vnodes=vnodes,
        build=lambda nodes: HashRing((Member(n) for n in nodes), vnodes=vnodes).owner,
        node_id=lambda member: str(member.node_id),
        # The cache of virtual points is the ring module's own; clearing it makes a build cold.
        forget=foresight_ring._node_points.cache_clear,
    )


def uhashring(hash_name: str, hash_fn: Callable[[str], int] | None) -> Contender:
    return Contender(
        name=f"uhashring_{hash_name}",
        hash="md5, whole digest as an int" if hash_fn is None else "sha256, first 8 bytes",
        vnodes=UHASHRING_VNODES,
        build=lambda nodes: UHashRing(nodes, vnodes=UHASHRING_VNODES, hash_fn=hash_fn).get_node,
        node_id=str,
    )


def node_ids(n: int) -> list[str]:
    return [f"node-{i}" for i in range(n)]


def owners(contender: Contender, nodes: list[str], keys: Sequence[str]) -> list[str]:
    lookup = contender.build(nodes)
    return [contender.node_id(lookup(key)) for key in keys]


def moved(before: Sequence[str], after: Sequence[str]) -> float:
    return sum(b != a for b, a in zip(before, after, strict=True)) / len(before)


def peak_over_mean(counts: Mapping[str, int], n_nodes: int, n_keys: int) -> float:
    return max(counts.values()) * n_nodes / n_keys


def lookups_per_s(
    lookups: dict[str, Lookup], keys: Sequence[str], rounds: int
) -> dict[str, dict[str, int]]:
    """Lookups/s of each ring: median and best round by the wall clock, and median by this
    process's CPU time (which leaves out the time other processes held the CPU).

    One round times every ring once, in turn.
    """
    wall: dict[str, list[float]] = {name: [] for name in lookups}
    cpu: dict[str, list[float]] = {name: [] for name in lookups}
    for _ in range(rounds):
        for name, lookup in lookups.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for key in keys:
                lookup(key)
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {
        name: {
            "median": round(len(keys) / statistics.median(wall[name])),
            "best": round(len(keys) / min(wall[name])),
            "cpu_median": round(len(keys) / statistics.median(cpu[name])),
        }
        for name in lookups
    }


def build_cost(contender: Contender, nodes: list[str], repeats: int = 5) -> dict[str, float]:
    """Build time in median ms, cold (caches dropped) and as a rebuild after a membership change
    (caches kept), and the memory a ring built cold keeps."""

    def build_ms(cold: bool) -> float:
        times = []
        for _ in range(repeats):
            if cold:
                contender.forget()
            start = time.perf_counter()
            contender.build(nodes)
            times.append(time.perf_counter() - start)
        return round(statistics.median(times) * 1e3, 2)

    cold_ms, rebuild_ms = build_ms(cold=True), build_ms(cold=False)
    contender.forget()
    gc.collect()
    tracemalloc.start()
    kept = contender.build(nodes)
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return {"build_ms": cold_ms, "rebuild_ms": rebuild_ms, "kib": round(retained / 1024)}


def movement(contender: Contender, n: int, keys: Sequence[str], joiners: int) -> dict[str, Any]:
    """Shares moved on a join and a leave, and their ratios to the ideal 1/(n+1) and 1/n.

    ``join`` adds node-n and ``leave`` removes node-(n-1). A leave moves exactly the leaver's
    keys (``leave_moved_equals_its_share`` checks that on the one measured), so the worst leave
    over every node is the largest share. The worst join is over ``joiners`` names tried alone.
    """
    nodes = node_ids(n)
    base = owners(contender, nodes, keys)
    shares = {node: count / len(keys) for node, count in Counter(base).items()}
    leave = moved(base, owners(contender, nodes[:-1], keys))
    joins = [
        moved(base, owners(contender, [*nodes, f"node-{n + j}"], keys)) for j in range(joiners)
    ]
    return {
        "peak_over_mean": round(peak_over_mean(Counter(base), n, len(keys)), 4),
        "join_moved": round(joins[0], 5),
        "join_ratio": round(joins[0] * (n + 1), 4),
        "join_ratio_worst": round(max(joins) * (n + 1), 4),
        "join_ratio_mean": round(statistics.fmean(joins) * (n + 1), 4),
        "leave_moved": round(leave, 5),
        "leave_ratio": round(leave * n, 4),
        "leave_ratio_worst": round(max(shares.values()) * n, 4),
        "leave_moved_equals_its_share": leave == shares.get(nodes[-1], 0.0),
    }


def bounded(n: int, keys: Sequence[str], epsilon: float) -> dict[str, Any]:
    """Foresight's bounded loads at the default vnodes: balance, and movement on join/leave."""

    def assign(nodes: list[str]) -> list[str]:
        assignment = HashRing(Member(node) for node in nodes).assign(keys, epsilon)
        return [assignment[key].node_id for key in keys]

    nodes = node_ids(n)
    base = assign(nodes)
    caps = HashRing(Member(node) for node in nodes).capacities(len(keys), epsilon)
    leave, join = moved(base, assign(nodes[:-1])), moved(base, assign([*nodes, f"node-{n}"]))
    return {
        "vnodes": DEFAULT_VNODES,
        "epsilon": epsilon,
        "cap": max(caps.values()),
        "peak_over_mean": round(peak_over_mean(Counter(base), n, len(keys)), 5),
        "join_ratio": round(join * (n + 1), 4),
        "leave_ratio": round(leave * n, 4),
    }


def goals(nodes: dict[str, dict[str, Any]], default: str) -> list[dict[str, Any]]:
    """Each goal of the issue at each node count, for Foresight at its default vnodes."""
    found: list[dict[str, Any]] = []

    def check(goal: str, measured: float, limit: float, at_least: bool = False) -> None:
        passed = measured >= limit if at_least else measured <= limit
        found.append({"goal": goal, "measured": measured, "pass": passed})

    for n, result in nodes.items():
        for figure in ("median", "cpu_median"):
            speed = result["lookups_per_s"][default][figure]
            check(f"{default} lookups/s >= 1.5M at {n} nodes ({figure})", speed, LOOKUPS_GOAL, True)
        for run in result["bounded"]:
            what = f"vnodes {run['vnodes']}, eps {run['epsilon']}"
            check(
                f"bounded peak/mean <= 1.05 at {n} nodes, {what}",
                run["peak_over_mean"],
                BALANCE_GOAL,
            )
        plain = result["plain"][default]
        for event, ideal in (("join", f"1/{int(n) + 1}"), ("leave", f"1/{n}")):
            check(f"{default} {event} moved <= 1.1 x {ideal}", plain[f"{event}_ratio"], MOVED_GOAL)
            check(
                f"{default} {event} moved <= 1.1 x {ideal}, worst event",
                plain[f"{event}_ratio_worst"],
                MOVED_GOAL,
            )
    return found


def fewest_vnodes_meeting_movement(nodes: dict[str, dict[str, Any]]) -> int | None:
    """The fewest Foresight vnodes whose every join and leave, worst ones too, is within 1.1."""
    counts = sorted({DEFAULT_VNODES, *EXTRA_VNODES})
    for vnodes in counts:
        figures = [result["plain"][f"foresight_v{vnodes}"] for result in nodes.values()]
        worst = max(f[k] for f in figures for k in ("join_ratio_worst", "leave_ratio_worst"))
        if worst <= MOVED_GOAL:
            return vnodes
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000, help="client ids to place")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per ring")
    parser.add_argument("--joiners", type=int, default=8, help="node names tried as the joiner")
    args = parser.parse_args()

    keys = [f"client-{i}" for i in range(args.keys)]
    contenders = [
        foresight(DEFAULT_VNODES),
        uhashring("md5", None),
        uhashring("sha256", sha256_position),
        *(foresight(vnodes) for vnodes in EXTRA_VNODES),
    ]
    default = contenders[0].name
    load_before = os.getloadavg()
    nodes: dict[str, dict[str, Any]] = {}
    for n in NODE_COUNTS:
        ids = node_ids(n)
        lookups = {c.name: c.build(ids) for c in contenders}
        nodes[str(n)] = {
            "lookups_per_s": lookups_per_s(lookups, keys, args.rounds),
            "plain": {c.name: movement(c, n, keys, args.joiners) for c in contenders},
            "bounded": [bounded(n, keys, epsilon) for epsilon in EPSILONS],
            "build": {c.name: build_cost(c, ids) for c in contenders},
        }
    report = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "uhashring_version": version("uhashring"),
        "keys": {"count": len(keys), "form": "client-<i>", "pre_hashed": False},
        "rounds": args.rounds,
        "lookups_per_s_is": "keys / round time, the rings taking turns; goals use the median",
        "ratio_is": "moved / (1/(n+1)) for a join, moved / (1/n) for a leave",
        "worst_is": f"join: over {args.joiners} joiner names; leave: over every node",
        "build_is": "median ms: build_ms cold (caches dropped), rebuild_ms with caches kept",
        "memory_is": "KiB a ring built cold keeps (tracemalloc), Foresight's point cache included",
        "contenders": {c.name: {"hash": c.hash, "vnodes": c.vnodes} for c in contenders},
        "nodes": nodes,
        "goals": goals(nodes, default),
        "fewest_vnodes_meeting_every_movement_goal": fewest_vnodes_meeting_movement(nodes),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
