"""The agent's local cache: content bodies bounded in total bytes, least recently used out first.

Pure and synchronous: the agent's connection loop puts what the node pushes and its ``get``
reads here first. Every body is checked against its SHA-256 digest before it is kept, so a
corrupted or tampered push is never served. Only body bytes count towards ``max_bytes``.

Each prefetched entry ends in exactly one feedback outcome, which keeps the node's precision
honest: ``hit`` at its first ``get`` (``Entry.hits == 1``); ``unused`` when it is dropped never
used (evicted, replaced or invalidated, reported through ``on_drop``); ``expired`` when
``unused_expired`` takes it out. Entries fetched on demand after a miss (``prefetched=False``)
owe no prefetch feedback.

>>> from schemas.protocol import digest
>>> cache = LocalCache(max_bytes=10)
>>> cache.put("a", 1, digest(b"123456"), "text/plain", b"123456", pushed_at=0.0)
True
>>> cache.put("b", 1, digest(b"bad"), "text/plain", b"tampered", pushed_at=0.0)
False
>>> cache.put("c", 1, digest(b"7890"), "text/plain", b"7890", pushed_at=0.0)
True
>>> cache.get("a").hits, cache.size_bytes
(1, 10)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from schemas.protocol import digest as sha256_digest

DropReason = Literal["evicted", "replaced", "invalidated"]


@dataclass(slots=True, eq=False)
class Entry:
    """One version of one content item, held locally."""

    content_id: str
    version: int
    digest: str
    content_type: str
    body: bytes = field(repr=False)
    #: When the node pushed it (or the agent fetched it), seconds since the epoch.
    pushed_at: float
    #: Pushed by the node ahead of need, rather than fetched after a miss.
    prefetched: bool = True
    #: Requests answered from this entry.
    hits: int = 0

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def used(self) -> bool:
        return self.hits > 0


class HeldVersion(NamedTuple):
    """What a hello lists for one held item."""

    content_id: str
    version: int
    digest: str


class LocalCache:
    """An LRU of content bodies whose sizes never add up to more than ``max_bytes``.

    ``on_drop(entry, reason)`` is called for every entry that leaves other than through
    ``unused_expired``, after the cache is consistent again; it must not raise. All operations
    are O(1) except ``holdings`` and ``unused_expired``, which visit every entry.
    """

    def __init__(
        self, max_bytes: int, *, on_drop: Callable[[Entry, DropReason], None] | None = None
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._max_bytes = max_bytes
        self._on_drop = on_drop
        # Least recently used first.
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._size = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def size_bytes(self) -> int:
        """Sum of the held bodies' lengths."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._entries

    def put(
        self,
        content_id: str,
        version: int,
        digest: str,
        content_type: str,
        body: bytes,
        *,
        pushed_at: float,
        prefetched: bool = True,
    ) -> bool:
        """Keep ``body`` as ``version`` of ``content_id``; say whether it is held now.

        Refused (False, nothing changes) when the body does not match its digest or when a
        newer version is held. The same version and digest again only refreshes recency. A
        newer version replaces the held one; if it is larger than the whole cache it is refused
        and the outdated version is dropped all the same. Least recently used entries are
        evicted until the body fits.
        """
        if sha256_digest(body) != digest:
            return False
        held = self._entries.get(content_id)
        if held is not None:
            if version < held.version:
                return False
            if version == held.version and digest == held.digest:
                self._entries.move_to_end(content_id)
                return True
        dropped: list[tuple[Entry, DropReason]] = []
        if held is not None:
            dropped.append((self._remove(content_id), "replaced"))
        fits = len(body) <= self._max_bytes
        if fits:
            while self._size + len(body) > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= evicted.size
                dropped.append((evicted, "evicted"))
            self._entries[content_id] = Entry(
                content_id=content_id,
                version=version,
                digest=digest,
                content_type=content_type,
                body=body,
                pushed_at=pushed_at,
                prefetched=prefetched,
            )
            self._size += len(body)
        self._notify(dropped)
        return fits

    def get(self, content_id: str) -> Entry | None:
        """The held entry, counted as a hit and made most recently used; None on a miss."""
        entry = self._entries.get(content_id)
        if entry is not None:
            entry.hits += 1
            self._entries.move_to_end(content_id)
        return entry

    def peek(self, content_id: str) -> Entry | None:
        """The held entry without counting a hit or touching its recency."""
        return self._entries.get(content_id)

    def entries(self) -> list[Entry]:
        """Every held entry, least recently used first (for accounting; not counted as hits)."""
        return list(self._entries.values())

    def holdings(self) -> list[HeldVersion]:
        """What the agent holds, most recently used first (a truncated hello keeps the best)."""
        return [
            HeldVersion(e.content_id, e.version, e.digest) for e in reversed(self._entries.values())
        ]

    def invalidate(self, content_id: str, version: int | None = None) -> bool:
        """Drop ``content_id`` if held at ``version`` or older (any version when None)."""
        held = self._entries.get(content_id)
        if held is None or (version is not None and held.version > version):
            return False
        self._notify([(self._remove(content_id), "invalidated")])
        return True

    def unused_expired(self, now: float, ttl_s: float) -> list[Entry]:
        """Take out and return the prefetched entries never used within ``ttl_s`` of their push.

        Each is returned once, for an ``expired`` feedback; ``on_drop`` is not called for them.
        """
        expired = [
            e
            for e in self._entries.values()
            if e.prefetched and not e.used and e.pushed_at + ttl_s <= now
        ]
        for entry in expired:
            self._remove(entry.content_id)
        return expired

    def _remove(self, content_id: str) -> Entry:
        entry = self._entries.pop(content_id)
        self._size -= entry.size
        return entry

    def _notify(self, dropped: list[tuple[Entry, DropReason]]) -> None:
        if self._on_drop is not None:
            for entry, reason in dropped:
                self._on_drop(entry, reason)
