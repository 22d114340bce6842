"""10,000 hostile Kafka records per input topic, and what the schema says of each.

The valid records name few clients and items (``fz-c*``, ``fz-p*``), so that the work they
cause downstream (state per client, origin fetches, Cassandra writes) stays small; the broken
ones are broken in every way :func:`tests.fuzz.strategies.hostile_bytes` knows. Ring-membership
records always have a key (Kafka refuses a keyless record on a compacted topic), and none of
them may change the ring: no valid "up" member, nothing under the running node's key.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from schemas import (
    ContentUpdate,
    Feedback,
    Interaction,
    InvalidRecord,
    PrefetchCommand,
    RingMember,
    decode,
)

from . import strategies as fz
from .stack import NODE_ID

RECORDS = 10_000
TOPICS = ("interactions", "feedback", "prefetch-commands", "content-updates", "ring-membership")
RECORD_TYPES: dict[str, type[msgspec.Struct]] = {
    "interactions": Interaction,
    "feedback": Feedback,
    "prefetch-commands": PrefetchCommand,
    "content-updates": ContentUpdate,
    "ring-membership": RingMember,
}
# Tombstones (no value at all) are 1 in this many records.
TOMBSTONE_ONE_IN = 100

Record = tuple[bytes | None, bytes | None]

clients = st.sampled_from([f"fz-c{i}" for i in range(300)])
contents = st.sampled_from([f"fz-p{i}" for i in range(8)])


def valid_values(topic: str) -> SearchStrategy[dict[str, Any]]:
    if topic == "interactions":
        return fz.interactions(clients, contents)
    if topic == "feedback":
        return fz.feedback(clients, contents)
    if topic == "prefetch-commands":
        return fz.prefetch_commands(clients, contents)
    if topic == "content-updates":
        return fz.content_updates(contents)
    # Members that are valid but never live, so that none of them joins the ring.
    return fz.ring_members(states=st.sampled_from(["leaving", "down"]))


@st.composite
def _record(draw: st.DrawFn, topic: str, values: SearchStrategy[bytes]) -> Record:
    value = None if draw(st.integers(1, TOMBSTONE_ONE_IN)) == 1 else draw(values)
    if topic != "ring-membership":
        return draw(fz.keys), value
    key = draw(st.binary(min_size=1, max_size=40) | fz.identifiers.map(str.encode))
    if value is not None:
        try:
            member = decode(RingMember, value)
        except Exception:
            return key, value
        if draw(st.integers(1, 5)) > 1:  # mostly under its own node id, as a node writes it
            key = member.node_id.encode()
    return key, value


def _harmless_to_the_ring(record: Record) -> bool:
    key, value = record
    if key == NODE_ID.encode():
        return False
    if value is None:
        return True
    try:
        return decode(RingMember, value).state != "up"
    except Exception:
        return True


@functools.cache
def records(topic: str, count: int = RECORDS) -> list[Record]:
    """``count`` hostile (key, value) records for ``topic``, the same on every run."""
    values = fz.hostile_bytes(valid_values(topic))
    strategy = _record(topic, values)
    if topic == "ring-membership":
        strategy = strategy.filter(_harmless_to_the_ring)
    return fz.generate(strategy, count)


def verdict(topic: str, key: bytes | None, value: bytes | None) -> tuple[bool, str | None]:
    """Whether the topic's schema accepts the record, and the type of any exception other
    than InvalidRecord that decoding it raised (a decoder that leaks one is a bug)."""
    if topic == "ring-membership" and value is None:
        return True, None  # a tombstone: the node leaves the ring
    try:
        record = decode(RECORD_TYPES[topic], value or b"")
    except InvalidRecord:
        return False, None
    except Exception as exc:
        return False, type(exc).__name__
    if isinstance(record, RingMember):
        return (key or b"").decode("utf-8", "replace") == record.node_id, None
    return True, None
