"""Next-click accuracy on the yoochoose sample, and the predictor's cost per event.

Runs the evaluation protocol of streams/evaluation.py for Foresight, Foresight without its River
re-ranker, Markov-1, SR and popularity on the tuning split (train_tr -> train_valid) and the test
split (train_full -> test). Then, with Foresight trained on the split's training file, replays
the test file the way the stream worker calls the predictor (state in, learn, predict top 5,
state out as bytes) and times each event. Prints one JSON object; the tables go to stderr.
Deterministic apart from the timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from streams.evaluation import (
    ABLATIONS,
    DEFAULT_MODELS,
    evaluate,
    read_sessions,
    render_table,
    work,
)
from streams.predictor import Foresight, dumps_client_state, loads_client_state

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"
SPLITS = {"valid": ("train_tr.tsv", "train_valid.tsv"), "test": ("train_full.tsv", "test.tsv")}


def worker_cost(train: Path, test: Path) -> dict[str, float]:
    """Microseconds per event of the worker's call sequence, after training on ``train``."""
    model = Foresight()
    for session_id, clicks in read_sessions(train):
        for ts, item in clicks:
            model.learn(session_id, item, ts)
    stored: dict[str, bytes] = {}
    costs: list[float] = []
    sizes: list[int] = []
    for session_id, clicks in read_sessions(test):
        for ts, item in clicks:
            started = time.perf_counter()
            if session_id in stored:
                model.set_client_state(session_id, loads_client_state(stored[session_id]))
            model.learn(session_id, item, ts)
            model.predict(session_id, 5)
            state = model.client_state(session_id)
            assert state is not None
            stored[session_id] = dumps_client_state(state)
            model.forget(session_id)
            costs.append(time.perf_counter() - started)
            sizes.append(len(stored[session_id]))
    costs.sort()
    return {
        "events": len(costs),
        "mean_us": 1e6 * statistics.fmean(costs),
        "p50_us": 1e6 * costs[len(costs) // 2],
        "p99_us": 1e6 * costs[int(len(costs) * 0.99)],
        "client_state_bytes_mean": statistics.fmean(sizes),
        "client_state_bytes_max": max(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the TSV files")
    parser.add_argument("--split", choices=[*SPLITS, "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    console = Console(stderr=True, width=160)
    models = {**DEFAULT_MODELS, **ABLATIONS}
    report: dict[str, Any] = {}
    for split in SPLITS if args.split == "both" else [args.split]:
        train, test = (args.data / name for name in SPLITS[split])
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{split}: {train.name} -> {test.name}", total=None)
            progress.update(task, total=work(train, test, models))
            started = time.perf_counter()
            result = evaluate(train, test, models, partial(progress.advance, task))
        result["seconds"] = time.perf_counter() - started
        result["worker"] = worker_cost(train, test)
        console.print(render_table(result))
        report[split] = result
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
