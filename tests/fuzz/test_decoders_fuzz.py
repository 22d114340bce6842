"""The decoders every boundary relies on raise InvalidRecord, and nothing else, on any input.

Each consumer catches InvalidRecord to dead-letter a record or refuse a frame; any other
exception escapes that handling and stops a consumer loop, a Faust agent, the ring reader or a
WebSocket handler. No services: the same payloads the Kafka and WebSocket tests send.
"""

from __future__ import annotations

import collections

import pytest

from schemas import InvalidRecord
from schemas.protocol import decode_from_agent

from . import frames as fr
from . import strategies as fz
from .conftest import Figure
from .records import TOPICS, records, verdict


@pytest.mark.parametrize("topic", TOPICS)
def test_a_record_decoder_raises_only_invalid_record(topic: str, figure: Figure) -> None:
    batch = records(topic)
    outcomes: collections.Counter[str] = collections.Counter()
    leaks: list[tuple[str, bytes | None]] = []
    for key, value in batch:
        valid, leaked = verdict(topic, key, value)
        outcomes["valid" if valid else leaked or "InvalidRecord"] += 1
        if leaked:
            leaks.append((leaked, value))
    figure(
        f"decode {topic}",
        f"{len(batch)} records, {outcomes['valid']} valid, {outcomes['InvalidRecord']} refused "
        f"with InvalidRecord, {len(leaks)} raised another exception",
        records=len(batch),
        outcomes=dict(outcomes),
    )
    shortest = fz.shortest(leaks, key=lambda leak: len(leak[1] or b""))
    assert not leaks, f"{len(leaks)} records raised {dict(outcomes)}, e.g. {shortest}"


def test_the_agent_frame_decoder_raises_only_invalid_record(figure: Figure) -> None:
    frames = [frame for _, _, frame in fr.hello_batch(fr.HELLOS)] + fr.frame_batch(fr.FRAMES)
    outcomes: collections.Counter[str] = collections.Counter()
    leaks: list[tuple[str, str | bytes]] = []
    for _text, data in frames:
        try:
            decode_from_agent(data)
            outcomes["valid"] += 1
        except InvalidRecord:
            outcomes["InvalidRecord"] += 1
        except Exception as exc:
            outcomes[type(exc).__name__] += 1
            leaks.append((type(exc).__name__, data))
    figure(
        "decode agent frames",
        f"{len(frames)} frames, {outcomes['valid']} valid, {outcomes['InvalidRecord']} refused "
        f"with InvalidRecord, {len(leaks)} raised another exception",
        frames=len(frames),
        outcomes=dict(outcomes),
    )
    shortest = [(name, data[:80]) for name, data in fz.shortest(leaks, key=lambda x: len(x[1]))]
    assert not leaks, f"{len(leaks)} frames raised {dict(outcomes)}, e.g. {shortest}"
