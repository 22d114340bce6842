"""Offline evaluation of next-click predictors on session logs, one process, no Kafka.

The protocol (test-then-train), the same for every predictor:

1. learn every training session in time order (sessions by their first timestamp, clicks
   within a session by time);
2. then each test session in time order: its first click is learned without scoring; each
   later click is scored against ``predict`` on the session's prefix, then learned.

A session is one client (its id is the client id), unless the file has a fourth column,
``ClientId``: then a client's sessions share its id, so a predictor can know a returning
client, and the scores are also given over the clicks of returning clients (one with an earlier
session, in training or test) and of new ones. Scores per model: HR@1/3/5/20, MRR@5,
the precision and prefetches per click of the top-5 items at or above the planner's 4g
threshold (no byte budget), the Brier score and expected calibration error (ten bins) of the
top-5 probabilities, the wall time, and the mean cost of a click in microseconds while
training (``learn_us``: learn only) and testing (``test_us``: predict top 20, then learn).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from streams.baselines import Markov1, Popularity, SequentialRules
from streams.planner import THRESHOLDS
from streams.predictor import Foresight, ForesightConfig, Predictor

Session = tuple[str, list[tuple[float, str]]]
Progress = Callable[[int], None]

CUTOFFS = (1, 3, 5, 20)
HIT_RATES = tuple(f"hr@{cutoff}" for cutoff in CUTOFFS)
PREFETCH_K = 5
BINS = 10
PROGRESS_EVERY = 1000

DEFAULT_MODELS: Mapping[str, Callable[[], Predictor]] = {
    "foresight": Foresight,
    "markov1": Markov1,
    "sr": SequentialRules,
    "pop": Popularity,
}

#: Foresight without its River re-ranker (ranked by the fixed blend), and without what it keeps
#: of a client across sessions, for the ablation.
ABLATIONS: Mapping[str, Callable[[], Predictor]] = {
    "foresight-no-river": lambda: Foresight(ForesightConfig(rerank=False)),
    # A client is its current session only: no history across sessions (issue 15's "shared
    # model only" row; the same as foresight where no client comes back).
    "foresight-shared": lambda: Foresight(ForesightConfig(personal=False)),
}


def read_sessions(path: str | Path) -> list[Session]:
    """Sessions of a ``SessionId\\tItemId\\tTime`` file, ordered by first click, clicks by time.

    Ties keep the file's order (both sorts are stable), so the result is deterministic.
    """
    try:
        return _read_sessions(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _read_sessions(path: str | Path) -> list[Session]:
    clicks: dict[str, list[tuple[float, str]]] = {}
    client_of: dict[str, str] = {}  # session id -> client id, when the file has ClientId
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        names = [h.strip() for h in header or []]
        if names[:3] != ["SessionId", "ItemId", "Time"]:
            raise ValueError(f"{path}: expected the header SessionId, ItemId, Time")
        with_client = names[3:4] == ["ClientId"]
        for row in reader:
            if not row:
                continue
            try:
                session_id, item, ts = row[0], row[1], float(row[2])
                if with_client:
                    client_of[session_id] = row[3]
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{reader.line_num}: bad row {row!r}") from None
            clicks.setdefault(session_id, []).append((ts, item))
    for session in clicks.values():
        session.sort(key=lambda click: click[0])
    ordered = sorted(clicks.items(), key=lambda s: s[1][0][0])
    return [(client_of.get(session_id, session_id), rows) for session_id, rows in ordered]


def count_clicks(sessions: list[Session]) -> int:
    return sum(len(clicks) for _, clicks in sessions)


@dataclass
class Tally:
    """Running sums of one model's scores."""

    threshold: float
    events: int = 0
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(CUTOFFS, 0))
    reciprocal_rank: float = 0.0
    above: int = 0
    above_hits: int = 0
    squared_error: float = 0.0
    scored_probabilities: int = 0
    bins: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0, 0.0] for _ in range(BINS)])

    def add(self, predictions: list[tuple[str, float]], actual: str) -> None:
        self.events += 1
        rank = next((r for r, (item, _) in enumerate(predictions, 1) if item == actual), None)
        if rank is not None:
            for cutoff in CUTOFFS:
                if rank <= cutoff:
                    self.hits[cutoff] += 1
            if rank <= PREFETCH_K:
                self.reciprocal_rank += 1.0 / rank
        for item, probability in predictions[:PREFETCH_K]:
            hit = 1.0 if item == actual else 0.0
            if probability >= self.threshold:
                self.above += 1
                self.above_hits += int(hit)
            self.squared_error += (probability - hit) ** 2
            self.scored_probabilities += 1
            bucket = self.bins[min(BINS - 1, int(probability * BINS))]
            bucket[0] += 1.0
            bucket[1] += probability
            bucket[2] += hit

    def result(self) -> dict[str, float]:
        n = max(1, self.events)
        m = max(1, self.scored_probabilities)
        ece = sum(abs(b[1] - b[2]) for b in self.bins) / m
        scores = {f"hr@{c}": self.hits[c] / n for c in CUTOFFS}
        scores["mrr@5"] = self.reciprocal_rank / n
        scores["precision"] = self.above_hits / self.above if self.above else 0.0
        scores["prefetches_per_click"] = self.above / n
        scores["brier"] = self.squared_error / m
        scores["ece"] = ece
        return scores


class _Ticker:
    """Reports clicks processed to ``progress`` in batches (a callback per click costs time)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.pending = 0

    def tick(self) -> None:
        self.pending += 1
        if self.pending >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.progress is not None and self.pending:
            self.progress(self.pending)
        self.pending = 0


def run(
    model: Predictor,
    train: list[Session],
    test: list[Session],
    threshold: float = THRESHOLDS["4g"],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the protocol for one model; ``progress`` advances by clicks processed.

    The scores also hold ``returning`` and ``new``: HR@k and MRR@5 over the clicks of clients
    that had an earlier session and of those that did not (with ``clicks`` for each)."""
    tally = Tally(threshold)
    by_client = {"returning": Tally(threshold), "new": Tally(threshold)}
    ticker = _Ticker(progress)
    started = time.perf_counter()
    known: set[str] = set()  # clients with a session already
    for client_id, clicks in train:
        for ts, item in clicks:
            model.learn(client_id, item, ts)
            ticker.tick()
        known.add(client_id)
    trained = time.perf_counter()
    for client_id, clicks in test:
        kind = by_client["returning" if client_id in known else "new"]
        for position, (ts, item) in enumerate(clicks):
            if position:  # score first (the click is not known yet), then learn it
                predictions = model.predict(client_id, max(CUTOFFS))
                tally.add(predictions, item)
                kind.add(predictions, item)
            model.learn(client_id, item, ts)
            ticker.tick()
        known.add(client_id)
    ticker.flush()
    finished = time.perf_counter()
    scores: dict[str, Any] = tally.result()
    for name, part in by_client.items():
        measured = part.result()
        scores[name] = {key: measured[key] for key in (*HIT_RATES, "mrr@5")}
        scores[name]["clicks"] = part.events
    scores["seconds"] = finished - started
    scores["learn_us"] = 1e6 * (trained - started) / max(1, count_clicks(train))
    scores["test_us"] = 1e6 * (finished - trained) / max(1, count_clicks(test))
    return scores


def work(
    train_path: str | Path,
    test_path: str | Path,
    models: Mapping[str, Callable[[], Predictor]] | None = None,
) -> int:
    """The total that :func:`evaluate` will advance its progress callback by (clicks x models)."""
    n_models = len(DEFAULT_MODELS if models is None else models)
    clicks = count_clicks(read_sessions(train_path)) + count_clicks(read_sessions(test_path))
    return n_models * clicks


def evaluate(
    train_path: str | Path,
    test_path: str | Path,
    models: Mapping[str, Callable[[], Predictor]] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate fresh instances of ``models`` (name -> factory) under the protocol.

    Returns ``{"events": N, "threshold": t, "models": {name: scores}}`` where N is the number
    of scored clicks and t the probability threshold of the precision. ``progress(n)`` is
    called as clicks are processed; :func:`work` gives the total.
    """
    return evaluate_sessions(read_sessions(train_path), read_sessions(test_path), models, progress)


def evaluate_sessions(
    train: list[Session],
    test: list[Session],
    models: Mapping[str, Callable[[], Predictor]] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` over sessions already read (from an access log, say), each list ordered
    by first click as :func:`read_sessions` orders them; the progress total is models x clicks.
    """
    chosen = DEFAULT_MODELS if models is None else models
    events = sum(max(0, len(clicks) - 1) for _, clicks in test)
    results = {
        name: run(factory(), train, test, progress=progress) for name, factory in chosen.items()
    }
    return {"events": events, "threshold": THRESHOLDS["4g"], "models": results}


def render_table(result: Mapping[str, Any]) -> Table:
    """The result of :func:`evaluate` as a rich Table, one row per model; with returning
    clients in the test (a file with ClientId), their HR@5 and MRR@5 and the new clients'."""
    columns = ["hr@1", "hr@3", "hr@5", "hr@20", "mrr@5", "precision", "prefetches_per_click"]
    columns += ["brier", "ece", "seconds", "test_us"]
    models: Mapping[str, Mapping[str, Any]] = result["models"]
    returning = any(scores.get("returning", {}).get("clicks") for scores in models.values())
    parts = [("returning", "hr@5"), ("returning", "mrr@5"), ("new", "hr@5")] if returning else []
    table = Table(title=f"Next-click prediction, {result['events']} scored clicks")
    table.add_column("model")
    for column in columns:
        label = {"prefetches_per_click": "pf/click", "test_us": "us/click"}.get(column, column)
        table.add_column(label, justify="right")
    for part, column in parts:
        table.add_column(f"{column} {'ret' if part == 'returning' else part}", justify="right")
    for name, scores in models.items():
        cells = [f"{scores[c]:.3f}" if c in scores else "-" for c in columns]
        cells += [f"{scores[part][column]:.3f}" for part, column in parts]
        table.add_row(name, *cells)
    return table
