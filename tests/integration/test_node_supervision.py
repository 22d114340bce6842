"""A cache node whose prefetch-commands consumer dies says so, then stops: no silent half-node.

A real `foresight cache-node` (on the real Kafka and Cassandra, this test's topics and
keyspace) has its command consumer killed the way a broken Kafka client would kill it: the
consumer's poll raises. The node must then answer /healthz with 503 naming the dead task (so
a load balancer stops sending agents to a node that cannot carry out their prefetches), log it
at ERROR with its traceback, and exit non-zero after a short grace (so a process manager
restarts it). A node stopped with SIGTERM, whose tasks end because it stops, reports no failure
and exits 0.

The fault is injected with a ``sitecustomize`` module on the node's PYTHONPATH, which Python
imports at start-up: it wraps confluent_kafka.Consumer so that the command consumer's poll
raises once the test creates a flag file. Nothing in the node knows about it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from consumers.server import FAILED_EXIT_STATUS
from foresight.migrate import migrate
from foresight.settings import Settings

from .conftest import settings_env
from .processes import delivery_settings, foresight_processes

SECRET = "supervision-secret-0123456789abcdef-0123456789"
# The command consumer polls every 0.1 s; on a loaded two-core machine the fault's line
# reaches the log well within this.
FAULT_SEEN_S = 30.0
# A node that notices a dead task answers 503 at once; past this it never will.
UNHEALTHY_S = 20.0
# The node's grace after a failure, then its shutdown (leave the ring, flush its producer for
# up to 10 s, wait up to 3 s for its own leave record) on a loaded machine.
EXIT_S = 90.0

FAULT = '''\
"""Test fault: the cache node's prefetch-commands consumer raises once {flag} exists."""
import os
import sys

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException


class FaultyConsumer(confluent_kafka.Consumer):
    def __init__(self, config, *args, **kwargs):
        self._commands = str(config.get("group.id", "")).endswith("-node-slot-0")
        super().__init__(config, *args, **kwargs)

    def poll(self, *args, **kwargs):
        if self._commands and os.path.exists({flag!r}):
            print("FAULT INJECTED: the command consumer's poll raises", file=sys.stderr, flush=True)
            raise KafkaException(KafkaError(KafkaError._FATAL, "injected by the test"))
        return super().poll(*args, **kwargs)


confluent_kafka.Consumer = FaultyConsumer
'''


def health(url: str) -> tuple[int, dict[str, Any]]:
    """/healthz's status and JSON body (whatever the status)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_node_whose_command_consumer_dies_answers_503_then_exits(
    settings: Settings, tmp_path: Path
) -> None:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    migrate(mine)
    flag = tmp_path / "kill-the-command-consumer"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAULT.format(flag=str(flag)))
    env = settings_env(mine)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hooks), env.get("PYTHONPATH")) if p)
    url = f"http://127.0.0.1:{mine.cache_node_base_port}"
    log = tmp_path / "node-0.log"
    commands = {"node-0": ["cache-node", "--node-id", "0"]}
    with foresight_processes(env, commands, {"node-0": f"{url}/healthz"}, tmp_path) as running:
        node = running["node-0"]
        assert health(url)[0] == 200
        flag.touch()
        deadline = time.monotonic() + FAULT_SEEN_S
        while "FAULT INJECTED" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the fault never fired:\n" + log.read_text()[-3000:]
            time.sleep(0.2)

        deadline = time.monotonic() + UNHEALTHY_S
        status, body = health(url)
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = health(url)
        assert status == 503, (
            f"/healthz answered {status} {body} {UNHEALTHY_S:g} s after the command consumer died"
        )
        assert "prefetch-commands consumer" in body["failed"], body
        assert "injected by the test" in body["failed"]["prefetch-commands consumer"], body

        returncode = node.wait(timeout=EXIT_S)
        text = log.read_text(errors="replace")
        assert returncode == FAILED_EXIT_STATUS, f"exit status {returncode}:\n{text[-3000:]}"
        failure = [
            line
            for line in text.splitlines()
            if "ERROR" in line and "prefetch-commands consumer" in line
        ]
        assert failure, text[-3000:]
        assert "injected by the test" in failure[0] and "Traceback" in failure[0], failure[0]


def test_a_node_stopped_with_sigterm_reports_no_failure_and_exits_0(
    settings: Settings, tmp_path: Path
) -> None:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    migrate(mine)
    url = f"http://127.0.0.1:{mine.cache_node_base_port}"
    commands = {"node-0": ["cache-node", "--node-id", "0"]}
    env = settings_env(mine)
    with foresight_processes(env, commands, {"node-0": f"{url}/healthz"}, tmp_path) as running:
        node = running["node-0"]
        status, body = health(url)
        assert (status, body["failed"]) == (200, {}), body
        node.terminate()
        returncode = node.wait(timeout=EXIT_S)
    text = (tmp_path / "node-0.log").read_text(errors="replace")
    assert returncode == 0, f"exit status {returncode}:\n{text[-3000:]}"
    assert " failed (" not in text and "ERROR" not in text, text[-3000:]
