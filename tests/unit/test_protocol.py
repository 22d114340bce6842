"""Push protocol frames round-trip, bad frames are refused with a reason, the spec matches."""

from __future__ import annotations

import base64
import doctest
import json
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas.protocol
from schemas import Feedback as FeedbackRecord
from schemas import InvalidRecord
from schemas.protocol import (
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    CloseCode,
    Error,
    Feedback,
    Hello,
    Holding,
    Invalidate,
    Message,
    Ping,
    Pong,
    Push,
    Redirect,
    Resume,
    UnsupportedVersion,
    Update,
    Welcome,
    close_reason,
    decode_from_agent,
    decode_from_node,
    decode_hello,
    decode_message,
    digest,
    encode_message,
)

SPEC = Path(__file__).resolve().parents[2] / "docs" / "push-protocol.md"
BODY = b"<html>\x00\xff caf\xc3\xa9</html>"
TS = 1_700_000_000.25

MESSAGES: list[Message] = [
    Hello(client_id="client-42", agent="foresight-python/0.1.0"),
    Hello(
        client_id="client-42",
        agent="foresight-python/0.1.0",
        holdings=[Holding(content_id="product/1", version=3, digest=digest(BODY))],
        cache_max_bytes=50_000_000,
        resume=Resume(node_id="node-a", redirected=True, disconnected_at=TS),
    ),
    Welcome(node_id="node-a", client_id="client-42", server_time=TS, heartbeat_s=25.0),
    Push(
        content_id="product/1",
        version=3,
        digest=digest(BODY),
        content_type="text/html; charset=utf-8",
        body=BODY,
        command_id="cmd-1",
        probability=0.8,
        pushed_at=TS,
    ),
    Push(
        content_id="product/1",
        version=0,
        digest=digest(b""),
        content_type="application/octet-stream",
        body=b"",
        pushed_at=TS,
    ),
    Update(
        content_id="product/1",
        version=4,
        previous_version=3,
        digest=digest(BODY),
        content_type="text/html",
        body=BODY,
        pushed_at=TS,
    ),
    Invalidate(content_id="product/1"),
    Invalidate(content_id="product/1", version=3, reason="deleted at the origin"),
    Redirect(url="ws://127.0.0.1:8711/v1/agents/ws", node_id="node-b", reason="ring-change"),
    Feedback(content_id="product/1", version=3, outcome="hit", latency_ms=0.4, ts=TS),
    Ping(ts=TS),
    Pong(ts=TS),
    Error(code=CloseCode.BAD_MESSAGE, reason="invalid agent message: ..."),
]
PUSH = MESSAGES[3]
TAGS = ["hello", "welcome", "push", "update", "invalidate", "redirect", "feedback", "ping"]
TAGS += ["pong", "error"]


def frame(message: Message, **change: object) -> bytes:
    raw = json.loads(encode_message(message))
    raw.update(change)
    return json.dumps(raw).encode()


def test_the_examples_in_the_module_docstring_hold() -> None:
    assert doctest.testmod(schemas.protocol).failed == 0


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    raw = encode_message(message)
    assert decode_message(raw) == message
    assert decode_message(raw.decode()) == message
    fields = json.loads(raw)
    assert fields["protocol_version"] == PROTOCOL_VERSION
    assert fields["type"] == type(message).__struct_config__.tag


def test_every_tag_is_a_message() -> None:
    assert {type(m).__struct_config__.tag for m in MESSAGES} == set(TAGS)


@given(st.binary(max_size=2048))
def test_body_bytes_survive_json(body: bytes) -> None:
    push = msgspec.structs.replace(PUSH, body=body, digest=digest(body))
    raw = encode_message(push)
    assert json.loads(raw)["body"] == base64.b64encode(body).decode()
    decoded = decode_message(raw)
    assert isinstance(decoded, Push)
    assert decoded.body == body
    assert digest(decoded.body) == decoded.digest


def test_the_largest_push_fits_in_one_frame() -> None:
    body = b"\xff" * MAX_BODY_BYTES
    push = msgspec.structs.replace(
        PUSH, content_id="c" * 256, command_id="k" * 256, content_type="t" * 255, body=body
    )
    assert len(encode_message(push)) <= MAX_MESSAGE_BYTES


def test_a_body_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidRecord, match=r"\$\.body"):
        decode_message(frame(PUSH, body=base64.b64encode(b"x" * (MAX_BODY_BYTES + 1)).decode()))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"type": "teleport", "protocol_version": 1}', "'teleport' - at `$.type`"),
        (b'{"protocol_version": 1, "ts": 1}', "missing required field `type`"),
        (frame(PUSH, protocol_version=2), "unsupported protocol_version 2, this side speaks 1"),
        (frame(Ping(ts=1), protocol_version=0), "unsupported protocol_version"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'{"type": "push"', "malformed JSON"),
        (b"", "malformed JSON"),
        (frame(PUSH, digest="ABC"), "$.digest"),
        (frame(PUSH, digest=digest(BODY).upper()), "$.digest"),
        (frame(PUSH, content_id="../etc/passwd"), "content_id"),
        (frame(PUSH, command_id="has space"), "command_id"),
        (frame(PUSH, body="not base64!"), "$.body"),
        (frame(PUSH, probability=1.5), "$.probability"),
        (frame(PUSH, version=-1), "$.version"),
        (frame(PUSH, content_type="text/html\r\nSet-Cookie: x"), "$.content_type"),
        (frame(MESSAGES[5], previous_version=4), "previous_version"),
        (frame(MESSAGES[8], url="http://evil.example/"), "$.url"),
        (frame(MESSAGES[9], outcome="liked"), "$.outcome"),
        (frame(MESSAGES[9], latency_ms=-1), "$.latency_ms"),
        (frame(MESSAGES[1], holdings=[{"content_id": "a", "version": 1}]), "digest"),
        (frame(Error(code=4009, reason="x"), code=200), "$.code"),
    ],
)
def test_a_bad_frame_is_refused_with_a_one_line_reason(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_message(raw)
    assert fragment in info.value.reason
    assert "\n" not in info.value.reason


@pytest.mark.parametrize(
    ("message", "missing"),
    [(PUSH, "digest"), (PUSH, "body"), (MESSAGES[0], "client_id"), (MESSAGES[9], "outcome")],
)
def test_a_missing_field_is_named(message: Message, missing: str) -> None:
    raw = json.loads(encode_message(message))
    del raw[missing]
    with pytest.raises(InvalidRecord, match=f"missing required field `{missing}`"):
        decode_message(json.dumps(raw))


def test_unknown_fields_are_ignored_within_a_version() -> None:
    assert decode_message(frame(PUSH, priority="high")) == PUSH


def test_a_frame_without_protocol_version_is_read_as_version_1() -> None:
    raw = json.loads(encode_message(Ping(ts=TS)))
    del raw["protocol_version"]
    assert decode_message(json.dumps(raw)) == Ping(ts=TS)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_side_reads_only_what_the_other_may_send(message: Message) -> None:
    tag = type(message).__struct_config__.tag
    from_agent = tag in {"hello", "feedback", "ping", "pong", "error"}
    from_node = tag not in {"hello", "feedback"}
    raw = encode_message(message)
    for decode, allowed in ((decode_from_agent, from_agent), (decode_from_node, from_node)):
        if allowed:
            assert decode(raw) == message
        else:
            with pytest.raises(InvalidRecord, match=f"'{tag}' - at `\\$.type`"):
                decode(raw)


def test_feedback_becomes_the_feedback_record_with_the_connections_client() -> None:
    message = MESSAGES[9]
    assert isinstance(message, Feedback)
    fields = set(FeedbackRecord.__struct_fields__) - {"schema_version", "client_id"}
    assert "client_id" not in Feedback.__struct_fields__
    record = FeedbackRecord(client_id="client-42", **{f: getattr(message, f) for f in fields})
    assert record.outcome == "hit"
    assert record.version == 3


def test_digest_is_lowercase_sha256_hex() -> None:
    assert digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_close_codes_are_standard_or_in_the_application_range() -> None:
    for code in CloseCode:
        assert code in {1001, 1002, 1007, 1009, 1011, 1013} or 4000 <= code <= 4999
    assert int(CloseCode.TRY_AGAIN_LATER) == 1013
    assert int(CloseCode.GOING_AWAY) == 1001


def test_the_spec_documents_every_close_code_and_message() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    table = set(re.findall(r"^\| (\d{4}) \|", spec, flags=re.MULTILINE))
    assert table == {str(int(code)) for code in CloseCode}
    for tag in TAGS:
        assert f"### {tag}" in spec


@pytest.mark.parametrize(
    "text",
    ["token expired", "é" * 200, "x" * 122 + "é", "line one\nline two", "日本語" * 50, ""],
)
def test_a_close_reason_fits_a_close_frame_as_valid_utf8(text: str) -> None:
    reason = close_reason(text)
    assert 0 < len(reason) <= 123
    decoded = reason.decode("utf-8")  # a cut inside a character would not decode
    assert "\n" not in decoded
    assert text.replace("\n", " ").startswith(decoded) or not text


@pytest.mark.parametrize(
    "raw",
    [
        frame(Ping(ts=1), protocol_version=2),
        b'{"type": "teleport", "protocol_version": 2}',
        b'{"protocol_version": "1", "type": "ping", "ts": 1}',
        b'{"type": "ping", "protocol_version": null}',
    ],
)
def test_a_frame_of_another_protocol_version_is_refused_as_such(raw: bytes) -> None:
    with pytest.raises(UnsupportedVersion, match="unsupported protocol_version"):
        decode_from_agent(raw)


def test_a_bad_frame_of_this_version_is_not_a_version_problem() -> None:
    for raw in (b'{"type": "teleport"}', b'{"type": "ping", "protocol_version": 1}', b"[]"):
        with pytest.raises(InvalidRecord) as info:
            decode_from_agent(raw)
        assert not isinstance(info.value, UnsupportedVersion)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (encode_message(Ping(ts=1)), "expected hello, got ping"),
        (encode_message(MESSAGES[3]), "expected hello, got push"),
        (b"{", "malformed JSON"),
        (frame(MESSAGES[0], holdings=None), "$.holdings"),
        (frame(MESSAGES[0], protocol_version=3), "unsupported protocol_version"),
    ],
)
def test_a_first_frame_must_be_a_hello(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_hello(raw)
    assert fragment in info.value.reason


def test_a_hello_is_read_as_the_first_frame() -> None:
    assert decode_hello(encode_message(MESSAGES[1])) == MESSAGES[1]
