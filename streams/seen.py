"""What a client requested before, in a few bytes per item: a scalable Bloom filter.

A returning client's ranking asks of each candidate whether the client requested it in an
earlier session (on a news site people come back to pages; nobody rates a film twice: the
re-ranker learns which, see :mod:`streams.ranking`). The answer must come from the client's
record, whose p99 is held under 4 KiB, while a client of years has requested thousands of
items: their ids would take 5 to 11 bytes each. A Bloom filter takes ~1.25 bytes an item for
about 1 % false positives and never a false negative.

The filter grows with the client: a list of filters, the first :data:`FIRST_BYTES` long and each
next twice the last, a new one started when the newest holds ``bits / BITS_PER_ITEM`` items;
an item is in the set when any filter has all its :data:`HASHES` bits. Bits come from an 8-byte
BLAKE2b digest (the same in every process and on every machine, unlike ``hash()``; two CRC-32s
with different seeds are too alike for double hashing: 12 % false positives where 1 % was due),
split into two halves and double hashed.

>>> filters, count = add([], 0, "a")
>>> contains(filters, "a"), contains(filters, "b"), count
(True, False, 1)
"""

from __future__ import annotations

from hashlib import blake2b

#: The first filter's size; each next one is twice the last.
FIRST_BYTES = 32
#: Bits per item a filter holds before the next one starts (about 1 % false positives).
BITS_PER_ITEM = 10
#: Bits set per item.
HASHES = 4


def _positions(item: str, bits: int) -> list[int]:
    digest = blake2b(item.encode(), digest_size=8).digest()
    first = int.from_bytes(digest[:4], "little")
    step = int.from_bytes(digest[4:], "little") | 1  # odd: every position reachable
    return [(first + j * step) % bits for j in range(HASHES)]


def contains(filters: list[bytes], item: str) -> bool:
    """Whether ``item`` was added (false positives at about 1 % a filter, never negatives)."""
    for bloom in filters:
        bits = len(bloom) * 8
        if all(bloom[p >> 3] >> (p & 7) & 1 for p in _positions(item, bits)):
            return True
    return False


def add(filters: list[bytes], count: int, item: str) -> tuple[list[bytes], int]:
    """The filters with ``item`` in them, and how many items they hold (an item already in
    them is not counted again)."""
    if contains(filters, item):
        return filters, count
    newest_holds = len(filters[-1]) * 8 // BITS_PER_ITEM if filters else 0
    held_before = sum(len(f) * 8 // BITS_PER_ITEM for f in filters[:-1])
    if not filters or count - held_before >= newest_holds:
        size = FIRST_BYTES if not filters else len(filters[-1]) * 2
        filters = [*filters, bytes(size)]
    bloom = bytearray(filters[-1])
    for p in _positions(item, len(bloom) * 8):
        bloom[p >> 3] |= 1 << (p & 7)
    return [*filters[:-1], bytes(bloom)], count + 1
