"""Records validate what producers send, drop location without consent, and export schemas."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    ContentUpdate,
    DeadLetter,
    Feedback,
    Interaction,
    InvalidRecord,
    PrefetchCommand,
    RingMember,
    SecurityAlert,
    convert,
    decode,
    encode,
)
from schemas.export import JSON_DIR, json_schemas

VALID = {
    "event_id": "e-1",
    "client_id": "client-42",
    "content_id": "product/123",
    "kind": "click",
    "ts": 1_700_000_000.5,
}


def test_valid_interaction_round_trips() -> None:
    event = decode(Interaction, json.dumps(VALID))
    assert event.client_id == "client-42"
    assert event.schema_version == 1
    assert decode(Interaction, encode(event)) == event


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"kind": "hover"}, "kind"),
        ({"ts": -1}, "ts"),
        ({"client_id": ""}, "client_id"),
        ({"client_id": "../etc/passwd"}, "client_id"),
        ({"content_id": 7}, "content_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_invalid_interaction_says_which_field(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        convert(Interaction, VALID | change)
    assert fragment in info.value.reason


def test_missing_field_is_named() -> None:
    raw = {k: v for k, v in VALID.items() if k != "content_id"}
    with pytest.raises(InvalidRecord, match="content_id"):
        convert(Interaction, raw)


def test_malformed_json_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="malformed JSON"):
        decode(Interaction, b"{not json")


def test_location_without_consent_is_dropped_at_decoding() -> None:
    raw = VALID | {"context": {"connection": "4g", "location": {"lat": 48.1, "lon": 11.6}}}
    event = decode(Interaction, json.dumps(raw))
    assert event.context is not None
    assert event.context.location is None
    assert b"48.1" not in encode(event)


def test_location_with_consent_is_kept() -> None:
    ctx = {"location_consent": True, "location": {"lat": 48.1, "lon": 11.6}}
    event = decode(Interaction, json.dumps(VALID | {"context": ctx}))
    assert event.context is not None and event.context.location is not None
    assert event.context.location.lat == pytest.approx(48.1)


@given(
    lat=st.floats(-90, 90, allow_nan=False),
    lon=st.floats(-180, 180, allow_nan=False),
    consent=st.booleans(),
)
def test_location_survives_exactly_when_consented(lat: float, lon: float, consent: bool) -> None:
    ctx = {"location_consent": consent, "location": {"lat": lat, "lon": lon}}
    event = convert(Interaction, VALID | {"context": ctx})
    assert event.context is not None
    assert (event.context.location is not None) is consent


def test_prefetch_command_rejects_expiry_before_issue() -> None:
    with pytest.raises(InvalidRecord, match="expires_at"):
        convert(
            PrefetchCommand,
            {
                "command_id": "c1",
                "client_id": "a",
                "content_id": "b",
                "probability": 0.5,
                "rank": 1,
                "model": "foresight",
                "issued_at": 10.0,
                "expires_at": 5.0,
            },
        )


def test_probability_is_bounded() -> None:
    base = {
        "command_id": "c1",
        "client_id": "a",
        "content_id": "b",
        "rank": 1,
        "model": "m",
        "issued_at": 1.0,
        "expires_at": 2.0,
    }
    with pytest.raises(InvalidRecord, match="probability"):
        convert(PrefetchCommand, base | {"probability": 1.5})


def test_every_record_type_round_trips() -> None:
    records: list[msgspec.Struct] = [
        Feedback(client_id="a", content_id="b", version=3, outcome="hit", latency_ms=1.5, ts=2.0),
        ContentUpdate(content_id="b", version=4, etag='"abc"', ts=2.0),
        RingMember(
            node_id="n1",
            url="http://127.0.0.1:8710",
            weight=1.0,
            slot=0,
            state="up",
            heartbeat_ts=3.0,
        ),
        SecurityAlert(client_id="a", score=0.97, reason="rate", ts=4.0),
        DeadLetter(
            topic="interactions",
            partition=0,
            offset=5,
            key=b"k",
            value=b"\xff\x00",
            reason="bad",
            rejected_by="test",
            ts=5.0,
        ),
    ]
    for record in records:
        assert decode(type(record), encode(record)) == record


def test_dead_letter_keeps_raw_bytes_whole() -> None:
    raw = bytes(range(256))
    letter = DeadLetter(topic="t", value=raw, reason="r", rejected_by="x", ts=1.0)
    assert decode(DeadLetter, encode(letter)).value == raw


def test_exported_json_schemas_are_current() -> None:
    for name, content in json_schemas().items():
        path = JSON_DIR / name
        assert path.exists(), f"{name} missing: run `foresight schemas export`"
        assert path.read_bytes() == content, f"{name} is stale: run `foresight schemas export`"


def test_json_schema_describes_the_interaction_constraints() -> None:
    schema = json.loads((JSON_DIR / "interaction.v1.json").read_text())
    props = schema["$defs"]["Interaction"]["properties"]
    assert set(props["kind"]["enum"]) == {"view", "click", "purchase", "request"}
    assert "client_id" in schema["$defs"]["Interaction"]["required"]
