"""The consistent-hash ring that maps each client to the cache node serving it.

Every process that routes clients (the streams worker picking a prefetch-commands partition, a
cache node redirecting an agent, an agent finding its node) must reach the same answer from the
same membership, so all of this is pure: SHA-256 positions, virtual points in proportion to
weight, and a deterministic fold over the ring-membership topic. Standard library only.

Examples
--------
>>> a, b = Member("node-a", url="ws://a:8080", slot=0), Member("node-b", url="ws://b:8080", slot=1)
>>> ring = HashRing([a, b])
>>> ring.owner("client-42").slot
1
>>> [m.node_id for m in ring.owners("client-42", 5)]
['node-b', 'node-a']
"""

from __future__ import annotations

import dataclasses
import math
import struct
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, cast, get_args

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

DEFAULT_VNODES = 160
# Buckets of the owner lookup table: about 4 to 8 per virtual point, at most 2**20 (8 MiB).
_BUCKETS_PER_POINT = 4
_MAX_BUCKET_BITS = 20
_first_u64 = struct.Struct(">Q").unpack_from
NodeState = Literal["up", "leaving", "down"]


class EmptyRingError(LookupError):
    """Raised when a ring with no members is asked for an owner."""


class InvalidMembershipRecord(ValueError):
    """A ring-membership record that cannot be applied; the caller dead-letters it."""


def position(text: str) -> int:
    """Place ``text`` on the 2**64 circle: the first 8 bytes of its UTF-8 SHA-256, big-endian."""
    return int.from_bytes(sha256(text.encode("utf-8")).digest()[:8], "big")


@lru_cache(maxsize=4096)
def _node_points(node_id: str, count: int) -> tuple[int, ...]:
    # Every membership change builds a new ring; caching spares rehashing the unchanged nodes.
    return tuple(position(f"{node_id}#{i}") for i in range(count))


@dataclass(frozen=True)
class Member:
    """One cache node: its unique ``node_id`` (virtual points are the positions of
    ``f"{node_id}#{i}"``), relative ``weight`` (``round(vnodes * weight)`` points, at least one),
    the ``url`` its agents connect to, and the prefetch-commands partition (``slot``) it consumes.
    """

    node_id: str
    weight: float = 1.0
    url: str = ""
    slot: int = 0

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight of {self.node_id!r} must be finite and > 0: {self.weight!r}")
        if self.slot < 0:
            raise ValueError(f"slot of {self.node_id!r} must be >= 0: {self.slot!r}")


class HashRing:
    """An immutable consistent-hash ring; changes return new rings.

    A key is owned by the node of the first virtual point at or clockwise after the key's
    position. Points at the same position are ordered by node_id, so ties resolve the same way
    in every process.

    ``members`` must have unique node_ids; ``vnodes`` is the number of virtual points of a node
    of weight 1; ``load_factor`` is the default epsilon of :meth:`assign`.
    """

    __slots__ = (
        "_buckets",
        "_load_factor",
        "_members",
        "_owners",
        "_positions",
        "_shift",
        "_vnodes",
    )

    def __init__(
        self,
        members: Iterable[Member] = (),
        vnodes: int = DEFAULT_VNODES,
        load_factor: float | None = None,
    ) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1: {vnodes!r}")
        if load_factor is not None:
            _check_epsilon(load_factor)
        by_id: dict[str, Member] = {}
        for member in members:
            if member.node_id in by_id:
                raise ValueError(f"duplicate node_id {member.node_id!r}")
            by_id[member.node_id] = member
        self._members = dict(sorted(by_id.items()))
        self._vnodes = vnodes
        self._load_factor = load_factor
        points = sorted(
            (pos, node_id)
            for node_id, member in self._members.items()
            for pos in _node_points(node_id, max(1, round(vnodes * member.weight)))
        )
        self._positions = [pos for pos, _ in points]
        self._owners = [self._members[node_id] for _, node_id in points]
        self._shift, self._buckets = _bucket_table(self._positions, self._owners)

    @property
    def members(self) -> tuple[Member, ...]:
        """The nodes, sorted by node_id."""
        return tuple(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashRing):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        ids = ", ".join(self._members)
        return f"HashRing([{ids}], vnodes={self._vnodes}, load_factor={self._load_factor})"

    def member(self, node_id: str) -> Member:
        """The member called ``node_id``; KeyError if it is not on the ring."""
        try:
            return self._members[node_id]
        except KeyError:
            raise KeyError(f"{node_id!r} is not on the ring") from None

    def owner(self, key: str) -> Member:
        """The node that owns ``key`` (a client_id); EmptyRingError on an empty ring."""
        # Every routed event comes through here, so this is position() and _start() inlined:
        # one hash and one table index, and a bisect only when the key's bucket holds a point.
        pos: int = _first_u64(sha256(key.encode()).digest())[0]
        try:
            member = self._buckets[pos >> self._shift]
        except IndexError:  # only an empty ring has no buckets
            raise EmptyRingError("the ring has no members") from None
        if member is None:
            member = self._owners[bisect_left(self._positions, pos) % len(self._positions)]
        return member

    def owners(self, key: str, n: int) -> list[Member]:
        """Up to ``n`` distinct nodes met walking clockwise from ``key``; the first is its owner.

        Fewer than ``n`` come back when the ring has fewer nodes; useful for replicas or for a
        fallback when the owner is unreachable.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0: {n!r}")
        index = self._start(key)
        wanted = min(n, len(self._members))
        found: dict[str, Member] = {}
        while len(found) < wanted:
            member = self._owners[index]
            found.setdefault(member.node_id, member)
            index = (index + 1) % len(self._owners)
        return list(found.values())

    def with_member(self, member: Member) -> HashRing:
        """A ring with ``member`` added, or replacing the member of the same node_id."""
        return self._rebuild({**self._members, member.node_id: member}.values())

    def without(self, node_id: str) -> HashRing:
        """A ring without ``node_id``; KeyError if it is not on the ring."""
        self.member(node_id)
        return self._rebuild(m for m in self._members.values() if m.node_id != node_id)

    def with_weight(self, node_id: str, weight: float) -> HashRing:
        """A ring where ``node_id`` has the new ``weight``; KeyError if it is not on the ring."""
        return self.with_member(dataclasses.replace(self.member(node_id), weight=weight))

    def capacities(self, n_keys: int, epsilon: float) -> dict[str, int]:
        """Most keys each node may take in :meth:`assign`: ceil((1 + eps) * m * w_i / sum(w)).

        With equal weights this is the paper's ceil((1 + eps) * m / n). The caps sum to at least
        (1 + eps) * m, so there is always room for every key.
        """
        if n_keys < 0:
            raise ValueError(f"n_keys must be >= 0: {n_keys!r}")
        _check_epsilon(epsilon)
        self._require_members()
        total = math.fsum(m.weight for m in self._members.values())
        return {
            node_id: math.ceil((1 + epsilon) * n_keys * m.weight / total)
            for node_id, m in self._members.items()
        }

    def assign(self, keys: Iterable[str], epsilon: float | None = None) -> dict[str, Member]:
        """Owners of ``keys`` with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016).

        Distinct keys are placed in order of (position, key), so the result depends only on the
        key set, never on the order the keys arrive in. Each key walks clockwise from its
        position to the first node still under its cap (see :meth:`capacities`), so no node ends
        above ``(1 + epsilon)`` times its weighted share. Smaller epsilon means tighter balance
        but longer walks and more keys moving when membership changes.
        """
        eps = self._load_factor if epsilon is None else epsilon
        if eps is None:
            raise ValueError("pass epsilon or build the ring with a load_factor")
        self._require_members()
        placed = sorted({(position(key), key) for key in keys})
        caps = self.capacities(len(placed), eps)
        taken = dict.fromkeys(caps, 0)
        assignment: dict[str, Member] = {}
        for pos, key in placed:
            member = self._first_with_room(bisect_left(self._positions, pos), taken, caps)
            taken[member.node_id] += 1
            assignment[key] = member
        return assignment

    def _first_with_room(self, start: int, taken: dict[str, int], caps: dict[str, int]) -> Member:
        # The caps sum to at least the number of keys and every node has a point, so one lap
        # always finds room; the bound makes termination evident rather than argued.
        count = len(self._owners)
        for step in range(count):
            member = self._owners[(start + step) % count]
            if taken[member.node_id] < caps[member.node_id]:
                return member
        raise RuntimeError("bounded-load assignment found every node at its cap")

    def _start(self, key: str) -> int:
        self._require_members()
        return bisect_left(self._positions, position(key)) % len(self._positions)

    def _require_members(self) -> None:
        if not self._members:
            raise EmptyRingError("the ring has no members")

    def _rebuild(self, members: Iterable[Member]) -> HashRing:
        return HashRing(members, self._vnodes, self._load_factor)

    def _identity(self) -> tuple[int, float | None, tuple[Member, ...]]:
        return (self._vnodes, self._load_factor, self.members)


def _bucket_table(positions: list[int], owners: list[Member]) -> tuple[int, list[Member | None]]:
    """Cut the circle into ``2**bits`` equal buckets; return the shift giving a position's bucket
    and each bucket's owner.

    A bucket with no virtual point in it belongs wholly to the next point clockwise, so a key
    there needs no search; a bucket holding a point is None, and :meth:`HashRing.owner` bisects.
    With 4 to 8 buckets per point, about 4 keys in 5 land in a bucket without a point.
    """
    if not positions:
        return 64, []
    bits = min((_BUCKETS_PER_POINT * len(positions)).bit_length(), _MAX_BUCKET_BITS)
    shift = 64 - bits
    table: list[Member | None] = []
    for pos, member in zip(positions, owners, strict=True):
        bucket = pos >> shift
        if bucket >= len(table):  # else this point shares a bucket already marked None
            table.extend([member] * (bucket - len(table)))
            table.append(None)
    table.extend([owners[0]] * ((1 << bits) - len(table)))  # past the last point: wrap around
    return shift, table


def loads(assignment: Mapping[str, Member]) -> dict[str, int]:
    """Keys per node_id in an assignment, sorted by node_id; nodes with no keys are absent."""
    return dict(sorted(Counter(m.node_id for m in assignment.values()).items()))


def _check_epsilon(epsilon: float) -> None:
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be finite and >= 0: {epsilon!r}")


#: How far ahead of the reader's clock a heartbeat may be before the record is refused.
MAX_CLOCK_SKEW_S = 300.0


@dataclass(frozen=True)
class MembershipRecord:
    """The latest record a node published on ring-membership."""

    member: Member
    state: NodeState
    heartbeat_ts: float

    @classmethod
    def parse(cls, node_id: str, value: Mapping[str, object]) -> MembershipRecord:
        """Validate a record value keyed by ``node_id``; InvalidMembershipRecord if it is bad.

        Required: url (str), slot (int >= 0), state ("up", "leaving" or "down") and heartbeat_ts
        (seconds). Optional: weight (default 1.0) and node_id, which must match the key.
        """
        if value.get("node_id", node_id) != node_id:
            raise InvalidMembershipRecord(f"node_id {value['node_id']!r} under key {node_id!r}")
        url, slot, state = value.get("url"), value.get("slot"), value.get("state")
        if not isinstance(url, str):
            raise InvalidMembershipRecord(f"url of {node_id!r} must be a string: {url!r}")
        if isinstance(slot, bool) or not isinstance(slot, int):
            raise InvalidMembershipRecord(f"slot of {node_id!r} must be an int: {slot!r}")
        if state not in get_args(NodeState):
            raise InvalidMembershipRecord(f"state of {node_id!r} must be one of up/leaving/down")
        weight = _number(node_id, value, "weight", 1.0)
        heartbeat_ts = _number(node_id, value, "heartbeat_ts", None)
        try:
            member = Member(node_id, weight=weight, url=url, slot=slot)
        except ValueError as exc:
            raise InvalidMembershipRecord(str(exc)) from exc
        return cls(member, cast("NodeState", state), heartbeat_ts)


def _number(node_id: str, value: Mapping[str, object], name: str, default: float | None) -> float:
    raw = value.get(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidMembershipRecord(f"{name} of {node_id!r} must be a finite number: {raw!r}")
    return float(raw)


class RingMembership:
    """A fold over the compacted ring-membership topic, giving the same ring in every process.

    Feed it every record in offset order with :meth:`apply` (the latest record per node_id
    wins; a tombstone removes the node), then read the current ring with :meth:`ring`.
    """

    def __init__(
        self,
        vnodes: int = DEFAULT_VNODES,
        load_factor: float | None = None,
        *,
        slots: int | None = None,
        max_clock_skew_s: float = MAX_CLOCK_SKEW_S,
    ) -> None:
        HashRing((), vnodes, load_factor)  # fail here, not at the first ring() call
        self._vnodes = vnodes
        self._load_factor = load_factor
        # A record naming a slot with no prefetch-commands partition, or a heartbeat from the
        # future (which would keep a dead node "live" until then), is refused: one forged or
        # misconfigured record must not break every process that routes by the ring.
        self._slots = slots
        self._skew = max_clock_skew_s
        self._records: dict[str, MembershipRecord] = {}
        # The last ring built and the live members it was built from: every event asks for
        # the ring, and building one hashes vnodes x members points.
        self._cached: tuple[tuple[Member, ...], HashRing] | None = None

    @property
    def records(self) -> Mapping[str, MembershipRecord]:
        """The latest valid record of every node not removed, including stale and down ones."""
        return MappingProxyType(self._records)

    def apply(
        self, node_id: str, value: Mapping[str, object] | None, now: float | None = None
    ) -> None:
        """Fold one record in: ``None`` (a tombstone) removes ``node_id``, a value replaces it.

        An invalid value raises InvalidMembershipRecord and leaves the node's previous record
        in place, so the caller can dead-letter it and go on. Invalid too: a slot at or beyond
        ``slots`` and, given ``now``, a heartbeat more than ``max_clock_skew_s`` ahead of it.
        """
        if value is None:
            self._records.pop(node_id, None)
            return
        record = MembershipRecord.parse(node_id, value)
        if self._slots is not None and record.member.slot >= self._slots:
            raise InvalidMembershipRecord(
                f"slot {record.member.slot} of {node_id!r} has no partition (slots: {self._slots})"
            )
        if now is not None and record.heartbeat_ts > now + self._skew:
            raise InvalidMembershipRecord(
                f"heartbeat of {node_id!r} is {record.heartbeat_ts - now:.0f} s in the future"
            )
        self._records[node_id] = record

    def ring(self, now: float, heartbeat_timeout: float) -> HashRing:
        """The ring of nodes that are "up" with ``heartbeat_ts >= now - heartbeat_timeout``."""
        if heartbeat_timeout < 0:
            raise ValueError(f"heartbeat_timeout must be >= 0: {heartbeat_timeout!r}")
        cutoff = now - heartbeat_timeout
        live = tuple(
            r.member for r in self._records.values() if r.state == "up" and r.heartbeat_ts >= cutoff
        )
        if self._cached is None or self._cached[0] != live:
            self._cached = (live, HashRing(live, self._vnodes, self._load_factor))
        return self._cached[1]
