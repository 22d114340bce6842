"""A cache node's work: prefetch commands in, content fetched and stored once, pushed to agents.

The node consumes the prefetch-commands partition of its ring slot. For each command it makes
sure the item's version is in Cassandra (fetching it from the origin only when it is not, and
only once however many clients want it); if the command's probability is worth the item's size
(foresight.push_rule), it pushes it to the client's agent when it is connected and does not
already hold that version, or keeps it for the agent's next connect.
Content updates reach every agent holding an older version. Nothing here knows about HTTP or
WebSockets: `consumers.server` wires it to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from consumers.fetcher import Fetcher, FetchFailed, FetchRefused, NotAtOrigin
from consumers.metrics import CLICK_TO_PUSH_SECONDS, FETCH_SECONDS, PUSHES
from consumers.sessions import AgentSession, SessionRegistry
from consumers.store import ContentStore, StoredVersion
from foresight.cassandra import CASSANDRA_DOWN
from foresight.push_rule import worth_its_bytes
from schemas import ContentUpdate, PrefetchCommand
from schemas.protocol import Invalidate, Push, Update, encode_message

log = logging.getLogger(__name__)
_V = TypeVar("_V")

#: Cassandra writes a node lets run without waiting for them (see CacheNode._background).
MAX_BACKGROUND_WRITES = 2000
#: Holdings written together: pushes come in bursts (a click's commands), and a request per
#: push cost the node's Cassandra thread, and the GIL it shares with the event loop, more than
#: the pushes. Five (client, item) pairs span at most ten partitions, Cassandra's threshold for
#: warning about an unlogged batch.
HOLDINGS_PER_WRITE = 5
#: How long a holding waits for others to share its write.
HOLDINGS_WAIT_S = 0.05
#: What CacheNode.shed answers for a command not worth any work any more (metric outcomes).
SHED_OUTCOMES = ("superseded", "late")
#: Hello holdings unknown to the node whose latest version is read from Cassandra on connect:
#: a hello lists up to 10,000, most recently used first; these are the ones likely used again.
HOLDINGS_LOOKED_UP = 256


@dataclass
class NodeCounters:
    commands: int = 0
    expired: int = 0
    duplicates: int = 0
    refused: int = 0
    departed: int = 0
    fetch_failures: int = 0
    fetches: int = 0
    pushes: int = 0
    already_held: int = 0
    not_worth_bytes: int = 0
    pending: int = 0
    updates: int = 0
    invalidations: int = 0
    superseded: int = 0
    late: int = 0
    store_failures: int = 0


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


class CacheNode:
    """The node's content logic over its store, fetcher and connected agents."""

    def __init__(
        self,
        node_id: str,
        store: ContentStore,
        fetcher: Fetcher,
        sessions: SessionRegistry,
        *,
        seen_commands: int = 100_000,
        push_bytes_per_odds: float | None = None,
        body_cache_bytes: int = 64 * 1024 * 1024,
        latest_known: int = 100_000,
        shed_after_s: float | None = None,
    ) -> None:
        self.node_id = node_id
        # K of the push rule (foresight.push_rule); None: every commanded item is pushed.
        self.push_bytes_per_odds = push_bytes_per_odds
        self.store = store
        self.fetcher = fetcher
        self.sessions = sessions
        self.bodies = BodyCache(body_cache_bytes)
        self.counters = NodeCounters()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_commands
        # Each client's newest click among the commands read (bounded like the command ids).
        self._newest_click: OrderedDict[str, float] = OrderedDict()
        # Commands of a click older than this are shed (None: never for their age).
        self.shed_after_s = shed_after_s
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
        self.push_times: list[tuple[float, float]] = []  # (event ts, pushed at), for latency
        self._writes: set[asyncio.Task[None]] = set()
        self._held: dict[tuple[str, str], StoredVersion] = {}  # holdings waiting for a write
        self._held_flush: asyncio.Task[None] | None = None

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
        _bounded_put(self._latest, content_id, version, self._latest_max)

    def _announce(self, content_id: str, version: int) -> None:
        """content-updates says ``version`` is out: older copies are stale from now on."""
        if version > self._announced.get(content_id, -1):
            _bounded_put(self._announced, content_id, version, self._latest_max)

    def _stale(self, content_id: str, version: int) -> bool:
        return version < self._announced.get(content_id, -1)

    def _origin_serves(self, content_id: str, version: int) -> None:
        """The origin, the truth, serves ``version`` now: if an update named a newer one it
        does not serve (yet), take what it serves rather than fetch again on every request."""
        if self._stale(content_id, version):
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
        if version is None or self._stale(content_id, version):
            return None
        return self.bodies.get(content_id, version)

    async def _load_or_fetch(self, content_id: str, *, prefetch: bool) -> StoredVersion:
        try:
            latest = await self.store.latest(content_id)
            if latest is not None and not self._stale(content_id, latest.version):
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
        await self._background(self.store.put_version(item), f"put_version {content_id}")
        return item

    async def _background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run a Cassandra write without waiting for it; with MAX_BACKGROUND_WRITES already on
        their way, wait for one of them first (so a slow Cassandra slows commands down rather
        than letting writes pile up in memory)."""
        while len(self._writes) >= MAX_BACKGROUND_WRITES:
            await asyncio.wait(self._writes, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(work, name=what)
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters.store_failures += 1
            log.warning("%s failed: %r", task.get_name(), task.exception())

    @property
    def writes_in_flight(self) -> int:
        return len(self._writes)

    async def drain(self) -> None:
        """Write the holdings still waiting, and wait for every write on its way to Cassandra."""
        if self._held_flush is not None:
            self._held_flush.cancel()
            self._held_flush = None
        await self._write_holdings()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _hold(self, client_id: str, item: StoredVersion) -> None:
        """Record that the client's agent holds ``item``, in a write shared with the holdings
        of the next HOLDINGS_WAIT_S."""
        self._held[(client_id, item.content_id)] = item
        if self._held_flush is None:
            self._held_flush = asyncio.create_task(self._flush_holdings_soon())

    async def _flush_holdings_soon(self) -> None:
        await asyncio.sleep(HOLDINGS_WAIT_S)
        self._held_flush = None
        await self._write_holdings()

    async def _write_holdings(self) -> None:
        held, self._held = list(self._held.items()), {}
        for start in range(0, len(held), HOLDINGS_PER_WRITE):
            pairs = [
                (client, item) for (client, _), item in held[start : start + HOLDINGS_PER_WRITE]
            ]
            await self._background(
                self.store.record_holdings(pairs), f"record_holdings {len(pairs)}"
            )

    def _first_time(self, command_id: str) -> bool:
        if command_id in self._seen:
            return False
        self._seen[command_id] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        return True

    def note_clicks(self, commands: Iterable[PrefetchCommand]) -> None:
        """Commands just read from Kafka: remember each client's newest click, so that the
        commands of its older clicks still waiting are known to be superseded."""
        for command in commands:
            if command.event_ts is not None:
                newest = self._newest_click.get(command.client_id)
                if newest is None or command.event_ts > newest:
                    _bounded_put(
                        self._newest_click, command.client_id, command.event_ts, self._seen_max
                    )

    def shed(self, command: PrefetchCommand, now: float) -> str | None:
        """Why a command is not worth any work any more, or None. Under load the commands
        queue up; these are shed first (counted, never silently), so the node spends itself on
        what can still help and a person's request never waits behind prefetch work for a
        prediction that is already wrong:

        - ``superseded``: its client clicked again since (a newer click's commands were read):
          the prediction was about what follows a click that is no longer the last one;
        - ``late``: its click is older than ``shed_after_s`` (the next click has likely come).
        """
        if command.event_ts is None:
            return None
        if command.event_ts < self._newest_click.get(command.client_id, command.event_ts):
            self.counters.superseded += 1
            return "superseded"
        if self.shed_after_s is not None and now - command.event_ts > self.shed_after_s:
            self.counters.late += 1
            return "late"
        return None

    async def on_command(self, command: PrefetchCommand, now: float) -> str:
        """Carry out one prefetch command; returns what happened, for counting and logs."""
        self.counters.commands += 1
        if not self._first_time(command.command_id):
            self.counters.duplicates += 1
            return "duplicate"
        if command.expires_at < now:
            self.counters.expired += 1
            return "expired"
        if self.sessions.departed(command.client_id):
            # Its agent said goodbye: no fetch, no push and nothing kept for a next connect.
            self.counters.departed += 1
            return "departed"
        try:
            item = await self.ensure(command.content_id)
        except FetchRefused as exc:
            self.counters.refused += 1
            log.info("refused %s for %s: %s", command.content_id, command.client_id, exc)
            return "refused"
        except FetchFailed as exc:
            self.counters.fetch_failures += 1
            log.warning("fetch failed for %s: %s", command.content_id, exc)
            return "fetch-failed"
        # Only here is the size known: the worker predicts without it.
        if not worth_its_bytes(command.probability, item.size, self.push_bytes_per_odds):
            self.counters.not_worth_bytes += 1
            return "not-worth-bytes"
        return await self.deliver(command.client_id, item, command=command)

    async def deliver(
        self,
        client_id: str,
        item: StoredVersion,
        *,
        command: PrefetchCommand | None = None,
        previous_version: int | None = None,
    ) -> str:
        """Push an item to the client's agent, or keep it for the agent's next connect."""
        session = self.sessions.get(client_id)
        if session is None:
            await self._background(
                self.store.queue_pending(client_id, item.content_id, item.version),
                f"queue_pending {client_id} {item.content_id}",
            )
            self.counters.pending += 1
            return "pending"
        if session.holdings.get(item.content_id, -1) >= item.version:
            self.counters.already_held += 1
            return "already-held"
        if not self.push(session, item, command=command, previous_version=previous_version):
            return "agent-closed"
        # The agent's hello is the truth about what it holds; this row is for content updates
        # and inspection, so the push does not wait for it.
        self._hold(client_id, item)
        return "pushed"

    def push(
        self,
        session: AgentSession,
        item: StoredVersion,
        *,
        command: PrefetchCommand | None = None,
        previous_version: int | None = None,
    ) -> bool:
        assert item.body is not None
        now = time.time()
        if previous_version is not None:
            frame = encode_message(
                Update(
                    content_id=item.content_id,
                    version=item.version,
                    digest=item.digest,
                    content_type=item.content_type,
                    body=item.body,
                    pushed_at=now,
                    previous_version=previous_version,
                )
            )
        else:
            frame = encode_message(
                Push(
                    content_id=item.content_id,
                    version=item.version,
                    digest=item.digest,
                    content_type=item.content_type,
                    body=item.body,
                    pushed_at=now,
                    command_id=command.command_id if command else None,
                    probability=command.probability if command else None,
                    event_ts=command.event_ts if command else None,
                )
            )
        if not session.offer(frame):
            return False
        session.holdings[item.content_id] = item.version
        self.counters.pushes += 1
        PUSHES.labels("update" if previous_version is not None else "push").inc()
        if command is not None and command.event_ts is not None:
            CLICK_TO_PUSH_SECONDS.observe(max(0.0, now - command.event_ts))
            self.push_times.append((command.event_ts, now))
            del self.push_times[:-10_000]
        return True

    async def deliver_pending(self, session: AgentSession) -> int:
        """On connect: push what was kept for this agent while it was away (at the newest
        version), then the newer versions of what its hello lists (refresh_holdings)."""
        delivered = 0
        try:
            pending = await self.store.pending(session.client_id)
        except CASSANDRA_DOWN as exc:
            # The agent is welcome all the same; its pending rows wait for its next connect.
            self.counters.store_failures += 1
            log.warning("store unavailable, pending for %s kept: %r", session.client_id, exc)
            pending = {}
        for content_id, version in pending.items():
            if session.holdings.get(content_id, -1) < version:
                item = await self._kept(content_id, version)
                if item is not None and self.push(session, item):
                    await self.store.record_holding(session.client_id, item)
                    delivered += 1
            await self.store.clear_pending(session.client_id, content_id)
        return delivered + await self.refresh_holdings(session)

    async def _kept(self, content_id: str, version: int) -> StoredVersion | None:
        """A version kept for an absent agent, or the newest one if an update made it stale."""
        if not self._stale(content_id, version):
            return self.bodies.get(content_id, version) or await self.store.version(
                content_id, version
            )
        try:
            return await self.ensure(content_id)
        except (FetchRefused, FetchFailed) as exc:
            log.warning("newest version of %s not fetched: %s", content_id, exc)
            return None

    async def on_update(self, update: ContentUpdate, owns: set[str] | None = None) -> int:
        """A new version at the origin: from now on this node serves and pushes nothing older,
        whoever held the item; it loads the new version (so Cassandra's content_latest moves even
        when nobody holds the item) and sends it as an update to every agent of this node that
        holds an older one, from its hello or from pushes (and to no other agent)."""
        content_id = update.content_id
        self._announce(content_id, update.version)
        try:
            holders = await self.store.holders(content_id)
        except CASSANDRA_DOWN as exc:
            # The connected agents' hellos and pushes still say who holds what here.
            self.counters.store_failures += 1
            log.warning("holders of %s unknown, updating connected agents: %r", content_id, exc)
            holders = {}
        for session in self.sessions.all():  # a hello's holdings are known here alone
            held = session.holdings.get(content_id)
            if held is not None:
                holders[session.client_id] = held
        try:
            item = await self.ensure(content_id)
        except NotAtOrigin as exc:
            log.info("%s is gone from the origin (%s): invalidating its copies", content_id, exc)
            return await self._invalidate(content_id, holders, owns)
        except (FetchRefused, FetchFailed) as exc:
            log.warning("update of %s not fetched: %s", content_id, exc)
            return 0
        sent = 0
        for client_id, held in holders.items():
            if held < item.version and (owns is None or client_id in owns):
                outcome = await self.deliver(client_id, item, previous_version=held)
                sent += outcome == "pushed"
        self.counters.updates += sent
        return sent

    async def _invalidate(
        self, content_id: str, holders: dict[str, int], owns: set[str] | None
    ) -> int:
        """The origin no longer has the item: every holder of this node drops its copy."""
        sent = 0
        frame = encode_message(Invalidate(content_id=content_id, reason="gone from the origin"))
        for client_id in holders:
            if owns is not None and client_id not in owns:
                continue
            session = self.sessions.get(client_id)
            if session is not None and session.offer(frame):
                session.holdings.pop(content_id, None)
                sent += 1
            await self._background(
                self.store.drop_holding(client_id, content_id), f"drop_holding {content_id}"
            )
        self.counters.invalidations += sent
        return sent

    async def refresh_holdings(self, session: AgentSession) -> int:
        """On connect: send an update for each item the agent's hello lists at a version older
        than one this node knows of (the agent was away when content-updates reported it).

        Items this node has no memory of are looked up in Cassandra's content_latest, for the
        agent's HOLDINGS_LOOKED_UP most recently used ones (a hello lists those first)."""
        stale: dict[str, int] = {}
        unknown: list[str] = []
        for content_id, held in session.holdings.items():
            known = self.newest_known(content_id)
            if known is None:
                unknown.append(content_id)
            elif held < known:
                stale[content_id] = held
        lookups = unknown[:HOLDINGS_LOOKED_UP]
        try:
            latest = await asyncio.gather(*(self.store.latest(c) for c in lookups))
        except CASSANDRA_DOWN as exc:
            self.counters.store_failures += 1
            log.warning("store unavailable, holdings of %s not checked: %r", session.client_id, exc)
            latest = []
        for content_id, stored in zip(lookups, latest, strict=False):
            if stored is not None and session.holdings[content_id] < stored.version:
                stale[content_id] = session.holdings[content_id]
        sent = 0
        for content_id, held in stale.items():
            try:
                item = await self.ensure(content_id)
            except (FetchRefused, FetchFailed) as exc:
                log.warning("newer version of %s not fetched: %s", content_id, exc)
                continue
            if held < item.version and self.push(session, item, previous_version=held):
                self._hold(session.client_id, item)
                sent += 1
        self.counters.updates += sent
        return sent


def _bounded_put(entries: OrderedDict[str, _V], key: str, value: _V, most: int) -> None:
    """Set ``key`` as the most recent entry, dropping the least recent beyond ``most``."""
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > most:
        entries.popitem(last=False)
