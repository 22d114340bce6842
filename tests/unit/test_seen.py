"""A client's "requested before" filter: never forgets, rarely imagines, stays small."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.seen import add, contains


def fill(items: list[str]) -> tuple[list[bytes], int]:
    filters: list[bytes] = []
    count = 0
    for item in items:
        filters, count = add(filters, count, item)
    return filters, count


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), max_size=300))
def test_every_item_added_is_found_again(items: list[str]) -> None:
    filters, count = fill(items)
    assert all(contains(filters, item) for item in items)
    assert count <= len(set(items))


def test_a_client_of_thousands_of_items_takes_under_two_bytes_an_item_and_few_false_hits() -> None:
    items = [f"item-{n}" for n in range(3000)]
    filters, count = fill(items)
    size = len(msgspec.msgpack.encode(filters))
    assert count >= 2700  # a false positive on the way in is not counted again
    assert size <= 1.5 * len(items)  # ids alone would take 9 bytes each
    strangers = [f"other-{n}" for n in range(20_000)]
    false_hits = sum(contains(filters, item) for item in strangers)
    assert false_hits / len(strangers) < 0.09  # ~1.2 % per filter, 7 filters


def test_the_same_items_give_the_same_bytes_in_every_process() -> None:
    """BLAKE2b, not hash(): a record written by one worker is read right by another."""
    filters, _ = fill(["a", "b", "c"])
    expected = "1000004000008000010002000008000010000048000000000000020000004000"
    assert [bloom.hex() for bloom in filters] == [expected]
