"""The collector reads both body formats and tells a batch from garbage."""

from __future__ import annotations

import pytest

from producers.collector import split_body, validate_item
from schemas import InvalidRecord


def test_json_array() -> None:
    assert split_body(b'[{"a": 1}, {"b": 2}]', "application/json") == [{"a": 1}, {"b": 2}]


def test_ndjson_lines_are_kept_raw() -> None:
    assert split_body(b'{"a": 1}\n\n{"b": 2}\n', "application/x-ndjson") == [
        b'{"a": 1}',
        b'{"b": 2}',
    ]


@pytest.mark.parametrize("body", [b"[1, 2", b'{"a": 1}'])
def test_garbage_is_not_an_array(body: bytes) -> None:
    result = split_body(body, "application/json")
    assert result is None or all(isinstance(item, bytes) for item in result)


def test_each_item_is_validated_alone() -> None:
    with pytest.raises(InvalidRecord):
        validate_item(b"not json")
    with pytest.raises(InvalidRecord):
        validate_item({"event_id": "x"})
