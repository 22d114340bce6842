"""The browser agent end to end, in real headless Chromium (Debian's, at /usr/bin/chromium).

Origin, worker and cache node run as real processes on real Kafka and Cassandra, as in
test_delivery.py. The demo page registers the Service Worker and starts the agent module; a
click published for its client makes the node push a predicted item, which lands in Cache
Storage; the page's own fetch of that item is then answered from Cache Storage (hit, right
digest) and a fetch of an item never pushed goes to the network (miss, 200). Both become
feedback records on the feedback topic. Cache Storage outlives the page, and a new version
from the origin replaces the copy there.

Chromium is driven with playwright-python, which never downloads a browser here: it launches
/usr/bin/chromium. Without it, or without the services, the test FAILS.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from playwright.sync_api import BrowserContext, Page, sync_playwright

from foresight import tokens
from foresight.migrate import migrate
from foresight.settings import Settings
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import Feedback, Interaction, decode

from .conftest import settings_env
from .processes import delivery_settings, foresight_processes

SECRET = "integration-secret-0123456789abcdef-0123456789"
CLIENT = "browser-1"
CHROMIUM = Path("/usr/bin/chromium")
# The flags known to work on this machine: no sandbox (root), no GPU, and no background
# traffic to Google's hosts, which the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The worker learning 3000 warm-up events on a loaded 2-core machine.
WARM_TIMEOUT_S = 120.0
# Chromium's start, the page's load, the Service Worker's install and claim, and the agent's
# WebSocket handshake (hello, welcome).
PAGE_TIMEOUT_S = 30.0
# From a published interaction to an item in Cache Storage: the worker and the node each poll
# Kafka, the node fetches from the origin, the agent verifies the digest and stores it.
PUSH_TIMEOUT_S = 30.0
# From the page's fetch to its feedback record on Kafka (agent -> node -> feedback topic).
FEEDBACK_TIMEOUT_S = 30.0


@dataclass
class Delivery:
    settings: Settings
    node_url: str
    origin_url: str
    worker_port: int

    def token(self, client_id: str) -> str:
        return tokens.issue(SECRET, client_id, 600.0, time.time())


@pytest.fixture
def delivery(settings: Settings, tmp_path: Path) -> Iterator[Delivery]:
    mine = delivery_settings(settings, tmp_path / "state", SECRET)
    origin_port, node_port = mine.origin_port, mine.cache_node_base_port
    worker_port = mine.worker_web_port
    migrate(mine)
    env = settings_env(mine)
    commands = {
        "origin": ["origin"],
        "node": ["cache-node", "--node-id", "0"],
        "worker": ["worker", "-l", "info"],
    }
    health = {
        "origin": f"http://127.0.0.1:{origin_port}/healthz",
        "node": f"http://127.0.0.1:{node_port}/healthz",
        "worker": f"http://127.0.0.1:{worker_port}/healthz",
    }
    with foresight_processes(env, commands, health, tmp_path):
        yield Delivery(
            mine, f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{origin_port}", worker_port
        )


@pytest.fixture
def chromium_binary() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture
def chromium(chromium_binary: Path, delivery: Delivery, tmp_path: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile; never a downloaded browser.

    It needs `delivery` only to be closed before the services stop: a node with an agent still
    connected waits for it (aiohttp's shutdown_timeout) before it leaves the ring.
    """
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=chromium_binary,
            headless=True,
            args=CHROMIUM_FLAGS,
            timeout=PAGE_TIMEOUT_S * 1000,
        )
        try:
            yield context
        finally:
            context.close()


def _warm(d: Delivery, data: Path, count: int = 3000) -> list[Interaction]:
    events = sorted(read_yoochoose(data / "train_valid.tsv"), key=lambda e: e.ts)[:count]
    with InteractionPublisher(d.settings) as publisher:
        publisher.publish_batch(events)
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while _processed(d.worker_port) < len(events):
        assert time.monotonic() < deadline, f"the worker did not learn {count} events in time"
        time.sleep(0.5)
    return events


def _processed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('foresight_worker_events_total{outcome="ok"'):
                return float(line.split()[-1])
    return 0.0


def _feedback(settings: Settings, wanted: set[tuple[str, str]]) -> list[Feedback]:
    """Feedback records of CLIENT, read until every wanted (content_id, outcome) is among them."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"browser-feedback-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_feedback])
    seen: list[Feedback] = []
    deadline = time.monotonic() + FEEDBACK_TIMEOUT_S
    try:
        while not wanted <= {(f.content_id, f.outcome) for f in seen}:
            assert time.monotonic() < deadline, f"feedback {wanted} not all there: {seen}"
            for msg in consumer.consume(100, timeout=0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    record = decode(Feedback, value)
                    if record.client_id == CLIENT:
                        seen.append(record)
        return seen
    finally:
        consumer.close()


def _open_demo(context: BrowserContext, d: Delivery, console: list[str]) -> Page:
    page = context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.goto(f"{d.node_url}/agent/demo.html?client={CLIENT}&token={d.token(CLIENT)}")
    page.wait_for_function(
        "() => window.foresight?.controlled && window.foresight.state === 'connected'",
        timeout=PAGE_TIMEOUT_S * 1000,
    )
    return page


def _fetch(page: Page, content_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate("(id) => foresight.fetchItem(id)", content_id)
    return answer


def test_the_page_is_answered_from_cache_storage_with_what_was_pushed(
    chromium_binary: Path, delivery: Delivery, chromium: BrowserContext, yoochoose_dir: Path
) -> None:
    # chromium_binary first: without the browser the test fails before any process starts.
    d = delivery
    with urllib.request.urlopen(f"{d.node_url}/agent/foresight-sw.js", timeout=5) as response:
        assert response.headers["Service-Worker-Allowed"] == "/"
        assert response.headers["Content-Type"].startswith("text/javascript")
    warm = _warm(d, yoochoose_dir)
    # A real first click whose successors the warm-up taught the model.
    ids = [e.content_id for e in warm]
    popular = max(set(ids), key=ids.count)
    # An item the origin serves that no model can predict: it was never in any event.
    never_pushed = f"browser-only-{uuid.uuid4().hex[:8]}"
    console: list[str] = []
    page = _open_demo(chromium, d, console)

    with InteractionPublisher(d.settings) as publisher:
        publisher.publish(
            Interaction(
                event_id=f"browser-{uuid.uuid4().hex}",
                client_id=CLIENT,
                content_id=popular,
                kind="click",
                ts=time.time(),
            )
        )
    page.wait_for_function("() => foresight.pushed.length > 0", timeout=PUSH_TIMEOUT_S * 1000)
    pushed: dict[str, Any] = page.evaluate("() => foresight.pushed[0]")
    stored: dict[str, Any] = page.evaluate(
        """async (id) => {
            const response = await (await caches.open("foresight-v1")).match("/v1/content/" + id);
            return response && {
                version: response.headers.get("X-Content-Version"),
                digest: response.headers.get("X-Content-Digest"),
                type: response.headers.get("Content-Type"),
            };
        }""",
        pushed["content_id"],
    )
    assert stored == {
        "version": str(pushed["version"]),
        "digest": pushed["digest"],
        "type": pushed["content_type"],
    }, console

    hit = _fetch(page, pushed["content_id"])
    assert hit["status"] == 200 and hit["cache"] == "hit", (hit, console)
    assert hit["sha256"] == hit["digest"] == pushed["digest"]
    # The same bytes the node serves for that item (asked as another client, so that this
    # request is not one of browser-1's).
    node_copy = urllib.request.Request(
        f"{d.node_url}/v1/content/{pushed['content_id']}",
        headers={"Authorization": f"Bearer {d.token('browser-check')}"},
    )
    with urllib.request.urlopen(node_copy, timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest() == pushed["digest"]

    # Not pushed: the Service Worker goes to the node, adding the page's token itself (the
    # page's fetch carries none, so a 200 proves it), and marks the answer a miss.
    # (The node records that request as an interaction, so the item may be pushed afterwards.)
    assert never_pushed not in [p["content_id"] for p in page.evaluate("foresight.pushed")]
    miss = _fetch(page, never_pushed)
    assert miss["status"] == 200 and miss["cache"] == "miss", (miss, console)
    assert miss["sha256"] == miss["digest"]

    records = _feedback(d.settings, {(pushed["content_id"], "hit"), (never_pushed, "miss")})
    by_outcome = {(f.content_id, f.outcome): f for f in records}
    assert by_outcome[pushed["content_id"], "hit"].version == pushed["version"]
    assert by_outcome[never_pushed, "miss"].version == int(miss["version"])

    # A new page load: the item is still in Cache Storage, the hello lists it, and a second
    # request is answered from it again (its hit was reported once, above).
    page.close()
    page = _open_demo(chromium, d, console)
    held = {h["content_id"]: h for h in page.evaluate("() => foresight.agent.holdings()")}
    assert held[pushed["content_id"]]["version"] == pushed["version"], held
    assert held[pushed["content_id"]]["digest"] == pushed["digest"]
    again = _fetch(page, pushed["content_id"])
    assert again["cache"] == "hit" and again["sha256"] == pushed["digest"], (again, console)

    # The origin bumps the item: the node sends an update, which replaces the copy in Cache
    # Storage, and the next request is answered from the new version.
    bump = urllib.request.Request(
        f"{d.origin_url}/admin/content/{pushed['content_id']}/bump", method="POST"
    )
    with urllib.request.urlopen(bump, timeout=10) as response:
        assert response.status == 200
    page.wait_for_function(
        "(id) => foresight.pushed.some((p) => p.kind === 'update' && p.content_id === id)",
        arg=pushed["content_id"],
        timeout=PUSH_TIMEOUT_S * 1000,
    )
    bumped = _fetch(page, pushed["content_id"])
    assert bumped["cache"] == "hit" and int(bumped["version"]) > pushed["version"], bumped
    assert bumped["sha256"] == bumped["digest"] != pushed["digest"]
