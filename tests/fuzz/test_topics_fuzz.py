"""10,000 hostile raw records on each Kafka input topic, with the real processes consuming.

interactions and feedback go to a worker, prefetch-commands (node-0's partition) and
content-updates to a cache node, ring-membership to both. Afterwards each process must be
alive, answer /healthz and have logged no exception; each record must have been processed or
dead-lettered whole with a reason (as many dead letters as the schema refuses records, no
more, no fewer), and the dead-letter counters must agree.

ring-membership has no dead-letter topic: every reader (node and worker) skips an invalid
record with one warning line, keeps the ring it has, and reads on. That is asserted here.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import pytest

from foresight.ring import MAX_CLOCK_SKEW_S
from foresight.settings import Settings
from schemas import DeadLetter, InvalidRecord, RingMember, decode, encode
from tests.integration.conftest import end_offsets, read_all

from .conftest import Figure, StartStack
from .records import Record, records, verdict
from .stack import NODE_ID, Stack, metric, produce_all, wait_for_count

pytestmark = pytest.mark.integration

# A consumer that makes no progress for this long has stopped; one that has not handled the
# 10,000 records in DEADLINE_S is stuck (a healthy worker takes 7 s for them here, a node 3 s).
STALL_S = 10.0
DEADLINE_S = 40.0
# content-updates is read from the latest offset once the node's consumer has joined its group:
# probe records (invalid, so each yields a dead letter) show when that happened.
PROBE = b"fuzz-probe"
# The worker reads the ring-membership topic from the start within seconds of starting.
RING_WAIT_S = 30.0
PROBE_WAIT_S = 45.0

TOPIC_SETTING = {
    "interactions": "topic_interactions",
    "feedback": "topic_feedback",
    "prefetch-commands": "topic_prefetch_commands",
    "content-updates": "topic_content_updates",
    "ring-membership": "topic_ring_membership",
}
SERVICES = {
    "interactions": ("worker",),
    "feedback": ("worker",),
    "prefetch-commands": ("origin", "node-0"),
    "content-updates": ("origin", "node-0"),
}


def topic_of(settings: Settings, topic: str) -> str:
    name: str = getattr(settings, TOPIC_SETTING[topic])
    return name


class Progress:
    """How many of the published records a topic's consumer has dealt with, and how many it
    dead-lettered, by the consumer's own counters (None where it keeps none)."""

    def __init__(self, stack: Stack, topic: str) -> None:
        self.stack, self.topic = stack, topic
        self.name = topic_of(stack.settings, topic)
        self.dlq = stack.settings.dead_letter_topic(self.name)

    def handled(self) -> float:
        url = self.stack.worker_url
        if self.topic in ("interactions", "feedback"):
            # ok, duplicate and invalid; plus the valid ones dead-lettered for an engine error
            events = metric(url, "foresight_worker_events_total", topic=self.topic)
            return events + self.worker_dead_letters() - self.invalid_events()
        if self.topic == "prefetch-commands":
            return metric(self.stack.node_url, "foresight_node_commands_total")
        return float(end_offsets(self.stack.settings, self.dlq))

    def worker_dead_letters(self) -> float:
        url = self.stack.worker_url
        return metric(url, "foresight_worker_dead_letters_total", topic=self.name)

    def counted(self) -> float | None:
        if self.topic in ("interactions", "feedback"):
            return self.worker_dead_letters()
        if self.topic == "prefetch-commands":
            return metric(self.stack.node_url, "foresight_node_commands_total", outcome="invalid")
        return None  # the node counts no content-updates dead letters

    def invalid_events(self) -> float:
        url = self.stack.worker_url
        return metric(url, "foresight_worker_events_total", topic=self.topic, outcome="invalid")


def wait_until_consuming(stack: Stack, progress: Progress) -> int:
    """Send probes until the node's content-updates consumer dead-letters one; return how many
    dead letters the probes made."""
    deadline = time.monotonic() + PROBE_WAIT_S
    while time.monotonic() < deadline:
        produce_all(stack.settings, progress.name, [(None, PROBE)])
        time.sleep(1.0)
        letters = end_offsets(stack.settings, progress.dlq)
        if letters:
            time.sleep(1.0)  # the last probes' letters may still be on their way
            return end_offsets(stack.settings, progress.dlq)
    pytest.fail(f"the node's {progress.name} consumer never joined in {PROBE_WAIT_S} s")


def check_alive(stack: Stack) -> tuple[dict[str, int], dict[str, list[str]], dict[str, Any]]:
    health: dict[str, Any] = {}
    try:
        health = stack.health()
    except OSError as exc:
        health = {"error": repr(exc)}
    return stack.dead(), stack.crashes(), health


@pytest.mark.parametrize("topic", list(SERVICES))
def test_hostile_records_are_processed_or_dead_lettered_with_a_reason(
    topic: str, start_stack: StartStack, figure: Figure
) -> None:
    batch = records(topic)
    verdicts = [verdict(topic, key, value) for key, value in batch]
    invalid_values = collections.Counter(
        value or b"" for (_, value), (ok, _) in zip(batch, verdicts, strict=True) if not ok
    )
    invalid = sum(invalid_values.values())
    with start_stack(*SERVICES[topic]) as stack:
        progress = Progress(stack, topic)
        probes = wait_until_consuming(stack, progress) if topic == "content-updates" else 0
        extra: dict[str, Any] = {"partition": 0} if topic == "prefetch-commands" else {}
        produce_all(stack.settings, progress.name, batch, **extra)
        target = invalid + probes if topic == "content-updates" else len(batch)
        handled = (
            wait_for_count(
                progress.handled, target, STALL_S, DEADLINE_S, lambda: bool(stack.crashes())
            )
            - probes
        )
        dead, crashes, health = check_alive(stack)
        counted = progress.counted()
        letters = [
            decode(DeadLetter, raw)
            for raw in read_all(
                stack.settings, progress.dlq, end_offsets(stack.settings, progress.dlq)
            )
        ]
    letters = [letter for letter in letters if letter.value != PROBE]
    summary = (
        f"{len(batch)} records ({len(batch) - invalid} valid, {invalid} invalid), "
        f"{'?' if topic == 'content-updates' else int(handled)} handled, "
        f"{len(letters)} dead-lettered with a reason, counted "
        f"{'nowhere' if counted is None else int(counted - probes)}, "
        f"{sum(len(c) for c in crashes.values())} exceptions logged, "
        f"{len(dead)} processes died"
    )
    figure(
        f"kafka {topic}",
        summary,
        records=len(batch),
        invalid=invalid,
        handled=None if topic == "content-updates" else handled,
        dead_lettered=len(letters),
        counted=counted,
        exceptions_logged={name: len(c) for name, c in crashes.items()},
        exception_samples={name: c[:3] for name, c in crashes.items()},
        dead_processes=dead,
        health=health,
    )
    assert not dead, f"processes died: {dead}"
    assert "error" not in health, health
    assert not crashes, f"exceptions logged: { {n: c[:3] for n, c in crashes.items()} }"
    if topic != "content-updates":
        assert handled == len(batch), f"{len(batch) - handled} records were never handled"
    assert collections.Counter(letter.value for letter in letters) == invalid_values
    assert all(letter.reason and letter.topic == progress.name for letter in letters)
    if counted is not None:
        assert counted == invalid


#: Well-formed "up" records a misconfigured or hostile writer could send: a slot with no
#: prefetch-commands partition, or a heartbeat far in the future. Every reader refuses them.
FORGED = 50


def forged_members() -> list[Record]:
    now = time.time()
    forged: list[Record] = []
    for i in range(FORGED):
        slot, heartbeat = (100_000 - i, now) if i % 2 else (0, now + 86_400 * (i + 1))
        member = RingMember(
            node_id=f"forged-{i}",
            url="http://127.0.0.1:1",
            weight=1.0,
            slot=slot,
            state="up",
            heartbeat_ts=heartbeat,
        )
        forged.append((member.node_id.encode(), encode(member)))
    return forged


def skipped_lines(stack: Stack, name: str) -> Callable[[], int]:
    def count() -> int:
        return stack.count_logged(
            name, lambda line: str(line.get("msg", "")).startswith("skipped ring-membership")
        )

    return count


def refused_by_the_fold(value: bytes | None, slots: int, now: float) -> bool:
    """A well-formed record every reader still refuses (foresight.ring.RingMembership): a
    slot with no prefetch-commands partition, or a heartbeat too far in the future."""
    if value is None:
        return False
    try:
        member = decode(RingMember, value)
    except InvalidRecord:
        return False
    return member.slot >= slots or member.heartbeat_ts > now + MAX_CLOCK_SKEW_S


def test_ring_membership_garbage_is_skipped_with_a_warning_and_the_ring_holds(
    start_stack: StartStack, figure: Figure, settings: Settings
) -> None:
    topic = "ring-membership"
    batch: list[Record] = records(topic) + forged_members()
    slots, now = settings.prefetch_command_slots, time.time()
    invalid = sum(
        not verdict(topic, key, value)[0] or refused_by_the_fold(value, slots, now)
        for key, value in batch
    )
    with start_stack("node-0", "worker") as stack:
        # The worker answers /healthz before its ring reader has read the node's heartbeat.
        wait_for_count(lambda: stack.health()["worker"]["ring"], 1, RING_WAIT_S, RING_WAIT_S)
        before = stack.health()
        produce_all(stack.settings, topic_of(stack.settings, topic), batch)
        node_skipped, worker_skipped = skipped_lines(stack, NODE_ID), skipped_lines(stack, "worker")
        wait_for_count(lambda: min(node_skipped(), worker_skipped()), invalid, STALL_S, DEADLINE_S)
        dead, crashes, after = check_alive(stack)
        skipped = {"node-0": node_skipped(), "worker": worker_skipped()}
    figure(
        f"kafka {topic}",
        f"{len(batch)} records ({len(batch) - invalid} valid, {invalid} invalid), skipped with "
        f"a warning by node-0: {skipped['node-0']}, by the worker: {skipped['worker']}; "
        f"ring before {before['node-0']['ring']} after {after.get('node-0', {}).get('ring')}, "
        f"{sum(len(c) for c in crashes.values())} exceptions logged, {len(dead)} processes died",
        records=len(batch),
        invalid=invalid,
        skipped=skipped,
        ring_before=before,
        ring_after=after,
        exception_samples={name: c[:3] for name, c in crashes.items()},
        dead_processes=dead,
    )
    assert not dead, f"processes died: {dead}"
    assert not crashes, f"exceptions logged: { {n: c[:3] for n, c in crashes.items()} }"
    assert skipped == {"node-0": invalid, "worker": invalid}
    assert after["node-0"]["ring"] == before["node-0"]["ring"] == [NODE_ID]
    assert after["worker"]["ring"] == before["worker"]["ring"] == 1
