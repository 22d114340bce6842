"""What a replay's summary counts: landings apart, each next item a request, both side by side."""

from __future__ import annotations

import math

import pytest

from foresight.replay.measure import Request, Tally, summarize


def _request(client: str, item: str, *, landing: bool, hit: bool, ms: float, size: int) -> Request:
    return Request(
        at=0.0,
        client_id=client,
        content_id=item,
        landing=landing,
        hit=hit,
        latency_ms=ms,
        size=size,
    )


@pytest.fixture
def tally() -> Tally:
    """Two sessions: each lands (a fetch), then asks for two items, three of four local hits."""
    tally = Tally(pushed_bytes=1_000, used_pushed_bytes=400)
    for request in (
        _request("a", "x", landing=True, hit=False, ms=20.0, size=300),
        _request("a", "y", landing=False, hit=True, ms=0.0, size=100),
        _request("b", "x", landing=True, hit=False, ms=20.0, size=300),
        _request("a", "z", landing=False, hit=True, ms=0.0, size=300),
        _request("b", "y", landing=False, hit=False, ms=10.0, size=100),
        _request("b", "w", landing=False, hit=True, ms=0.0, size=100),
    ):
        tally.add(request)
    return tally


def test_the_headline_counts_each_next_item_and_keeps_landings_apart(tally: Tally) -> None:
    without = [20.0, 10.0, 20.0, 10.0, 10.0, 10.0]  # aligned with tally.requests
    summary = summarize(tally, without_ms=without, processed=6, online_hr=0.5, duration_s=1.0)
    assert (summary["events"], summary["landings"], summary["requests"]) == (6, 2, 4)
    assert summary["hit_ratio"] == 0.75
    assert summary["latency_ms"]["with"]["mean"] == 2.5
    assert summary["latency_ms"]["without"]["mean"] == 10.0
    assert summary["latency_reduction"] == 0.75
    assert summary["requested_bytes"] == 600
    assert summary["wasted_bytes"] == 600 and summary["wasted_per_requested_byte"] == 1.0
    every = summary["all_clicks"]
    assert every["requests"] == 6 and every["hit_ratio"] == 0.5
    assert every["latency_ms"]["with"]["mean"] == pytest.approx(50 / 6, abs=1e-3)
    assert every["latency_reduction"] == pytest.approx(1 - (50 / 6) / (80 / 6), abs=1e-4)
    assert every["wasted_per_requested_byte"] == 0.5
    assert summary["lost_events"] == 0


def test_lost_events_count_every_click_and_no_baseline_leaves_without_empty(
    tally: Tally,
) -> None:
    summary = summarize(tally, without_ms=[], processed=5, online_hr=None, duration_s=1.0)
    assert summary["lost_events"] == 1  # a landing's interaction is an event like any other
    assert summary["latency_reduction"] is None
    assert math.isnan(summary["all_clicks"]["latency_ms"]["without"]["mean"])  # no baseline
    assert tally.live()["hit_ratio"] == 0.75  # the live display uses the headline's definition
