"""The prefetch planner: which predicted items become prefetch commands, and why the rest do not.

Pure functions over frozen dataclasses; every clock reading is an event timestamp passed in.
For each predicted ``(content_id, probability)`` in rank order the planner applies, in turn:

1. save-data: the client asked for no prefetching at all;
2. the probability threshold of the client's connection class (stricter on slower links, as
   Guess.js does), moved by the client's feedback offset;
3. already held: the agent holds the content at its current version;
4. the byte budget: a per-client token bucket refilled at ``budget_bytes_per_minute / 60``
   bytes per second of event time, holding at most one minute's worth.

The planner does not know content sizes; the cache node, once it holds the item, applies the
last test, :func:`foresight.push_rule.worth_its_bytes` (a command's odds must pay for its
bytes), so the thresholds here are low floors and the size rule does most of the choosing.

Feedback moves the client's offset: a hit lowers the threshold a little, an unused or expired
prefetch raises it more (wasted bytes cost more than a missed chance), within bounds; a miss
leaves it alone, since it says the model did not predict the item, not that the threshold is
wrong.

>>> config = PlannerConfig(budget_bytes_per_minute=None)
>>> result = plan([("a", 0.9), ("b", 0.2), ("c", 0.01)], PlannerState(), now=0.0, config=config)
>>> [d.content_id for d in result.decisions], [(s.content_id, s.reason) for s in result.skipped]
(['a', 'b'], [('c', 'below-threshold')])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Connection = Literal["4g", "3g", "2g", "slow-2g"]
Outcome = Literal["hit", "miss", "unused", "expired"]
SkipReason = Literal["save-data", "below-threshold", "already-held", "over-budget"]

#: Base probability thresholds per effective connection type (navigator.connection). 4g's was
#: chosen with bench/sweep.py together with the prefetch k and the push rule's K (the best hit
#: ratio at simulated waste <= 0.8 per requested byte); the slower classes keep their old
#: multiples of it (x2, x3, x4), which no data set here measures.
THRESHOLDS: Mapping[Connection, float] = {"4g": 0.02, "3g": 0.04, "2g": 0.06, "slow-2g": 0.08}


@dataclass(frozen=True)
class PlannerConfig:
    """Thresholds, budget and feedback steps; one object shared by every client."""

    thresholds: Mapping[Connection, float] = field(default_factory=lambda: dict(THRESHOLDS))
    #: Used when the interaction carries no connection class. Browsers without the Network
    #: Information API (Firefox, Safari) are mostly on fast links.
    default_connection: Connection = "4g"
    #: Bytes a client may be sent per minute of event time; None means no budget.
    budget_bytes_per_minute: int | None = 2_000_000
    #: Size assumed for content whose size is not known yet.
    default_size_bytes: int = 50_000
    hit_step: float = 0.01
    waste_step: float = 0.02
    offset_min: float = -0.10
    offset_max: float = 0.30
    threshold_floor: float = 0.01
    threshold_ceiling: float = 0.99


@dataclass(frozen=True)
class PlannerState:
    """One client's planner state: budget tokens left, when they were counted, and offset."""

    tokens: float | None = None  # None: a full bucket (a client not seen before)
    counted_at: float | None = None
    offset: float = 0.0


@dataclass(frozen=True)
class Decision:
    """Prefetch ``content_id``; ``rank`` is its 1-based place in the prediction."""

    content_id: str
    probability: float
    rank: int


@dataclass(frozen=True)
class Skip:
    """A predicted item that is not prefetched, with the reason a debugging tool can show."""

    content_id: str
    probability: float
    rank: int
    reason: SkipReason


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    skipped: tuple[Skip, ...]
    state: PlannerState
    threshold: float


def threshold(state: PlannerState, connection: Connection | None, config: PlannerConfig) -> float:
    """The client's effective threshold on ``connection``: base plus offset, within bounds."""
    base = config.thresholds[connection or config.default_connection]
    value = base + state.offset
    return min(config.threshold_ceiling, max(config.threshold_floor, value))


def refill(state: PlannerState, now: float, config: PlannerConfig) -> PlannerState:
    """The token bucket at event time ``now``; time never runs backwards for a client."""
    budget = config.budget_bytes_per_minute
    if budget is None:
        return state
    capacity = float(budget)
    # PlannerState(...) rather than dataclasses.replace: this runs on every event, and
    # replace() inspects the fields each time (nearly three times the cost).
    if state.tokens is None or state.counted_at is None:
        return PlannerState(capacity, now, state.offset)
    elapsed = max(0.0, now - state.counted_at)
    tokens = min(capacity, state.tokens + elapsed * budget / 60.0)
    return PlannerState(tokens, max(state.counted_at, now), state.offset)


def is_held(content_id: str, held: Mapping[str, str], current: Mapping[str, str]) -> bool:
    """Whether the agent already holds the current version (any version when it is unknown)."""
    version = held.get(content_id)
    if version is None:
        return False
    latest = current.get(content_id)
    return latest is None or latest == version


def plan(
    predictions: Sequence[tuple[str, float]],
    state: PlannerState,
    *,
    now: float,
    connection: Connection | None = None,
    save_data: bool = False,
    held: Mapping[str, str] | None = None,
    current: Mapping[str, str] | None = None,
    sizes: Mapping[str, int] | None = None,
    config: PlannerConfig | None = None,
) -> Plan:
    """Decide which of ``predictions`` (sorted, most likely first) to prefetch at time ``now``.

    ``held`` maps content the agent holds to its version, ``current`` maps content to its
    current version, ``sizes`` gives byte sizes for the budget. Returns the decisions, the
    skipped items with reasons, the client's new state and the threshold that was applied.
    """
    config = config or PlannerConfig()
    held = held or {}
    current = current or {}
    sizes = sizes or {}
    cut = threshold(state, connection, config)
    state = refill(state, now, config)
    tokens = state.tokens
    decisions: list[Decision] = []
    skipped: list[Skip] = []
    for rank, (content_id, probability) in enumerate(predictions, start=1):
        reason: SkipReason | None = None
        size = sizes.get(content_id, config.default_size_bytes)
        if save_data:
            reason = "save-data"
        elif probability < cut:
            reason = "below-threshold"
        elif is_held(content_id, held, current):
            reason = "already-held"
        elif tokens is not None and size > tokens:
            reason = "over-budget"
        if reason is None:
            decisions.append(Decision(content_id, probability, rank))
            if tokens is not None:
                tokens -= size
        else:
            skipped.append(Skip(content_id, probability, rank, reason))
    if tokens is not None:
        state = PlannerState(tokens, state.counted_at, state.offset)
    return Plan(tuple(decisions), tuple(skipped), state, cut)


def apply_feedback(state: PlannerState, outcome: Outcome, config: PlannerConfig) -> PlannerState:
    """Move the client's threshold offset after one prefetch outcome, within bounds."""
    if outcome == "hit":
        offset = state.offset - config.hit_step
    elif outcome in ("unused", "expired"):
        offset = state.offset + config.waste_step
    else:
        return state
    return replace(state, offset=min(config.offset_max, max(config.offset_min, offset)))
