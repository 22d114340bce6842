"""bench/e2e.py on the real services: it prints its JSON object, one run per offered rate,
draws the curve where it is told, and leaves nothing behind.

Each run of the benchmark makes topics (``e2e-<tag>-*``, its worker's changelogs too) and a
keyspace (``e2e_<tag>``) of its own; left behind, every run's partitions and tables would pile
up in the shared Kafka and Cassandra, which other runs and tests then pay for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from foresight.cassandra import connect
from foresight.settings import Settings
from foresight.topics import admin_client

from .conftest import SERVICE_TIMEOUT_S, settings_env

REPO = Path(__file__).resolve().parents[2]
# Start-up (Faust's group join, Cassandra sessions) on a cold, loaded two-core machine, the
# warm-up, one short window per rate and the store's write bench: minutes, not seconds.
BENCH_TIMEOUT_S = 600.0


def _topics(settings: Settings, prefix: str) -> set[str]:
    names = admin_client(settings).list_topics(timeout=SERVICE_TIMEOUT_S).topics
    return {n for n in names if n.startswith(prefix)}


def _keyspaces(settings: Settings, name: str) -> set[str]:
    cluster, session = connect(settings)
    try:
        rows = session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
        return {r.keyspace_name for r in rows if r.keyspace_name == name}
    finally:
        cluster.shutdown()


def test_the_e2e_bench_reports_the_curve_and_drops_its_topics_and_keyspace(
    base_settings: Settings, tmp_path: Path
) -> None:
    png = tmp_path / "curve.png"
    small = ["--seconds", "1", "--prime", "1", "--warm", "200", "--writes", "200"]
    small += ["--agents", "2", "--agent-clicks-per-s", "25"]
    bench = [sys.executable, str(REPO / "bench" / "e2e.py"), "--rates", "50", "100"]
    result = subprocess.run(
        [*bench, *small, "--png", str(png)],
        env=settings_env(base_settings),
        capture_output=True,
        cwd=REPO,
        timeout=BENCH_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    assert [run["rate"] for run in report["runs"]] == [50, 100]
    for run in report["runs"]:
        assert {"worker_lag_s", "node_commands_per_s", "cpu_s", "load_average"} <= set(run)
    assert png.read_bytes().startswith(b"\x89PNG")
    left_topics = _topics(base_settings, report["topic_prefix"] + "-")
    left_keyspaces = _keyspaces(base_settings, report["keyspace"])
    assert not left_topics and not left_keyspaces, (
        f"left behind: topics {sorted(left_topics)}, keyspaces {sorted(left_keyspaces)}"
    )
