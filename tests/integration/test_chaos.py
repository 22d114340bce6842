"""Faults during a replay, on real Kafka and Cassandra (issue 6): after each, no request fails,
nothing is pushed twice, every request's interaction reaches Kafka and is processed once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from foresight.replay import ReplayOptions, replay
from foresight.settings import Settings

from .conftest import replay_settings, small_train

pytestmark = pytest.mark.integration

SESSIONS = 400


def _quiet(
    phase: str, done: int, total: int | None, live: Mapping[str, float] | None = None
) -> None:
    pass


def _chaos_run(
    settings: Settings,
    yoochoose_dir: Path,
    tmp_path: Path,
    faults: tuple[str, ...],
    sessions: int = SESSIONS,
) -> dict[str, Any]:
    mine = replay_settings(settings)
    options = ReplayOptions(
        train=small_train(yoochoose_dir / "train_valid.tsv", tmp_path / "train.tsv"),
        test=yoochoose_dir / "test.tsv",
        speed=20.0,
        clients=40,
        max_gap_s=1.0,
        sessions=sessions,
        baseline=False,
        sweep=(),
        run_dir=tmp_path / "run",
        chaos=faults,
        chaos_first_s=5.0,
        chaos_gap_s=5.0,
    )
    summary = replay(mine, options, _quiet).summary
    print(f"chaos figures {','.join(faults)}: " + json.dumps(summary, default=str))
    return summary


def _check(summary: dict[str, Any], faults: tuple[str, ...]) -> None:
    assert [f["fault"] for f in summary["chaos"]] == list(faults)
    # Every request's interaction reached Kafka: the agents keep each view and request
    # until a node acks it, and send it again to the next node when a node dies first.
    assert summary["published_events"] == summary["events"], summary["unpublished_samples"]
    # Whatever reached Kafka was processed, across the worker's kill and restart, and a copy
    # sent again counts once (the worker drops it by its event id).
    assert summary["processed_events"] == summary["published_events"], summary
    assert summary["lost_events"] == 0
    assert summary["duplicate_pushes"] == 0
    assert summary["errors"] == 0, "a request failed"


def test_a_killed_worker_and_a_killed_node_lose_nothing(
    settings: Settings, yoochoose_dir: Path, tmp_path: Path
) -> None:
    faults = ("worker", "node")
    summary = _chaos_run(settings, yoochoose_dir, tmp_path, faults)
    _check(summary, faults)
    worker, _node = summary["chaos"]
    assert worker["recovered_after_s"] is not None


def test_kafka_and_cassandra_outages_lose_nothing(
    settings: Settings, yoochoose_dir: Path, tmp_path: Path
) -> None:
    """Kafka stopped for 10 s, then Cassandra (restarted with fsync on first) for 10 s, while
    the agents play: the nodes' producers hold what they took and deliver it once Kafka is
    back, idempotently; the nodes serve from the origin while Cassandra is away."""
    faults = ("kafka", "cassandra")
    # Long enough a pass for both outages and their restarts to fall inside it.
    summary = _chaos_run(settings, yoochoose_dir, tmp_path, faults, sessions=1200)
    _check(summary, faults)
    kafka, cassandra = summary["chaos"]
    assert kafka["recovered_after_s"] is not None and cassandra["recovered_after_s"] is not None
    assert cassandra["at_s"] + cassandra["recovered_after_s"] < summary["duration_s"], (
        "the pass ended before Cassandra was back: its figures say nothing about the outage"
    )
