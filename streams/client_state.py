"""One client's state in the predictor: its current session and its contribution budget.

Per client: the current session, its last ``history`` clicks and the last click's time (a gap
over ``session_gap_s`` starts a new one), its contribution budget, and what it requested in
all its sessions (a Bloom filter); :func:`dumps_client_state` makes it ~100 bytes for a
client of one short session.

One client cannot poison what all share (issue 12): a click reaches the shared signals only
while its client has budget left. A token bucket in the events' own time (``burst`` tokens,
``refill_per_s`` a second) lets through everything a person does and a flood's first few
clicks; a lifetime allowance that reads no timestamp (``lifetime_floor`` clicks, then
``lifetime_share`` of the events the signals hold) bounds a client whose timestamps are forged
to look like a person's. A click over budget, or one the caller says not to learn from (a
client the abuse guard flagged), still advances the client's own session.
"""

from __future__ import annotations

import msgspec

from streams.foresight_config import ForesightConfig


class ClientState(msgspec.Struct, array_like=True):
    """One client's current session: its recent clicks, oldest first, and the last one's time;
    and its contribution budget, which outlives sessions: the tokens left (None: a full
    bucket), the event time they were counted up to, and the clicks it ever taught the shared
    signals. Fields are only ever appended, so records stored before one existed still load.
    """

    items: list[str] = msgspec.field(default_factory=list)
    last_ts: float | None = None
    tokens: float | None = None
    refilled_at: float | None = None
    contributed: int = 0
    # Across sessions (issue 15): the sessions the client started, and every item it requested
    # (a scalable Bloom filter, streams.seen: ~1.25 bytes an item) and how many.
    sessions: int = 0
    seen: list[bytes] = msgspec.field(default_factory=list)
    seen_count: int = 0
    # The client's own prequential record since it came back: its clicks that were in the top
    # five of the personal ranking, and of the shared one. It is ranked the personal way while
    # that one has hit more of its clicks.
    personal_hits: int = 0
    shared_hits: int = 0


def contribution_tokens(
    state: ClientState, ts: float, config: ForesightConfig
) -> tuple[float, float]:
    """The client's tokens at event time ``ts``, and the time they are now counted up to.

    Only time past the latest counted refills (up to ``burst``): a late, repeated or
    backdated timestamp gives nothing back, so a flood cannot earn tokens by going back and
    forth in time.

    >>> config = ForesightConfig(burst=8.0, refill_per_s=2.0)
    >>> contribution_tokens(ClientState(tokens=1.0, refilled_at=100.0), 101.5, config)
    (4.0, 101.5)
    >>> contribution_tokens(ClientState(tokens=1.0, refilled_at=100.0), 50.0, config)
    (1.0, 100.0)
    """
    if state.tokens is None or state.refilled_at is None:
        return config.burst, ts
    if ts <= state.refilled_at:
        return state.tokens, state.refilled_at
    tokens = state.tokens + (ts - state.refilled_at) * config.refill_per_s
    return min(config.burst, tokens), ts


def dumps_client_state(state: ClientState) -> bytes:
    """Compact msgpack bytes (no River objects inside, so no River-version coupling)."""
    return msgspec.msgpack.encode(state)


def loads_client_state(data: bytes) -> ClientState:
    return msgspec.msgpack.decode(data, type=ClientState)
