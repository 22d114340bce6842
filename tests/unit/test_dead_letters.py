"""A dead letter always fits in a Kafka message, and still says what it stands for.

The broker takes about 1 MiB a record; the dead letter of a record close to that limit (base64
grows it by a third) must not be refused, or the record it stands for is lost uncounted.
"""

from __future__ import annotations

import doctest
import hashlib

import schemas.records
from schemas import DeadLetter, decode, encode

KAFKA_MESSAGE_LIMIT = 1_000_000  # librdkafka's and Faust's producer default, under the broker's


def _letter(
    value: bytes | None, key: bytes | None = b"client-1", reason: str = "bad"
) -> DeadLetter:
    return DeadLetter.of(
        topic="interactions",
        partition=3,
        offset=41,
        key=key,
        value=value,
        reason=reason,
        rejected_by="worker-0",
        ts=1_700_000_000.0,
    )


def test_the_dead_letter_of_a_megabyte_value_fits_and_keeps_its_size_and_digest() -> None:
    value = (bytes(range(256)) * 3907)[:1_000_000]
    raw = encode(_letter(value))
    assert len(raw) < KAFKA_MESSAGE_LIMIT // 8  # well under, whatever the rest of the record
    letter = decode(DeadLetter, raw)
    assert letter.value_size == 1_000_000
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.value == value[: 64 * 1024]  # the first bytes, to see what it was
    assert (letter.topic, letter.partition, letter.offset) == ("interactions", 3, 41)


def test_a_small_record_is_kept_whole_with_its_size_and_digest() -> None:
    letter = decode(DeadLetter, encode(_letter(b'{"event_id": 1}')))
    assert letter.value == b'{"event_id": 1}'
    assert letter.value_size == 15
    assert letter.value_sha256 == hashlib.sha256(b'{"event_id": 1}').hexdigest()
    assert letter.key == b"client-1" and letter.key_size == 8


def test_a_missing_value_or_key_is_an_empty_value_and_no_key() -> None:
    letter = decode(DeadLetter, encode(_letter(None, key=None)))
    assert letter.value == b"" and letter.value_size == 0
    assert letter.value_sha256 == hashlib.sha256(b"").hexdigest()
    assert letter.key is None and letter.key_size is None


def test_a_long_key_is_cut_and_its_size_kept() -> None:
    letter = decode(DeadLetter, encode(_letter(b"v", key=b"k" * 5000)))
    assert letter.key == b"k" * 1024
    assert letter.key_size == 5000


def test_a_long_reason_is_cut_with_an_ellipsis() -> None:
    reason = "engine error: " + "\x00é" * 100_000
    letter = decode(DeadLetter, encode(_letter(b"v", reason=reason)))
    assert len(letter.reason) == 1024
    assert letter.reason.startswith("engine error: ") and letter.reason.endswith("…")
    assert len(encode(letter)) < 16 * 1024


def test_an_empty_reason_still_gives_a_readable_letter() -> None:
    letter = decode(DeadLetter, encode(_letter(b"v", reason="")))
    assert letter.reason


def test_a_dead_letter_written_before_the_size_fields_still_decodes() -> None:
    older = (
        b'{"schema_version":1,"topic":"interactions","partition":0,"offset":5,"key":null,'
        b'"value":"eyJ9","reason":"malformed JSON","rejected_by":"publisher","ts":5.0}'
    )
    letter = decode(DeadLetter, older)
    assert letter.value == b'{"}'
    assert letter.value_size is None and letter.value_sha256 is None and letter.key_size is None


def test_the_builders_example_runs() -> None:
    assert doctest.testmod(schemas.records).failed == 0
