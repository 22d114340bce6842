"""The newest version of each item a cache node serves and pushes, fetched once however asked.

An item's latest version comes from memory (the most recently used bodies, and the newest
version known of each item), else Cassandra, else the origin; one caller per item at a time
goes further than memory, so an item is fetched once however many commands want it. Once
content-updates names version N of an item, nothing older is served or pushed again, from
memory or Cassandra; the origin stays the truth when it serves an older one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TypeVar

from consumers.fetcher import Fetcher, FetchFailed, FetchRefused
from consumers.metrics import FETCH_SECONDS, NodeCounters
from consumers.store import ContentStore, StoredVersion
from consumers.writes import BackgroundWrites
from foresight.cassandra import CASSANDRA_DOWN

log = logging.getLogger(__name__)
_V = TypeVar("_V")


class BodyCache:
    """The most recently used bodies, so a popular item is read from Cassandra once."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: OrderedDict[tuple[str, int], StoredVersion] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def get(self, content_id: str, version: int) -> StoredVersion | None:
        item = self._items.get((content_id, version))
        if item is not None:
            self._items.move_to_end((content_id, version))
        return item

    def put(self, item: StoredVersion) -> None:
        key = (item.content_id, item.version)
        if key in self._items or item.body is None or len(item.body) > self._max:
            return
        self._items[key] = item
        self._bytes += len(item.body)
        while self._bytes > self._max:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old.body or b"")


class ContentVersions:
    """Each item's newest version with its body, over the node's store and origin fetcher."""

    def __init__(
        self,
        store: ContentStore,
        fetcher: Fetcher,
        writes: BackgroundWrites,
        counters: NodeCounters,
        *,
        body_cache_bytes: int = 64 * 1024 * 1024,
        latest_known: int = 100_000,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.writes = writes
        self.counters = counters
        self.bodies = BodyCache(body_cache_bytes)
        # One lock per item being loaded, with the count of its users: dropped when the last
        # one is done, so the map holds only items in flight, not every item ever asked for.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._latest_max = latest_known
        # The newest version this node knows of each item: with the body in the BodyCache, a
        # command for a known item costs no Cassandra read; content-updates make it stale.
        self._latest: OrderedDict[str, int] = OrderedDict()
        # The newest version content-updates announced of each item (same bound): anything older,
        # in memory or in Cassandra's content_latest, is stale and never served or pushed again.
        self._announced: OrderedDict[str, int] = OrderedDict()

    async def ensure(self, content_id: str, *, prefetch: bool = True) -> StoredVersion:
        """The item's latest version with its body: from memory, Cassandra or the origin.

        One caller per item at a time goes further than memory; the others wait for it, so an
        item is fetched once however many commands ask for it.
        """
        known = self._in_memory(content_id)
        if known is not None:
            return known
        lock, users = self._locks.setdefault(content_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                known = self._in_memory(content_id)
                if known is None:  # else: fetched by the caller we waited for
                    known = await self._load_or_fetch(content_id, prefetch=prefetch)
                    self._remember(content_id, known.version)
                return known
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[content_id]

    def _remember(self, content_id: str, version: int) -> None:
        """The newest version known of an item, for the most recent ``latest_known`` items
        (an item forgotten here is looked up in Cassandra again)."""
        bounded_put(self._latest, content_id, version, self._latest_max)

    def announce(self, content_id: str, version: int) -> None:
        """content-updates says ``version`` is out: older copies are stale from now on."""
        if version > self._announced.get(content_id, -1):
            bounded_put(self._announced, content_id, version, self._latest_max)

    def stale(self, content_id: str, version: int) -> bool:
        return version < self._announced.get(content_id, -1)

    def _origin_serves(self, content_id: str, version: int) -> None:
        """The origin, the truth, serves ``version`` now: if an update named a newer one it
        does not serve (yet), take what it serves rather than fetch again on every request."""
        if self.stale(content_id, version):
            log.warning(
                "content-updates named version %d of %s; the origin serves %d",
                self._announced[content_id],
                content_id,
                version,
            )
            self._announced[content_id] = version

    def newest_known(self, content_id: str) -> int | None:
        """The newest version of an item this node knows of without asking anyone."""
        known = max(self._latest.get(content_id, -1), self._announced.get(content_id, -1))
        return None if known < 0 else known

    def _in_memory(self, content_id: str) -> StoredVersion | None:
        version = self._latest.get(content_id)
        if version is None or self.stale(content_id, version):
            return None
        return self.bodies.get(content_id, version)

    async def kept(self, content_id: str, version: int) -> StoredVersion | None:
        """A version kept for an absent agent, or the newest one if an update made it stale."""
        if not self.stale(content_id, version):
            return self.bodies.get(content_id, version) or await self.store.version(
                content_id, version
            )
        try:
            return await self.ensure(content_id)
        except (FetchRefused, FetchFailed) as exc:
            log.warning("newest version of %s not fetched: %s", content_id, exc)
            return None

    async def _load_or_fetch(self, content_id: str, *, prefetch: bool) -> StoredVersion:
        try:
            latest = await self.store.latest(content_id)
            if latest is not None and not self.stale(content_id, latest.version):
                cached = self.bodies.get(content_id, latest.version)
                if cached is not None:
                    return cached
                stored = await self.store.version(content_id, latest.version)
                if stored is not None:
                    self.bodies.put(stored)
                    return stored
        except CASSANDRA_DOWN as exc:
            # Cassandra does not answer: the origin still does. Its version header keeps
            # versions consistent; an origin without one starts counting at 1 again.
            self.counters.store_failures += 1
            log.warning("store unavailable for %s, fetching from the origin: %r", content_id, exc)
            latest = None
        started = time.perf_counter()
        fetched = await self.fetcher.fetch(
            content_id, etag=latest.etag if latest else None, prefetch=prefetch
        )
        FETCH_SECONDS.labels("prefetch" if prefetch else "request").observe(
            time.perf_counter() - started
        )
        self.counters.fetches += 1
        if fetched.status == 304 and latest is not None:
            stored = await self.store.version(content_id, latest.version)
            if stored is not None:
                self._origin_serves(content_id, stored.version)
                self.bodies.put(stored)
                return stored
            fetched = await self.fetcher.fetch(content_id, prefetch=prefetch)
        version = fetched.version
        if version is None:  # an origin without versions: count ETag changes
            same = latest is not None and latest.etag == fetched.etag
            version = latest.version if same and latest else (latest.version + 1 if latest else 1)
        self._origin_serves(content_id, version)
        item = StoredVersion(
            content_id,
            version,
            fetched.digest,
            fetched.etag,
            fetched.content_type,
            len(fetched.body),
            fetched.body,
        )
        self.bodies.put(item)
        # Pushing does not wait for Cassandra: the body is in memory, and the write (tracked,
        # awaited at shutdown by drain()) lands while the push is on its way.
        await self.writes.start(self.store.put_version(item), f"put_version {content_id}")
        return item


def bounded_put(entries: OrderedDict[str, _V], key: str, value: _V, most: int) -> None:
    """Set ``key`` as the most recent entry, dropping the least recent beyond ``most``.

    >>> entries: OrderedDict[str, int] = OrderedDict(a=1, b=2)
    >>> bounded_put(entries, "a", 3, most=2); bounded_put(entries, "c", 4, most=2)
    >>> dict(entries)
    {'a': 3, 'c': 4}
    """
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > most:
        entries.popitem(last=False)
