"""What an agent counts (:class:`AgentStats`): pushes, cache hits and misses, reconnects, and the
fate of its feedback. The connection, the outbox and the cache-facing API each add to it; the
replay and ``foresight agent`` read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AgentStats:
    """Counters since the agent was made; ``hits`` counts every get answered locally."""

    pushes: int = 0
    updates: int = 0
    #: A version pushed to this agent a second time.
    duplicate_pushes: int = 0
    #: A push of a version the agent had already fetched itself (it came too late to help).
    late_pushes: int = 0
    rejected_pushes: int = 0
    bytes_pushed: int = 0
    hits: int = 0
    misses: int = 0
    unused: int = 0
    expired: int = 0
    reconnects: int = 0
    redirects: int = 0
    feedback_dropped: int = 0
    #: Feedback and views still queued when close() gave up on delivering them.
    feedback_unsent: int = 0
    #: Fetches tried again because no node could be reached.
    fetch_retries: int = 0
    #: Feedback delivered over HTTP at close, for want of a socket.
    beacons: int = 0
    #: Views and requests sent again on a new socket because no ack came on the old one.
    resent: int = 0
    #: Views and requests sent but never acked when close() gave up waiting (the node that
    #: took them still holds them in its producer, unless it died).
    unacked_at_close: int = 0
