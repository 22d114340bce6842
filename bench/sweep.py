"""Choose the prefetch defaults with the offline simulation: threshold x prefetch k x push K.

Warms the worker's engine once on train_full.tsv, then replays test.tsv once per point of the
grid (streams/simulate.py: every point an independent, deterministic run of the worker's step,
with the cache node's push rule at the push step). A point is the 4g base threshold (the
yoochoose clicks carry no connection class, so the default class's), how many predictions the
planner considers (``prefetch_top_k``) and the push rule's bytes per unit of odds
(``push_bytes_per_odds``; ``none``: no rule). The chosen point maximises the hit ratio among
those whose wasted bytes per requested byte (over the requests' bytes, as a replay counts
them) stay within ``--max-waste``. A real replay through Kafka, the worker, nodes and agents
wastes less than this simulation (an agent that has left gets no pushes; the simulation's
agents never leave): 0.845 live against 1.050 offline at the shipped point on 2026-11-27, so
the default 1.1 is about 0.88 live, a margin under the bar there (1.0).
Prints one JSON object (every point, the shipped one and the chosen one); the table goes to
stderr. About three minutes on two cores.

    .venv/bin/python bench/sweep.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from foresight.settings import Settings
from streams.evaluation import read_sessions
from streams.simulate import Point, SimulationResult, shipped_point, sweep

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"
# Around the chosen point: a wider sweep (thresholds 0.01-0.05, k 5-20, K 200k-800k) found the
# frontier here, and lower thresholds and larger k at the same waste no better.
THRESHOLDS = (0.01, 0.02, 0.03)
PREFETCH_KS = (5, 10, 20)
BYTES_PER_ODDS: tuple[float | None, ...] = (600_000.0, 700_000.0)
MAX_WASTE = 1.1


def grid(
    thresholds: Sequence[float],
    prefetch_ks: Sequence[int],
    bytes_per_odds: Sequence[float | None],
) -> list[Point]:
    """Every combination, thresholds outermost."""
    return [Point(*p) for p in itertools.product(thresholds, prefetch_ks, bytes_per_odds)]


def choose(results: Sequence[SimulationResult], max_waste: float) -> SimulationResult | None:
    """The highest hit ratio within ``max_waste`` (the lower waste on a tie); None if none is."""
    within = [r for r in results if r.wasted_per_requested_byte <= max_waste]
    return max(within, key=lambda r: (r.hit_ratio, -r.wasted_per_requested_byte), default=None)


def _clicks(path: Path) -> int:
    return sum(len(clicks) for _, clicks in read_sessions(path))


def _k(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def _row(result: SimulationResult) -> dict[str, Any]:
    keys = ("threshold", "prefetch_k", "bytes_per_odds", "hit_ratio", "hit_ratio_all_clicks")
    return {key: getattr(result, key) for key in keys} | {
        "waste": result.wasted_per_requested_byte,
        "pushes": result.pushes,
        "not_worth_bytes": result.not_worth_bytes,
        "hr_at_5": result.hr_at_5,
        "seconds": round(result.seconds, 2),
    }


def _table(results: Sequence[SimulationResult], chosen: SimulationResult | None) -> Table:
    table = Table("threshold", "k", "K", "hit ratio", "all clicks", "waste", "pushes", "HR@5")
    for r in results:
        table.add_row(
            f"{r.threshold:g}",
            str(r.prefetch_k),
            "none" if r.bytes_per_odds is None else f"{r.bytes_per_odds:,.0f}",
            f"{r.hit_ratio:.3f}",
            f"{r.hit_ratio_all_clicks:.3f}",
            f"{r.wasted_per_requested_byte:.3f}",
            str(r.pushes),
            f"{r.hr_at_5:.3f}",
            style="bold green" if r is chosen else None,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the TSV files")
    parser.add_argument("--train", default="train_full.tsv")
    parser.add_argument("--test", default="test.tsv")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--prefetch-ks", type=int, nargs="+", default=PREFETCH_KS)
    parser.add_argument(
        "--bytes-per-odds", type=_k, nargs="+", default=BYTES_PER_ODDS, help="K values or none"
    )
    parser.add_argument("--max-waste", type=float, default=MAX_WASTE)
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    console = Console(stderr=True, width=160)
    train, test = args.data / args.train, args.data / args.test
    settings = Settings()
    shipped_at = shipped_point(settings)
    points = grid(args.thresholds, args.prefetch_ks, args.bytes_per_odds)
    on_grid = len(points)
    if shipped_at not in points:
        points.append(shipped_at)  # for reference
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{train.name} -> {test.name}: {len(points)} points")
        progress.update(task, total=_clicks(train) + len(points) * _clicks(test))
        results = sweep(
            train, test, points, settings=settings, progress=lambda n: progress.advance(task, n)
        )
    shipped = results[points.index(shipped_at)]
    swept = results[:on_grid]
    chosen = choose(swept, args.max_waste)
    console.print(_table(swept, chosen))
    report = {
        "train": str(train),
        "test": str(test),
        "max_waste": args.max_waste,
        "shipped": _row(shipped),
        "chosen": None if chosen is None else _row(chosen),
        "shipped_is_chosen": shipped is chosen,
        "points": [_row(r) for r in swept],
        "requests": shipped.requests,
        "landings": shipped.landings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
