"""bench/predict.py on the real services: its figures side by side, and nothing left behind.

The benchmark makes topics of its own (the worker's, its changelogs, the bare loops'); left
behind, every run's partitions would pile up in the shared Kafka.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from foresight.settings import Settings
from foresight.topics import admin_client

from .conftest import SERVICE_TIMEOUT_S, settings_env

REPO = Path(__file__).resolve().parents[2]
# A worker's start-up (Faust's group join) on a cold, loaded two-core machine, and a few
# hundred events through each of the four ways: a few minutes at most.
BENCH_TIMEOUT_S = 600.0


def _topics(settings: Settings, prefix: str) -> set[str]:
    names = admin_client(settings).list_topics(timeout=SERVICE_TIMEOUT_S).topics
    return {n for n in names if n.startswith(prefix)}


def test_the_predict_bench_reports_four_ways_and_drops_its_topics(
    base_settings: Settings,
) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "predict.py"), "--events", "300"],
        env=settings_env(base_settings),
        capture_output=True,
        cwd=REPO,
        timeout=BENCH_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    assert set(report["events_per_s"]) == {
        "predictor_alone",
        "faust_worker",
        "plain_consume_produce",
        "batch_consume_produce",
    }
    assert set(report["faust_worker_ratio"]) == {"to_plain_loop", "to_batch_loop"}
    left = _topics(base_settings, report["topic_prefix"] + "-")
    assert not left, f"left behind: topics {sorted(left)}"
