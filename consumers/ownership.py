"""Which clients a cache node owns: its place on the ring, as its ring-membership reader sees it.

A client belongs to the node the consistent-hash ring names for it; every process folds the
same ring-membership topic, so they agree. A node that is leaving owns no client any more,
whatever its ring still says, so that its agents are sent to their next owners.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from foresight.ring import EmptyRingError, HashRing, Member
from schemas.protocol import WS_PATH


@dataclass(frozen=True)
class NodeConfig:
    """Who a node is: its id, its ring slot (its prefetch-commands partition), its address."""

    node_id: str
    slot: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def ws_url(http_url: str) -> str:
    """A node's agent WebSocket URL from its base URL.

    >>> ws_url("http://127.0.0.1:8710")
    'ws://127.0.0.1:8710/v1/agents/ws'
    """
    return http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + WS_PATH


class RingReader(Protocol):
    """What ownership reads of foresight.membership.MembershipWatcher."""

    def ring(self) -> HashRing: ...


class Ownership:
    """The clients a node owns, from the ring its reader currently folds."""

    def __init__(self, watcher: RingReader, node_id: str) -> None:
        self.watcher = watcher
        self.node_id = node_id
        #: Set once the node leaves the ring: it then owns no client.
        self.leaving = False

    def members(self) -> list[Member]:
        return list(self.watcher.ring().members)

    def listed(self) -> bool:
        """Whether this node is on its own ring (until its leaving record is read back)."""
        return any(m.node_id == self.node_id for m in self.watcher.ring().members)

    def owner(self, client_id: str) -> Member | None:
        """The client's owner when it is another node (this one, once leaving, owns none),
        else None: this node owns it, or no node is left to."""
        ring = self.watcher.ring()
        if self.leaving:
            with contextlib.suppress(KeyError):
                ring = ring.without(self.node_id)
        try:
            owner = ring.owner(client_id)
        except EmptyRingError:
            return None
        return None if owner.node_id == self.node_id else owner

    def owner_url(self, client_id: str) -> str | None:
        """The base URL of the client's owner when it is another node, else None."""
        owner = self.owner(client_id)
        return None if owner is None else owner.url

    def owned(self, clients: Iterable[str]) -> set[str]:
        """Those of ``clients`` this node owns."""
        return {c for c in clients if self.owner_url(c) is None}
