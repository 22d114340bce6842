"""One cache node process: its parts, its supervised background work, its arrival and leaving.

A :class:`NodeProcess` holds the node's agents (sessions), its view of the ring (ownership),
its Kafka producer (outbox), the gate that puts requests before prefetches, the content
logic (:class:`consumers.node.CacheNode`, given once Cassandra and the origin are reached) and
the supervisor of its background tasks: the two consume loops (consumers.intake), the ring
heartbeat and the watch over the ring-membership reader. The web handlers reach it as
``request.app[NODE]``; consumers.server builds it and runs it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web

from consumers.gate import RequestGate
from consumers.intake import Intake
from consumers.metrics import AGENTS, PRODUCER_QUEUE, QUEUED, RING_MEMBERS, STORE_WRITES
from consumers.node import CacheNode
from consumers.outbox import Outbox
from consumers.ownership import NodeConfig, Ownership, ws_url
from consumers.sessions import SessionRegistry
from consumers.supervisor import FAILURE_GRACE_S, Supervisor
from foresight.membership import MembershipWatcher
from foresight.settings import Settings
from schemas.protocol import CloseCode, Redirect, encode_message

HEARTBEAT_S = 3.0
#: How long a leaving node waits to see its own leaving record before redirecting its agents.
LEAVE_SEEN_S = 3.0
#: How long the ring-membership reader's thread can be dead before the node notices.
RING_READER_CHECK_S = 1.0
#: How long the ring reader may take at start to read the membership topic to its end.
RING_CATCH_UP_S = 30.0
#: How long the producer may take to hand Kafka what is queued, at a leave and at the end.
FLUSH_S = 10.0

#: The supervised tasks, by the name /healthz and the logs give them.
COMMANDS_TASK = "prefetch-commands consumer"
UPDATES_TASK = "content-updates consumer"
HEARTBEAT_TASK = "ring heartbeat"
RING_READER_TASK = "ring-membership reader"


class NodeProcess:
    """Everything one node process holds, started and stopped by the app's cleanup context.

    ``on_failure`` is called when a supervised task failed FAILURE_GRACE_S ago (the server
    stops the process then); without it, a failure only makes the node unhealthy.
    """

    def __init__(
        self,
        settings: Settings,
        config: NodeConfig,
        *,
        on_failure: Callable[[], None] | None = None,
        grace_s: float = FAILURE_GRACE_S,
    ) -> None:
        self.settings = settings
        self.config = config
        self.secrets = settings.agent_token_secrets
        self.sessions = SessionRegistry()
        self.ring = MembershipWatcher(settings)
        self.ownership = Ownership(self.ring, config.node_id)
        self.supervisor = Supervisor(on_failure, grace_s)
        self.outbox = Outbox(settings, config, self.sessions, self._producer_failed)
        self.gate = RequestGate()
        self.node: CacheNode
        self._stop = threading.Event()

    def _producer_failed(self, reason: str) -> None:
        self.supervisor.fail("kafka producer", reason)

    async def start(self, node: CacheNode) -> None:
        """Join the ring and start the supervised background work over ``node``."""
        self.node = node
        self.outbox.loop = asyncio.get_running_loop()
        self.ring.start()
        self.outbox.announce("up")
        await asyncio.to_thread(self.ring.wait_caught_up, RING_CATCH_UP_S)
        intake = Intake(
            self.settings,
            self.config,
            node,
            gate=self.gate,
            ownership=self.ownership,
            sessions=self.sessions,
            outbox=self.outbox,
            stop=self._stop,
        )
        self.supervisor.watch(COMMANDS_TASK, intake.consume_commands())
        self.supervisor.watch(UPDATES_TASK, intake.consume_updates())
        self.supervisor.watch(HEARTBEAT_TASK, self.heartbeat())
        self.supervisor.watch(RING_READER_TASK, self.watch_ring_reader())

    async def stop(self) -> None:
        """Stop the background work, write what is still due, let the agents go, flush."""
        await self.supervisor.stop(self._stop.set)
        await self.node.drain()
        for agent in self.sessions.all():
            await self.sessions.remove(agent)
        await asyncio.to_thread(self.outbox.flush, FLUSH_S)
        self.ring.stop()

    async def heartbeat(self) -> None:
        """Announce this node up every HEARTBEAT_S, and refresh the gauges."""
        while not self._stop.is_set():
            self.outbox.announce("up")
            AGENTS.set(len(self.sessions))
            RING_MEMBERS.set(len(self.ownership.members()))
            PRODUCER_QUEUE.set(len(self.outbox))
            QUEUED.set(sum(s.queued for s in self.sessions.all()))
            STORE_WRITES.set(self.node.writes_in_flight)
            await asyncio.sleep(HEARTBEAT_S)

    async def watch_ring_reader(self) -> None:
        """Raise once the ring-membership reader's thread is gone (it logged why): without it
        the ring goes stale, and the node would soon take itself for every client's owner."""
        while not self._stop.is_set():
            if not self.ring.running:
                raise RuntimeError("the ring-membership reader's thread stopped")
            await asyncio.sleep(RING_READER_CHECK_S)

    async def leave(self) -> None:
        """Leave the ring and send every agent to its new owner; nothing it holds is lost.
        The node leaves only when it stops: its tasks' ends are expected from now on."""
        self.supervisor.stopping()
        self.ownership.leaving = True
        self.outbox.announce("leaving")
        await asyncio.to_thread(self.outbox.flush, FLUSH_S)
        await self._seen_leaving()
        for session in self.sessions.all():
            owner = self.ownership.owner(session.client_id)
            if owner is None:  # no other node: the agent comes back when one is up
                session.shut(CloseCode.GOING_AWAY, "node leaving, no other node up")
                continue
            redirect = Redirect(url=ws_url(owner.url), node_id=owner.node_id, reason="node leaving")
            session.shut(CloseCode.MOVED, "node leaving", last=encode_message(redirect))

    async def _seen_leaving(self) -> None:
        """Wait (at most LEAVE_SEEN_S) until this node's own ring reader has read its leaving
        record: the other nodes read the same topic as fast, so an agent redirected now is
        not sent straight back by a new owner that still counts this node in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEAVE_SEEN_S
        # The ring reader is a thread that announces nothing: poll its ring.
        while loop.time() < deadline and self.ownership.listed():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


NODE = web.AppKey("node", NodeProcess)
