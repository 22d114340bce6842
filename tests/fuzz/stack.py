"""The processes the Kafka and WebSocket fuzz tests run against, and what they ask of them.

Each test starts the processes it needs (an origin, cache node node-0 on ring slot 0, a
worker) on topics and a keyspace of its own, so that what one test's payloads break cannot
change another test's figure; every test checks afterwards that they are still alive and
answer /healthz. They log one JSON object per line, so a test can count what they logged.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from foresight.kafka import producer_config
from foresight.migrate import migrate
from foresight.settings import Settings
from foresight.stack import free_port
from tests.integration.conftest import settings_env
from tests.integration.processes import delivery_settings, foresight_processes

SECRET = "fuzz-secret-0123456789abcdef-0123456789abcdef"
NODE_ID = "node-0"
# An HTTP probe of a process on loopback: long enough for a busy two-core machine.
PROBE_TIMEOUT_S = 10.0
# Once a process has logged an exception, this much quiet means it is not coming back soon.
BROKEN_STALL_S = 3.0


@dataclass
class Stack:
    settings: Settings
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path
    node_url: str
    worker_url: str

    def dead(self) -> dict[str, int]:
        """Processes that exited, with their exit status."""
        return {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}

    def health(self) -> dict[str, Any]:
        """Each running service's /healthz answer; raises if one does not answer 200."""
        urls = {"node-0": f"{self.node_url}/healthz", "worker": f"{self.worker_url}/healthz"}
        return {name: get_json(url) for name, url in urls.items() if name in self.processes}

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        """A process's log as JSON lines (the stack logs with FORESIGHT_LOG_FORMAT=json)."""
        lines = []
        for raw in (self.logs / f"{name}.log").read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines

    def count_logged(self, name: str, what: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for line in self.log_lines(name) if what(line))

    def crashes(self) -> dict[str, list[str]]:
        """Log lines carrying an exception, per process: each is a crash somewhere inside."""
        found: dict[str, list[str]] = {}
        for name in self.processes:
            for line in self.log_lines(name):
                if "traceback" in line:
                    found.setdefault(name, []).append(f"{line.get('msg')} ({line.get('exc_type')})")
        return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        assert response.status == 200, url
        return json.loads(response.read())


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of one Prometheus metric whose labels include ``labels``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=PROBE_TIMEOUT_S) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def produce_all(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]], **kwargs: Any
) -> None:
    """Publish raw records as a hostile producer would (no validation), and wait for the acks."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"{remaining} unsent, errors: {errors[:3]}"


def wait_for_count(
    count: Callable[[], float],
    target: float,
    stall_s: float,
    deadline_s: float,
    broken: Callable[[], bool] = lambda: False,
) -> float:
    """Poll ``count()`` until it reaches ``target`` and return the last count. Give up when it
    stops growing for ``stall_s`` (a consumer that died quietly), for BROKEN_STALL_S once
    ``broken()`` (a process logged an exception: the test fails anyway), or after
    ``deadline_s`` (a consumer that crawls)."""
    started = last_change = time.monotonic()
    last = count()
    while last < target:
        time.sleep(0.5)
        now, at = count(), time.monotonic()
        if now != last:
            last, last_change = now, at
            continue
        quiet = at - last_change
        if quiet >= stall_s or at - started >= deadline_s or (quiet >= BROKEN_STALL_S and broken()):
            break
    return last


@contextmanager
def running_stack(
    settings: Settings, logs: Path, services: Sequence[str] = ("origin", "node-0", "worker")
) -> Iterator[Stack]:
    """``services`` (of origin, node-0, worker) on ``settings``' own topics and keyspace."""
    mine = delivery_settings(settings.model_copy(update={"log_format": "json"}), logs, SECRET)
    migrate(mine)
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    worker_url = f"http://127.0.0.1:{mine.worker_web_port}"
    commands = {
        "origin": ["origin"],
        "node-0": ["cache-node", "--node-id", "0", "--port", str(node_port)],
        "worker": ["worker", "-l", "info"],
    }
    health = {
        "origin": f"http://127.0.0.1:{mine.origin_port}/healthz",
        "node-0": f"{node_url}/healthz",
        "worker": f"{worker_url}/healthz",
    }
    wanted = {name: args for name, args in commands.items() if name in services}
    with foresight_processes(settings_env(mine), wanted, health, logs) as processes:
        yield Stack(mine, processes, logs, node_url, worker_url)
