"""Foresight processes (origin, cache nodes, worker) started for a test and stopped after it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from foresight.settings import Settings
from foresight.stack import free_port

# Start-up of a process: Faust's group join and recovery, Cassandra sessions, the ring
# catch-up; 90 s covers a cold, loaded two-core machine.
START_TIMEOUT_S = 90.0


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers 200 (and not ``"ready": false``); fail with the log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read() or b"{}")
                if response.status == 200 and body.get("ready", True):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"{url} did not answer in {START_TIMEOUT_S} s:\n" + log.read_text(errors="replace")[-3000:]
    )


def delivery_settings(settings: Settings, state_dir: Path, secret: str) -> Settings:
    """Settings for an origin, cache nodes and a worker of one test: free ports, its own
    worker group and state folder, an instant origin, and the agents' token secret."""
    origin_port = free_port()
    return settings.model_copy(
        update={
            "worker_group": f"w-{settings.cassandra_keyspace}",
            "worker_web_port": free_port(),
            "origin_port": origin_port,
            "origin_latency_ms": 0.0,
            "origin_url_template": f"http://127.0.0.1:{origin_port}/content/{{content_id}}",
            "cache_node_base_port": free_port(span=4),  # node n listens on base + n
            "state_dir": state_dir,
            "agent_token_secrets": [secret],
            "snapshot_interval_s": 3600.0,
        }
    )


@contextmanager
def foresight_processes(
    env: Mapping[str, str],
    commands: Mapping[str, Sequence[str]],
    health: Mapping[str, str],
    logs: Path,
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start `foresight <command>` per name, in order, each once its health URL answers;
    terminate them all on exit (killing any that ignore SIGTERM for 30 s)."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args in commands.items():
            log = logs / f"{name}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "foresight", *args],
                env=dict(env),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            processes[name] = process
            wait_http(health[name], process, log)
        yield processes
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
