"""SIGTERM (what `kill`, CI timeouts and systemd send) stops every child, as Ctrl+C does.

`foresight replay` starts its origin, worker and cache nodes in sessions of their own, so a
signal to the command's process reaches the command alone: it must stop them itself. Each test
starts a real command that starts children, waits until they run, sends the command SIGTERM
and checks that it ends and that none of its children is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from foresight.migrate import drop_keyspaces
from foresight.replay.measure import metric_sum, read_metrics
from foresight.settings import Settings
from foresight.stack import STOP_GRACE_S, http_text
from foresight.topics import delete_topics

from .conftest import replay_settings, settings_env

REPO = Path(__file__).resolve().parents[2]
TRAIN_SESSIONS, TEST_SESSIONS, CLICKS = 30, 4, 12
# Until the children run: topics, Faust's group join and recovery, Cassandra sessions and
# the ring on a cold, loaded two-core machine.
START_TIMEOUT_S = 300.0
# The command stops its children one after the other, each given STOP_GRACE_S before a
# SIGKILL; the margin is for its own clean-up (the run's topics and keyspace, the report).
STOPPED_TIMEOUT_S = 5 * STOP_GRACE_S + 60.0


def _write_tsv(path: Path, sessions: int, first: int, gap_s: float) -> int:
    """``sessions`` sessions of CLICKS clicks on a few items, ``gap_s`` apart; the clicks."""
    lines = ["SessionId\tItemId\tTime"]
    start = 1_396_000_000.0
    for s in range(first, first + sessions):
        for c in range(CLICKS):
            lines.append(f"{s}\t{100 + (s + c) % 7}\t{start + s + c * gap_s:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return sessions * CLICKS


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(
    command: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert command.poll() is None, log.read_text(errors="replace")[-3000:]
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not in {START_TIMEOUT_S} s:\n" + log.read_text(errors="replace")[-3000:])


@pytest.fixture
def started() -> Iterator[list[psutil.Process]]:
    """The children a test saw; any still running at its end (a failed test) are killed."""
    seen: list[psutil.Process] = []
    yield seen
    for child in seen:
        if child.is_running():
            child.kill()


def _stop_with_sigterm(
    command: subprocess.Popen[bytes], children: list[psutil.Process], log: Path
) -> None:
    """SIGTERM to the command alone; it ends in time and leaves no child running."""
    command.terminate()
    try:
        command.wait(timeout=STOPPED_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        command.kill()
        pytest.fail(f"still running {STOPPED_TIMEOUT_S:.0f} s after SIGTERM")
    _gone, alive = psutil.wait_procs(children, timeout=1.0)
    left = [" ".join(p.cmdline()[2:5]) for p in alive if p.is_running()]
    assert not left, (
        f"left running after SIGTERM: {left}\n" + log.read_text(errors="replace")[-3000:]
    )


def test_sigterm_stops_a_replay_and_all_its_children_and_the_report_is_written(
    settings: Settings, tmp_path: Path, started: list[psutil.Process]
) -> None:
    mine = replay_settings(settings)
    train = tmp_path / "train.tsv"
    trained = _write_tsv(train, TRAIN_SESSIONS, 1, 60.0)
    test = tmp_path / "test.tsv"
    _write_tsv(test, TEST_SESSIONS, 1000, 30.0)  # a pass of minutes: it is under way at SIGTERM
    log = tmp_path / "replay.log"
    with log.open("wb") as out:
        command = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "foresight",
                "replay",
                "--train",
                str(train),
                "--test",
                str(test),
                "--speed",
                "1",
                "--max-gap",
                "30",
                "--no-baseline",
                "--no-sweep",
                "--json",
                str(tmp_path / "result.json"),
                "--out",
                str(tmp_path / "run"),
            ],
            env=settings_env(mine),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        worker = f"http://127.0.0.1:{mine.worker_web_port}/metrics"

        def passing() -> bool:
            """The two cache nodes run and the worker has seen a request of the pass."""
            started[:] = _children(command.pid)
            nodes = [p for p in started if "cache-node" in p.cmdline()]
            if len(nodes) < 2:
                return False
            try:
                metrics = read_metrics(http_text(worker))
            except OSError:
                return False
            return metric_sum(metrics, "foresight_worker_events_total") > trained

        _wait_for(command, passing, "the replay's pass", log)
        names = sorted(p.cmdline()[3] for p in started)
        assert names == ["cache-node", "cache-node", "origin", "worker"], names
        _stop_with_sigterm(command, started, log)
    finally:
        if command.poll() is None:
            command.kill()
    # As after Ctrl+C: the run says it was interrupted, and writes what it measured.
    assert command.returncode == 1
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["interrupted"] is True
    assert (tmp_path / "run" / "report" / "index.html").is_file()


def test_sigterm_stops_the_e2e_bench_and_its_children(
    base_settings: Settings, tmp_path: Path, started: list[psutil.Process]
) -> None:
    log = tmp_path / "bench.log"
    with log.open("wb") as out:
        command = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "e2e.py"), "--warm", "200", "--agents", "2"],
            env=settings_env(base_settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    own: dict[str, str] = {}  # the bench's own keyspace and worker group, from a child
    try:

        def running() -> bool:
            """Its origin, cache node and worker answer /healthz (the bench's first wait)."""
            started[:] = _children(command.pid)
            return len(started) >= 3 and all(_healthy(p) for p in started)

        _wait_for(command, running, "the bench's children", log)
        own = started[0].environ()
        _stop_with_sigterm(command, started, log)
    finally:
        if command.poll() is None:
            command.kill()
        # The bench leaves its keyspace and topics (e2e-<tag>-*) at any end: not a test's.
        if "FORESIGHT_CASSANDRA_KEYSPACE" in own:
            drop_keyspaces(base_settings, own["FORESIGHT_CASSANDRA_KEYSPACE"])
        if "FORESIGHT_WORKER_GROUP" in own:
            delete_topics(base_settings, (f"{own['FORESIGHT_WORKER_GROUP']}-",))


def _healthy(process: psutil.Process) -> bool:
    """Whether a child of the bench answers on one of its listening ports."""
    try:
        ports = [c.laddr.port for c in process.net_connections() if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return False
    for port in ports:
        try:
            http_text(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
            return True
        except OSError:
            continue
    return False
