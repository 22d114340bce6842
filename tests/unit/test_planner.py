"""The planner prefetches what a user on a given link and budget would want, and says why not."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from streams.planner import (
    THRESHOLDS,
    Connection,
    Decision,
    PlannerConfig,
    PlannerState,
    apply_feedback,
    plan,
    threshold,
)

PREDICTIONS = [("a", 0.7), ("b", 0.5), ("c", 0.35), ("d", 0.2), ("e", 0.01)]
CLASSES: list[Connection] = ["4g", "3g", "2g", "slow-2g"]
NO_BUDGET = PlannerConfig(budget_bytes_per_minute=None)


def prefetched(decisions: Sequence[Decision]) -> list[str]:
    return [d.content_id for d in decisions]


def test_slower_links_prefetch_strictly_less() -> None:
    predictions = [(f"at-{c}", THRESHOLDS[c]) for c in reversed(CLASSES)]
    counts = []
    for connection in CLASSES:
        result = plan(predictions, PlannerState(), now=0.0, connection=connection, config=NO_BUDGET)
        counts.append(len(result.decisions))
        assert result.threshold == THRESHOLDS[connection]
    assert counts == sorted(counts, reverse=True)
    assert len(set(counts)) == 4


def test_an_unknown_connection_uses_the_default_class() -> None:
    result = plan(PREDICTIONS, PlannerState(), now=0.0, connection=None, config=NO_BUDGET)
    assert result.threshold == THRESHOLDS[NO_BUDGET.default_connection]


def test_save_data_means_no_prefetch_at_all() -> None:
    result = plan(PREDICTIONS, PlannerState(), now=0.0, save_data=True, config=NO_BUDGET)
    assert result.decisions == ()
    assert {s.reason for s in result.skipped} == {"save-data"}
    assert len(result.skipped) == len(PREDICTIONS)


def test_content_held_at_the_current_version_is_skipped_and_stale_content_is_not() -> None:
    result = plan(
        PREDICTIONS,
        PlannerState(),
        now=0.0,
        held={"a": "v2", "b": "v1", "c": "v9"},
        current={"a": "v2", "b": "v2"},  # a is current, b is stale, c's version is unknown
        config=NO_BUDGET,
    )
    assert prefetched(result.decisions) == ["b", "d"]
    reasons = {s.content_id: s.reason for s in result.skipped}
    assert reasons == {"a": "already-held", "c": "already-held", "e": "below-threshold"}


def test_decisions_keep_the_prediction_rank_and_probability() -> None:
    result = plan(PREDICTIONS, PlannerState(), now=0.0, held={"a": "v"}, config=NO_BUDGET)
    first = result.decisions[0]
    assert (first.content_id, first.probability, first.rank) == ("b", 0.5, 2)


def test_the_byte_budget_caps_bytes_per_minute_of_event_time() -> None:
    config = PlannerConfig(budget_bytes_per_minute=1_000_000)
    sizes = {item: 300_000 for item, _ in PREDICTIONS}
    state = PlannerState()
    sent: list[tuple[float, int]] = []
    for second in range(0, 600, 5):  # ten minutes, an event every 5 s, each wanting 1.2 MB
        result = plan(PREDICTIONS, state, now=float(second), sizes=sizes, config=config)
        state = result.state
        sent += [(float(second), sizes[d.content_id]) for d in result.decisions]
        assert all(s.reason in ("over-budget", "below-threshold") for s in result.skipped)
    total = sum(size for _, size in sent)
    # At most one minute's burst plus the refill over ten minutes.
    assert total <= 1_000_000 + 10 * 1_000_000
    assert total >= 9 * 1_000_000  # and the budget is actually used
    for start in range(60, 540, 30):  # past the first burst, any minute stays near the rate
        window = sum(size for t, size in sent if start <= t < start + 60)
        assert window <= 1_000_000 + 300_000


def test_the_bucket_refills_from_event_time_and_never_from_time_running_backwards() -> None:
    config = PlannerConfig(budget_bytes_per_minute=600_000)
    state = PlannerState(tokens=0.0, counted_at=100.0)
    later = plan([("a", 0.9)], state, now=130.0, sizes={"a": 300_000}, config=config)
    assert prefetched(later.decisions) == ["a"]  # 30 s refilled 300 kB
    earlier = plan([("a", 0.9)], state, now=50.0, sizes={"a": 1}, config=config)
    assert earlier.decisions == ()
    assert earlier.state.counted_at == 100.0


def test_hits_lower_the_threshold_and_waste_raises_it() -> None:
    config = PlannerConfig()
    start = PlannerState()
    base = threshold(start, "4g", config)
    assert threshold(apply_feedback(start, "hit", config), "4g", config) < base
    assert threshold(apply_feedback(start, "unused", config), "4g", config) > base
    assert threshold(apply_feedback(start, "expired", config), "4g", config) > base
    assert apply_feedback(start, "miss", config) == start


def test_feedback_moves_the_threshold_only_within_bounds() -> None:
    config = PlannerConfig()
    state = PlannerState()
    for _ in range(1000):
        state = apply_feedback(state, "hit", config)
    assert state.offset == config.offset_min
    for _ in range(1000):
        state = apply_feedback(state, "unused", config)
    assert state.offset == config.offset_max
    for connection in THRESHOLDS:
        assert config.threshold_floor <= threshold(state, connection, config) <= 0.99


probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(
    predictions=st.lists(st.tuples(st.text(min_size=1, max_size=3), probabilities), max_size=8),
    connection=st.sampled_from(list(THRESHOLDS)),
    save_data=st.booleans(),
    tokens=st.floats(min_value=0.0, max_value=2_000_000.0),
)
def test_every_prediction_is_either_prefetched_or_skipped_with_a_reason(
    predictions: list[tuple[str, float]], connection: Connection, save_data: bool, tokens: float
) -> None:
    config = PlannerConfig()
    state = PlannerState(tokens=tokens, counted_at=0.0)
    result = plan(predictions, state, now=0.0, connection=connection, save_data=save_data)
    ranks = sorted([d.rank for d in result.decisions] + [s.rank for s in result.skipped])
    assert ranks == list(range(1, len(predictions) + 1))
    spent = len(result.decisions) * config.default_size_bytes
    assert spent <= tokens
    assert all(d.probability >= result.threshold for d in result.decisions)
