"""`foresight services`: one process per service, honest status, one-line failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from foresight.settings import Settings
from foresight.stack import free_port

FORESIGHT = [sys.executable, "-m", "foresight"]


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FORESIGHT, *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _service_processes(state_dir: Path) -> dict[str, int]:
    """How many JVMs run from this state folder, per service."""
    counts = {"kafka": 0, "cassandra": 0}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) not in cmdline:
            continue
        if cmdline.rstrip().endswith("server.properties") and "kafka.Kafka" in cmdline:
            counts["kafka"] += 1
        elif "CassandraDaemon" in cmdline:
            counts["cassandra"] += 1
    return counts


def test_status_exits_zero_with_pids_when_up(base_settings: Settings) -> None:
    result = _run("services", "status")
    assert result.returncode == 0, result.stdout
    assert "healthy" in result.stdout and str(base_settings.kafka_port) in result.stdout


def test_up_twice_leaves_one_kafka_and_one_cassandra(base_settings: Settings) -> None:
    result = _run("services", "up")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout
    assert _service_processes(base_settings.state_dir) == {"kafka": 1, "cassandra": 1}


@pytest.fixture
def other_state(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with a state folder of its own (the jar cache is shared)."""
    env = {**os.environ, "FORESIGHT_STATE_DIR": str(tmp_path / "state")}
    yield env
    _run("services", "down", env=env)


def test_a_port_taken_by_another_program_is_one_line(
    base_settings: Settings, other_state: dict[str, str]
) -> None:
    # The running Kafka holds its port; a second state folder asking for it must refuse.
    result = _run("services", "up", env=other_state)
    assert result.returncode == 1
    assert f"port {base_settings.kafka_port} is taken by" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_is_non_zero_when_nothing_runs(other_state: dict[str, str]) -> None:
    result = _run("services", "status", env=other_state)
    assert result.returncode == 1
    assert "down" in result.stdout


def test_a_service_dying_during_start_shows_its_log(
    base_settings: Settings, other_state: dict[str, str]
) -> None:
    env = other_state | {
        "FORESIGHT_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "FORESIGHT_KAFKA_CONTROLLER_PORT": str(free_port()),
        # a heap no machine has: the JVM exits at once
        "FORESIGHT_KAFKA_HEAP_MB": "999999999",
    }
    result = _run("services", "up", env=env)
    assert result.returncode == 1
    assert "kafka exited during start" in result.stderr
    assert "heap" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_without_java_it_says_so(other_state: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mvn").symlink_to(shutil.which("mvn") or "/usr/bin/mvn")
    result = _run("services", "up", env=other_state | {"PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "`java` is not on PATH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
