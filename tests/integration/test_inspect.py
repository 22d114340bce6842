"""`foresight inspect client` against a real origin, worker and cache node on Kafka and Cassandra.

A client clicks, its agent receives a push, and the command, run as a user would, reports the
client's last click, its top k with probabilities, the threshold, what the agent holds and the
node that owns it. An unknown client and a worker that is not there end in one line, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agents.sdk import Agent
from foresight import tokens
from foresight.migrate import migrate
from foresight.settings import Settings
from foresight.stack import free_port
from producers.publisher import InteractionPublisher
from schemas import Interaction

from .conftest import settings_env
from .processes import delivery_settings, foresight_processes

SECRET = "integration-secret-0123456789abcdef-0123456789"
# From a published interaction to a push or a processed event: the worker and the node each
# poll Kafka; seconds on a loaded two-core machine.
PUSH_TIMEOUT_S = 30.0
# One `foresight inspect` run: interpreter start, a Cassandra session, the ring topic read.
INSPECT_TIMEOUT_S = 60.0

CLIENT = "inspect-1"
# Another client teaches the worker that p-a leads to p-b and p-c; ours then clicks p-a, p-b.
TEACHER = [("teacher", "p-a"), ("teacher", "p-b"), ("teacher", "p-c")]
CLICKS = [(CLIENT, "p-a"), (CLIENT, "p-b")]


def inspect(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foresight", "inspect", "client", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=INSPECT_TIMEOUT_S,
    )


def worker_events(port: int, client_id: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/clients/{client_id}", timeout=5) as r:
            return int(json.loads(r.read())["events"])
    except urllib.error.HTTPError:
        return 0


async def until(condition: Callable[[], bool], wait_s: float) -> None:
    """Poll state that no event signals (the agent's cache, the worker's table)."""
    deadline = time.monotonic() + wait_s
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def test_inspect_reports_what_the_worker_the_store_and_the_ring_know(
    settings: Settings, tmp_path: Path
) -> None:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    migrate(mine)
    env = settings_env(mine)
    node_url = f"http://127.0.0.1:{mine.cache_node_base_port}"
    commands = {
        "origin": ["origin"],
        "node-0": ["cache-node", "--node-id", "0", "--port", str(mine.cache_node_base_port)],
        "worker": ["worker", "-l", "info"],
    }
    health = {
        "origin": f"http://127.0.0.1:{mine.origin_port}/healthz",
        "node-0": f"{node_url}/healthz",
        "worker": f"http://127.0.0.1:{mine.worker_web_port}/healthz",
    }
    with foresight_processes(env, commands, health, tmp_path):
        token = tokens.issue(SECRET, CLIENT, 600.0, time.time())
        port = mine.worker_web_port

        def publish(events: list[tuple[str, str]], first: int) -> None:
            with InteractionPublisher(mine) as publisher:
                for n, (client, item) in enumerate(events, first):
                    publisher.publish(
                        Interaction(
                            event_id=f"inspect-{n}",
                            client_id=client,
                            content_id=item,
                            kind="click",
                            ts=time.time(),
                        )
                    )

        async def click_and_receive() -> list[tuple[str, int]]:
            # The teacher's clicks are learned first (clients' events are on different
            # partitions, so their order is otherwise not given).
            publish(TEACHER, 0)
            await until(lambda: worker_events(port, "teacher") == len(TEACHER), PUSH_TIMEOUT_S)
            async with Agent(CLIENT, token, node_url) as agent:
                publish(CLICKS, len(TEACHER))
                await until(lambda: worker_events(port, CLIENT) == len(CLICKS), PUSH_TIMEOUT_S)
                await until(lambda: bool(agent.cache.holdings()), PUSH_TIMEOUT_S)
                return [(h.content_id, h.version) for h in agent.cache.holdings()]

        held = asyncio.run(click_and_receive())
        assert held, "the agent should have received a push"

        # The node records a holding just after pushing it: allow it that moment.
        report: dict[str, Any] = {}
        for _ in range(3):
            done = inspect(env, CLIENT, "--json")
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            if {(h["content_id"], h["version"]) for h in report["holdings"]} >= set(held):
                break
            time.sleep(1.0)

        assert report["client_id"] == CLIENT and report["problems"] == []
        assert report["events"] == len(CLICKS)
        last = report["last_events"][0]
        assert last["content_id"] == "p-b" and abs(last["ts"] - time.time()) < 300
        assert [e["content_id"] for e in report["last_events"]] == ["p-b", "p-a"]
        top = report["top_k"]
        assert top and all(0.0 < item["probability"] <= 1.0 for item in top)
        assert [item["rank"] for item in top] == list(range(1, len(top) + 1))
        assert all(item["sources"] and item["ranker"] for item in top)
        # p-c follows p-b for the teacher: the sequential rules put it in the top k.
        p_c = next(item for item in top if item["content_id"] == "p-c")
        assert p_c["sources"]["sr"] > 0.0 and p_c["signals"]["markov"] > 0.0
        assert "p-c" in report["last_prediction"]
        assert 0.0 < report["threshold"]["value"] < 1.0
        assert report["threshold"]["connection"] == "4g"  # no connection class: the default
        assert report["budget"]["capacity"] and report["budget"]["tokens"] is not None
        holdings = {(h["content_id"], h["version"]) for h in report["holdings"]}
        assert set(held) <= holdings
        assert all(abs(h["pushed_at"] - time.time()) < 300 for h in report["holdings"])
        assert report["owner"] == {"node_id": "node-0", "url": node_url, "slot": 0}
        assert report["worker"]["partition"] >= 0

        # The rich view names the same things.
        shown = inspect(env, CLIENT)
        assert shown.returncode == 0, shown.stderr
        for expected in ("p-b", "p-c", "node-0", held[0][0], "threshold"):
            assert expected in shown.stdout, expected

        unknown = inspect(env, "nobody-here")
        assert unknown.returncode == 1
        assert "unknown client 'nobody-here'" in unknown.stderr
        assert len(unknown.stderr.strip().splitlines()) == 1

    nowhere = free_port()
    down = inspect({**env, "FORESIGHT_WORKER_WEB_PORT": str(nowhere)}, CLIENT)
    assert down.returncode == 1
    assert f"worker not reachable at http://127.0.0.1:{nowhere}/clients/{CLIENT}" in down.stderr
    assert "Traceback" not in down.stderr
