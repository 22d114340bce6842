"""The offline prefetch-loop simulation: cache hits, pushes, waste, and repeatable numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

import streams.simulate
from foresight.settings import Settings
from schemas import Feedback
from streams.engine import ClientRecord, Engine
from streams.planner import THRESHOLDS
from streams.simulate import Point, content_size, simulate, sweep

HEADER = "SessionId\tItemId\tTime\n"
OFF = 0.99  # the planner's ceiling: no calibrated probability here reaches it
ON = 0.0  # the planner's floor (0.01) applies: nearly every prediction is pushed


def write(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    path.write_text(HEADER + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))
    return path


def chain_sessions(first: int, count: int, start: float) -> list[tuple[str, str, float]]:
    """``count`` sessions each clicking a -> b -> c, ten seconds apart, one an hour."""
    return [
        (str(first + n), item, start + 3600.0 * n + 10.0 * i)
        for n in range(count)
        for i, item in enumerate(("p/a", "p/b", "p/c"))
    ]


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path]:
    train = write(tmp_path / "train.tsv", chain_sessions(1, 60, 0.0))
    stray = [("2000", "p/a", 2e6)]  # a session that stops after a: what it is sent is wasted
    test = write(tmp_path / "test.tsv", chain_sessions(1000, 5, 1e6) + stray)
    return train, test


def test_a_repeated_request_is_a_hit_from_the_local_cache_without_prefetching(
    tmp_path: Path,
) -> None:
    train = write(tmp_path / "train.tsv", [("1", "p/x", 0.0), ("1", "p/y", 5.0)])
    test = write(
        tmp_path / "test.tsv", [("7", "p/x", 100.0), ("7", "p/y", 110.0), ("7", "p/x", 120.0)]
    )
    result = simulate(train, test, threshold=OFF)
    assert result.pushes == result.prefetched_bytes == result.wasted_bytes == 0
    # The first click is the session's landing; the two after it are its requests.
    assert (result.landings, result.requests, result.hits) == (1, 2, 1)
    assert result.hit_ratio == pytest.approx(1 / 2)
    assert result.hit_ratio_all_clicks == pytest.approx(1 / 3)
    assert result.requested_bytes == content_size("p/x") + content_size("p/y")


def test_a_learned_chain_is_pushed_ahead_and_turns_misses_into_hits(
    chain: tuple[Path, Path],
) -> None:
    off, on = sweep(*chain, [OFF, ON])
    assert off.hits == 0 and off.pushes == 0  # no repeats: only prefetching can hit
    assert on.pushes > 0 and on.prefetched_bytes > off.prefetched_bytes
    # After a the model pushes b, after b it pushes c: both later requests of a session hit.
    assert on.hits == on.requests == 10
    assert on.hit_ratio == 1.0 and on.hr_at_5 == 1.0


def test_waste_is_what_was_pushed_and_never_requested(chain: tuple[Path, Path]) -> None:
    result = simulate(*chain, threshold=ON)
    assert 0 < result.wasted_bytes <= result.prefetched_bytes
    assert 0 < result.wasted_items <= result.pushes
    # Every push of b and c was used; whatever else went out was wasted.
    used = result.prefetched_bytes - result.wasted_bytes
    assert used == 5 * (content_size("p/b") + content_size("p/c"))
    assert result.wasted_per_requested_byte == result.wasted_bytes / result.requested_bytes
    landed = 5 * content_size("p/a") + content_size("p/a")  # each session lands on a
    assert result.wasted_per_requested_byte_all_clicks == result.wasted_bytes / (
        result.requested_bytes + landed
    )


def test_the_default_threshold_is_the_shipped_one(chain: tuple[Path, Path]) -> None:
    default, explicit = sweep(*chain, [None, THRESHOLDS["4g"]])
    assert default.threshold == THRESHOLDS["4g"]
    assert default == explicit


def test_the_same_inputs_give_the_same_numbers_and_points_are_independent(
    chain: tuple[Path, Path],
) -> None:
    forward = sweep(*chain, [ON, 0.3, OFF])
    backward = sweep(*chain, [OFF, 0.3, ON])
    assert forward == backward[::-1]  # no point sees what an earlier one learned
    assert simulate(*chain, threshold=0.3) == forward[1]  # equality leaves out the seconds


def test_as_dict_names_every_measure(chain: tuple[Path, Path]) -> None:
    result = simulate(*chain, threshold=OFF, prefetch_k=3)
    numbers = result.as_dict()
    assert (numbers["requests"], numbers["hits"]) == (result.requests, result.hits) == (10, 0)
    assert numbers["landings"] == 6
    assert set(numbers) >= {
        "requests",
        "hits",
        "hit_ratio",
        "landings",
        "hit_ratio_all_clicks",
        "hr_at_5",
        "pushes",
        "not_worth_bytes",
        "prefetched_bytes",
        "requested_bytes",
        "wasted_bytes",
        "wasted_per_requested_byte",
        "threshold",
        "prefetch_k",
        "bytes_per_odds",
    }
    assert (numbers["prefetch_k"], numbers["threshold"]) == (3, OFF)


def test_the_first_request_of_each_pushed_item_sends_one_hit_feedback(
    chain: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, str, str]] = []
    apply = Engine.on_feedback

    def spy(self: Engine, feedback: Feedback, record: ClientRecord | None) -> ClientRecord:
        sent.append((feedback.client_id, feedback.content_id, feedback.outcome))
        return apply(self, feedback, record)

    monkeypatch.setattr(Engine, "on_feedback", spy)
    result = simulate(*chain, threshold=ON)
    expected = [(str(n), item, "hit") for n in range(1000, 1005) for item in ("p/b", "p/c")]
    assert sorted(sent) == expected and result.hits == len(expected)


def test_a_point_left_out_takes_the_shipped_k_and_push_rule_from_the_settings(
    chain: tuple[Path, Path],
) -> None:
    settings = Settings(prefetch_top_k=3, push_bytes_per_odds=123_456.0)
    (shipped,) = sweep(*chain, [None], settings=settings)
    assert (shipped.threshold, shipped.prefetch_k) == (THRESHOLDS["4g"], 3)
    assert shipped.bytes_per_odds == 123_456.0
    given = sweep(*chain, [Point(ON, 7, None)], settings=settings)[0]
    assert (given.threshold, given.prefetch_k, given.bytes_per_odds) == (ON, 7, None)


def test_the_push_rule_keeps_commanded_items_from_being_pushed(chain: tuple[Path, Path]) -> None:
    free, stingy, lavish = sweep(
        *chain, [Point(ON, 5, None), Point(ON, 5, 1.0), Point(ON, 5, 1e15)]
    )
    assert free.pushes > 0 and free.not_worth_bytes == 0
    # At one byte per unit of odds no item of 2 KiB or more is worth pushing.
    assert stingy.pushes == stingy.prefetched_bytes == stingy.hits == 0
    assert stingy.not_worth_bytes > 0
    assert stingy.hit_ratio < free.hit_ratio
    # A K so large that every item is worth it pushes exactly what no rule does.
    assert (lavish.pushes, lavish.hits, lavish.wasted_bytes) == (
        free.pushes,
        free.hits,
        free.wasted_bytes,
    )


def test_the_push_step_asks_the_cache_nodes_rule_with_the_items_size(
    chain: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[float, int, float | None]] = []

    def only_b(probability: float, size: int, bytes_per_odds: float | None) -> bool:
        asked.append((probability, size, bytes_per_odds))
        return size == content_size("p/b")

    monkeypatch.setattr(streams.simulate, "worth_its_bytes", only_b)
    result = sweep(*chain, [Point(ON, 5, 5e5)])[0]
    assert asked and all(k == 5e5 for _, _, k in asked)
    assert content_size("p/c") in {size for _, size, _ in asked}
    assert result.hits == 5  # b was pushed to each chain session, c never
    assert result.not_worth_bytes == sum(size != content_size("p/b") for _, size, _ in asked)
