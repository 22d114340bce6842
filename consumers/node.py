"""A cache node's work: prefetch commands in, content fetched and stored once, pushed to agents.

The node consumes the prefetch-commands partition of its ring slot. For each command it makes
sure the item's version is in Cassandra (fetching it from the origin only when it is not, and
only once however many clients want it: consumers.versions); if the command's probability is
worth the item's size (foresight.push_rule), it pushes it to the client's agent when it is
connected and does not already hold that version, or keeps it for the agent's next connect.
Content updates reach every agent holding an older version. Nothing here knows about Kafka,
HTTP or WebSockets: consumers.intake feeds it, consumers.agent_socket and consumers.web serve it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

from consumers.fetcher import Fetcher, FetchFailed, FetchRefused, NotAtOrigin
from consumers.metrics import CLICK_TO_PUSH_SECONDS, PUSHES, NodeCounters
from consumers.sessions import AgentSession, SessionRegistry
from consumers.store import ContentStore, StoredVersion
from consumers.versions import ContentVersions, bounded_put
from consumers.writes import HOLDINGS_PER_WRITE, BackgroundWrites
from foresight.cassandra import CASSANDRA_DOWN
from foresight.push_rule import worth_its_bytes
from schemas import ContentUpdate, PrefetchCommand
from schemas.protocol import Invalidate, Push, Update, encode_message

# bench/e2e.py reads HOLDINGS_PER_WRITE from here; it lives with the writes.
__all__ = ["HOLDINGS_LOOKED_UP", "HOLDINGS_PER_WRITE", "SHED_OUTCOMES", "CacheNode"]

log = logging.getLogger(__name__)

#: What CacheNode.shed answers for a command not worth any work any more (metric outcomes).
SHED_OUTCOMES = ("superseded", "late")
#: Hello holdings unknown to the node whose latest version is read from Cassandra on connect:
#: a hello lists up to 10,000, most recently used first; these are the ones likely used again.
HOLDINGS_LOOKED_UP = 256


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
        self.sessions = sessions
        self.counters = NodeCounters()
        self.writes = BackgroundWrites(store, self.counters)
        self.versions = ContentVersions(
            store,
            fetcher,
            self.writes,
            self.counters,
            body_cache_bytes=body_cache_bytes,
            latest_known=latest_known,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_commands
        # Each client's newest click among the commands read (bounded like the command ids).
        self._newest_click: OrderedDict[str, float] = OrderedDict()
        # Commands of a click older than this are shed (None: never for their age).
        self.shed_after_s = shed_after_s
        self.push_times: list[tuple[float, float]] = []  # (event ts, pushed at), for latency

    async def ensure(self, content_id: str, *, prefetch: bool = True) -> StoredVersion:
        """The item's latest version with its body (ContentVersions.ensure)."""
        return await self.versions.ensure(content_id, prefetch=prefetch)

    @property
    def writes_in_flight(self) -> int:
        return self.writes.in_flight

    async def drain(self) -> None:
        """Write the holdings still waiting, and wait for every write on its way to Cassandra."""
        await self.writes.drain()

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
                    bounded_put(
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
            await self.writes.start(
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
        self.writes.hold(client_id, item)
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
                item = await self.versions.kept(content_id, version)
                if item is not None and self.push(session, item):
                    await self.store.record_holding(session.client_id, item)
                    delivered += 1
            await self.store.clear_pending(session.client_id, content_id)
        return delivered + await self.refresh_holdings(session)

    async def on_update(self, update: ContentUpdate, owns: set[str] | None = None) -> int:
        """A new version at the origin: from now on this node serves and pushes nothing older,
        whoever held the item; it loads the new version (so Cassandra's content_latest moves even
        when nobody holds the item) and sends it as an update to every agent of this node that
        holds an older one, from its hello or from pushes (and to no other agent)."""
        content_id = update.content_id
        self.versions.announce(content_id, update.version)
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
            await self.writes.start(
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
            known = self.versions.newest_known(content_id)
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
                self.writes.hold(session.client_id, item)
                sent += 1
        self.counters.updates += sent
        return sent
