"""What a replay measures, and the one summary both the JSON and the printed table come from.

Every click an agent serves is one :class:`Request`: a local hit or a fetch from its node,
with its latency and size. Each agent adds its push counters when it closes. The summary is
computed once, from these alone, so the numbers printed, written to JSON and drawn in the
report are the same numbers.

A session's first click is its landing: the page load that brings the agent up, so nothing on
the device can have answered it, and no model can have predicted it (``foresight eval`` scores
"each test click after a session's first" for the same reason). The headline figures
(``requests``, ``hit_ratio``, ``latency_ms``, ``wasted_per_requested_byte``) are over the
requests for each next item, HR@5's denominator; ``all_clicks`` gives the same figures with
every landing counted as a request too.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents.sdk import Agent
from schemas.protocol import Push

#: Width of the hit-ratio-over-time buckets, seconds of replay time.
TIMELINE_BUCKET_S = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request of one agent: when (seconds into the pass), what, and how it was answered."""

    at: float
    client_id: str
    content_id: str
    landing: bool  # the session's first click: the page load that brings its agent up
    hit: bool
    latency_ms: float
    size: int


@dataclass
class Tally:
    """Everything the with-prefetching pass measured, filled in by the agents as they go."""

    requests: list[Request] = field(default_factory=list)
    click_to_push_ms: list[float] = field(default_factory=list)
    pushes: int = 0
    duplicate_pushes: int = 0
    late_pushes: int = 0
    pushed_bytes: int = 0
    used_pushed_bytes: int = 0
    feedback_dropped: int = 0
    feedback_unsent: int = 0
    unacked_at_close: int = 0
    resent: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    agents_done: int = 0
    clients_by_node: dict[str, int] = field(default_factory=dict)
    # Per item, for the savings per page (foresight.replay.savings).
    pushed_bytes_by_item: Counter[str] = field(default_factory=Counter)
    used_bytes_by_item: Counter[str] = field(default_factory=Counter)
    # Kept as requests come, so the live display costs nothing per request.
    _hits: int = 0
    _next_items: int = 0

    def on_push(self, push: Push, received_at: float) -> None:
        self.pushed_bytes_by_item[push.content_id] += len(push.body)
        if push.event_ts is not None:
            self.click_to_push_ms.append(max(0.0, received_at - push.event_ts) * 1000)

    def agent_done(self, agent: Agent) -> None:
        """Add a closed agent's counters: every pushed byte not used by a request is wasted."""
        stats = agent.stats
        self.pushes += stats.pushes
        self.duplicate_pushes += stats.duplicate_pushes
        self.late_pushes += stats.late_pushes
        self.pushed_bytes += stats.bytes_pushed
        self.feedback_dropped += stats.feedback_dropped
        self.feedback_unsent += stats.feedback_unsent
        self.unacked_at_close += stats.unacked_at_close
        self.resent += stats.resent
        self.reconnects += stats.reconnects
        for entry in agent.cache.entries():
            if entry.prefetched and entry.used:
                self.used_pushed_bytes += entry.size
                self.used_bytes_by_item[entry.content_id] += entry.size
        node = agent.node_id or "none"
        self.clients_by_node[node] = self.clients_by_node.get(node, 0) + 1
        self.agents_done += 1

    def add(self, request: Request) -> None:
        self.requests.append(request)
        self._hits += request.hit
        self._next_items += not request.landing

    @property
    def hits(self) -> int:
        return self._hits

    def live(self) -> dict[str, float]:
        """The running figures the progress display shows."""
        done = self.requests
        recent = [r.latency_ms for r in done[-500:]]
        return {
            # A landing never hits: the hits so far over the next-item requests so far.
            "hit_ratio": self._hits / self._next_items if self._next_items else 0.0,
            "p50_ms": percentile(recent, 0.5) if recent else 0.0,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in [0, 1]) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "p50": math.nan, "p99": math.nan}
    return {
        "mean": round(statistics.fmean(values), 3),
        "p50": round(percentile(values, 0.5), 3),
        "p99": round(percentile(values, 0.99), 3),
    }


def timeline(requests: Iterable[Request]) -> list[tuple[float, int, int]]:
    """(bucket start, requests, hits) per TIMELINE_BUCKET_S of replay time, in order."""
    buckets: dict[int, list[int]] = {}
    for r in requests:
        bucket = buckets.setdefault(int(r.at // TIMELINE_BUCKET_S), [0, 0])
        bucket[0] += 1
        bucket[1] += int(r.hit)
    return [(b * TIMELINE_BUCKET_S, n, h) for b, (n, h) in sorted(buckets.items())]


def request_indices(clicks: Sequence[Request]) -> list[int]:
    """The positions of the requests among ``clicks``: every click but the landings."""
    return [i for i, r in enumerate(clicks) if not r.landing]


def summarize(
    tally: Tally,
    *,
    without_ms: Sequence[float],
    processed: int,
    online_hr: float | None,
    duration_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The replay's result: the keys the issue names, then what explains them.

    ``without_ms[i]`` is the latency of ``tally.requests[i]`` without prefetching (empty: no
    baseline pass).
    """
    clicks = tally.requests
    wasted = max(0, tally.pushed_bytes - tally.used_pushed_bytes)
    baseline = bool(without_ms)
    nexts = request_indices(clicks)

    def figures(chosen: Sequence[int]) -> dict[str, Any]:
        with_ms = [clicks[i].latency_ms for i in chosen]
        base_ms = [without_ms[i] for i in chosen] if baseline else []
        requested = sum(clicks[i].size for i in chosen)
        return {
            "requests": len(chosen),
            "hit_ratio": _ratio(sum(clicks[i].hit for i in chosen), len(chosen)),
            "latency_ms": {"with": latency_summary(with_ms), "without": latency_summary(base_ms)},
            "latency_reduction": _ratio_drop(with_ms, base_ms),
            "requested_bytes": requested,
            "wasted_per_requested_byte": _ratio(wasted, requested),
        }

    headline = figures(nexts)
    summary: dict[str, Any] = {
        "events": len(clicks),
        "requests": headline["requests"],
        "hit_ratio": headline["hit_ratio"],
        "online_hr@5": None if online_hr is None else round(online_hr, 4),
        "latency_ms": headline["latency_ms"],
        "prefetched_bytes": tally.pushed_bytes,
        "wasted_bytes": wasted,
        "wasted_per_requested_byte": headline["wasted_per_requested_byte"],
        "click_to_push_ms": {
            "p50": _round(percentile(tally.click_to_push_ms, 0.5)),
            "p99": _round(percentile(tally.click_to_push_ms, 0.99)),
        },
        "lost_events": len(clicks) - processed,
        "duplicate_pushes": tally.duplicate_pushes,
        # What explains the figures above.
        "latency_reduction": headline["latency_reduction"],
        "requested_bytes": headline["requested_bytes"],
        "landings": len(clicks) - len(nexts),
        # The same figures with each session's landing counted as a request.
        "all_clicks": figures(range(len(clicks))),
        "pushes": tally.pushes,
        "late_pushes": tally.late_pushes,
        "processed_events": processed,
        "views_dropped": tally.feedback_dropped,
        # Feedback and views an agent still held at its close (a lost view is a lost event).
        "views_unsent": tally.feedback_unsent,
        # Sent, never acked by the time the agent closed; sent again after a lost socket.
        "views_unacked": tally.unacked_at_close,
        "views_resent": tally.resent,
        "agent_reconnects": tally.reconnects,
        "duration_s": round(duration_s, 1),
        "errors": len(tally.errors),
        "error_samples": tally.errors[:5],
    }
    summary.update(extra or {})
    return summary


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _ratio_drop(with_ms: Sequence[float], without_ms: Sequence[float]) -> float | None:
    """How much lower the mean latency is with prefetching (0.6: 60 % lower)."""
    if not with_ms or not without_ms:
        return None
    return round(1 - statistics.fmean(with_ms) / statistics.fmean(without_ms), 4)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def read_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text page as {(sample name, sorted labels): value}."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric_sum(
    values: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and wanted <= set(ls))
