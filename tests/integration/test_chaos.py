"""Faults during a replay, on real Kafka and Cassandra (issue 6): after each, no request is
lost, none fails, nothing is pushed twice and Kafka holds each interaction exactly once."""

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
    settings: Settings, yoochoose_dir: Path, tmp_path: Path, faults: tuple[str, ...]
) -> dict[str, Any]:
    mine = replay_settings(settings)
    options = ReplayOptions(
        train=small_train(yoochoose_dir / "train_valid.tsv", tmp_path / "train.tsv"),
        test=yoochoose_dir / "test.tsv",
        speed=20.0,
        clients=40,
        max_gap_s=1.0,
        sessions=SESSIONS,
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
    assert summary["lost_events"] == 0, summary
    assert summary["published_events"] == summary["requests"], "an interaction twice or never"
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
