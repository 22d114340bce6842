"""`foresight replay` end to end on real Kafka and Cassandra, with its own origin, worker and
two cache nodes as child processes: every request is accounted for, nothing is pushed twice,
the printed summary is the JSON's, and the report is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from foresight.settings import Settings

from .conftest import replay_settings, settings_env, small_train

SESSIONS = 40


def test_a_replay_accounts_for_every_request_and_writes_its_report(
    settings: Settings, yoochoose_dir: Path, tmp_path: Path
) -> None:
    mine = replay_settings(settings)
    train = small_train(yoochoose_dir / "train_valid.tsv", tmp_path / "train.tsv")
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "foresight",
            "replay",
            "--train",
            str(train),
            "--test",
            str(yoochoose_dir / "test.tsv"),
            "--sessions",
            str(SESSIONS),
            "--clients",
            "20",
            "--speed",
            "50",
            "--no-sweep",
            "--json",
            str(tmp_path / "result.json"),
            "--out",
            str(out),
        ],
        env=settings_env(mine) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "result.json").read_text())

    expected = _clicks_of_first_sessions(yoochoose_dir / "test.tsv", SESSIONS)
    # Each session's first click is its landing; every later click is a request.
    assert summary["events"] == expected and summary["errors"] == 0
    assert summary["landings"] == SESSIONS
    assert summary["requests"] == expected - SESSIONS
    assert summary["all_clicks"]["requests"] == expected
    assert summary["lost_events"] == 0 and summary["processed_events"] == expected
    assert summary["duplicate_pushes"] == 0
    # The services were warmed up before the passes, on nodes of their own.
    assert summary["warm_up_s"] > 0
    # Repeated items of a session are answered locally even before any prediction; a
    # landing never is, so counting landings as requests lowers the hit ratio.
    assert 0 < summary["all_clicks"]["hit_ratio"] < summary["hit_ratio"] <= 1
    assert summary["latency_ms"]["with"]["mean"] > 0
    assert summary["latency_ms"]["without"]["mean"] > 0
    assert 0 <= summary["wasted_bytes"] <= summary["prefetched_bytes"]
    # The printed summary is the JSON's numbers.
    assert f"{summary['hit_ratio']:.1%}" in result.stdout
    assert f"{summary['all_clicks']['hit_ratio']:.1%}" in result.stdout
    assert f"{summary['latency_reduction']:.1%}" in result.stdout
    assert f"{summary['lost_events']:,}" in result.stdout
    report = out / "report"
    page = (report / "index.html").read_text()
    for image in ("hit_ratio.png", "latency.png", "tradeoff.png", "node_load.png"):
        assert (report / image).stat().st_size > 1000 and image in page
    rows = (report / "requests.csv").read_text().splitlines()
    assert len(rows) == expected + 1


def _clicks_of_first_sessions(path: Path, count: int) -> int:
    from foresight.replay.run import sessions_of

    return sum(len(s) for s in sessions_of(path, count))
