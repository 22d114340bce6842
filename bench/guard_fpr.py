"""The abuse guard on real sessions with synthetic scrapers mixed in: false positives and N.

Warms the guard on train_full.tsv (all sessions, in time order), then replays test.tsv in time
order with synthetic scrapers interleaved. Fast scrapers walk the catalogue at one request
every 0.2-1 s; slow ones walk it at a human pace (log-normal gaps around 40 s). Reports the
false-positive rate on the real sessions, and for each scraper N, its request count when it was
flagged (from that request on it gets no prefetches). A second replay forgets a share of the
catalogue first, as if new content had appeared, since in this data set every test item also
occurs in train. Prints one JSON object; seeded, so the figures (timings aside) repeat.

    .venv/bin/python bench/guard_fpr.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from producers.datasets import read_yoochoose
from streams.guard import AbuseGuard, dumps, loads

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"

Event = tuple[float, str, str]  # ts, client_id, content_id
FAST = ("sequential", "stride", "mixed", "catalogue", "shuffled")
SLOW = ("sequential", "catalogue")


@dataclass(frozen=True)
class Scraper:
    """A synthetic catalogue walker: its client id, its pace and its requests."""

    client_id: str
    pace: str  # "fast" or "slow"
    walk: str
    events: list[Event]


@dataclass
class Replay:
    """What the guard did over a stream: who was flagged when and why, and the time it took."""

    flagged_at: dict[str, int]
    reasons: dict[str, str]
    blocked: Counter[str]  # events that found their client blocked, per client
    durations_s: list[float]


def load(path: Path) -> list[Event]:
    """The events of a yoochoose file in time order (ties keep file order)."""
    events = [(e.ts, e.client_id, e.content_id) for e in read_yoochoose(path)]
    events.sort(key=lambda e: e[0])
    return events


def _walk(kind: str, catalogue: list[int], rng: random.Random) -> Callable[[int], int]:
    """How a scraper of one kind picks its i-th content id."""
    start = rng.randrange(len(catalogue))
    base, low, high = catalogue[start], catalogue[0], catalogue[-1]
    shuffled = rng.sample(catalogue, len(catalogue))
    walks: dict[str, Callable[[int], int]] = {
        "sequential": lambda i: base + i,  # every id in turn, most of them unknown
        "stride": lambda i: base + 7 * i,
        "mixed": lambda i: rng.choice(catalogue) if rng.random() < 0.5 else rng.randint(low, high),
        "catalogue": lambda i: catalogue[(start + i) % len(catalogue)],  # known ids, in order
        "shuffled": lambda i: shuffled[i % len(shuffled)],  # known ids, random order
    }
    return walks[kind]


def make_scrapers(
    catalogue: list[int], start: float, end: float, requests: int, seed: int
) -> list[Scraper]:
    """One fast scraper of each walk and the slow ones, each starting at a random time."""
    rng = random.Random(seed)
    scrapers = []
    for pace, kinds in (("fast", FAST), ("slow", SLOW)):
        for kind in kinds:
            walk = _walk(kind, catalogue, rng)
            ts = rng.uniform(start, end - 0.2 * (end - start))
            client = f"scraper-{pace}-{kind}"
            events = []
            for i in range(requests):
                events.append((ts, client, str(walk(i))))
                ts += rng.uniform(0.2, 1.0) if pace == "fast" else rng.lognormvariate(3.7, 1.0)
            scrapers.append(Scraper(client, pace, kind, events))
    return scrapers


def replay(guard: AbuseGuard, events: Iterable[Event]) -> Replay:
    """Feed events to the guard one by one, timing each call."""
    result = Replay({}, {}, Counter(), [])
    for ts, client, item in events:
        began = time.perf_counter()
        decision = guard.observe(client, item, ts)
        result.durations_s.append(time.perf_counter() - began)
        if decision.newly_flagged:
            result.flagged_at[client] = decision.events
            result.reasons[client] = guard.alert(decision).reason
        if decision.flagged:
            result.blocked[client] += 1
    return result


def summary(ns: list[int | None]) -> dict[str, object]:
    caught = [n for n in ns if n is not None]
    return {
        "flagged": len(caught),
        "total": len(ns),
        "median_n": statistics.median(caught) if caught else None,
        "max_n": max(caught) if caught else None,
    }


def figures(
    test: list[Event], scrapers: list[Scraper], run: Replay, min_events: int
) -> dict[str, object]:
    """False positives on the real sessions and N for each scraper."""
    sessions = Counter(client for _, client, _ in test)
    eligible = sum(n >= min_events for n in sessions.values())
    false_pos = sorted(c for c in run.flagged_at if c in sessions)
    ns = {s.client_id: run.flagged_at.get(s.client_id) for s in scrapers}
    return {
        "real_sessions": len(sessions),
        "real_sessions_with_min_events": eligible,
        "real_events": len(test),
        "false_positives": len(false_pos),
        "false_positive_rate": len(false_pos) / len(sessions),
        "false_positive_rate_of_sessions_with_min_events": len(false_pos) / eligible,
        "false_positive_rate_events": sum(run.blocked[c] for c in sessions) / len(test),
        "false_positive_alerts": {c: run.reasons[c] for c in false_pos},
        "scrapers_flagged": sum(n is not None for n in ns.values()),
        "scrapers": len(scrapers),
        "fast": summary([ns[s.client_id] for s in scrapers if s.pace == "fast"]),
        "slow": summary([ns[s.client_id] for s in scrapers if s.pace == "slow"]),
        "n_until_flagged": ns,
        "scraper_alerts": {s.client_id: run.reasons.get(s.client_id) for s in scrapers},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic scrapers")
    parser.add_argument("--requests", type=int, default=200, help="requests per scraper")
    parser.add_argument("--forget", type=float, default=0.1, help="catalogue share made new")
    defaults = AbuseGuard()
    parser.add_argument("--threshold", type=float, default=defaults.threshold)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--min-events", type=int, default=defaults.min_events)
    args = parser.parse_args()

    began = time.perf_counter()
    train, test = load(args.data / "train_full.tsv"), load(args.data / "test.tsv")
    guard = AbuseGuard(threshold=args.threshold, patience=args.patience, min_events=args.min_events)
    warm = replay(guard, train)
    fresh_copy = loads(dumps(guard))
    catalogue = sorted({int(item) for _, _, item in train})
    scrapers = make_scrapers(catalogue, test[0][0], test[-1][0], args.requests, args.seed)
    mixed = sorted(test + [e for s in scrapers for e in s.events], key=lambda e: e[0])
    run = replay(guard, mixed)

    rng = random.Random(args.seed)
    known = sorted(fresh_copy.seen)
    fresh_copy.seen.difference_update(rng.sample(known, int(args.forget * len(known))))
    ablation = figures(test, scrapers, replay(fresh_copy, mixed), args.min_events)

    train_sessions = Counter(client for _, client, _ in train)
    micros = sorted(1e6 * d for d in run.durations_s)
    report = {
        "guard": {
            "detector": "river.anomaly.HalfSpaceTrees",
            "threshold": guard.threshold,
            "patience": guard.patience,
            "min_events": guard.min_events,
            "window": guard.window,
        },
        "scraper_seed": args.seed,
        **figures(test, scrapers, run, args.min_events),
        "warm_up_on_train": {
            "sessions": len(train_sessions),
            "sessions_with_min_events": sum(n >= args.min_events for n in train_sessions.values()),
            "flagged": len(warm.flagged_at),
        },
        "new_content_ablation": {
            "forgotten_catalogue_share": args.forget,
            "false_positives": ablation["false_positives"],
            "false_positive_rate": ablation["false_positive_rate"],
            "scrapers_flagged": ablation["scrapers_flagged"],
            "fast": ablation["fast"],
            "slow": ablation["slow"],
        },
        "per_event_us": {
            "mean": statistics.fmean(micros),
            "p50": micros[len(micros) // 2],
            "p99": micros[int(0.99 * len(micros))],
        },
        "wall_s": time.perf_counter() - began,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
