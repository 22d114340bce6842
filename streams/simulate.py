"""Offline simulation of the whole prefetch loop: what hit ratio and what waste a threshold gives.

One process, no Kafka: the worker's own :class:`~streams.engine.Engine`, built by
:func:`streams.engine.engine_for` as the worker builds it, driven over session logs the way a
replay would see it.

1. Warm: every training click goes through :meth:`Engine.on_interaction` in timestamp order,
   with the shipped planner; nothing is scored or counted.
2. Replay: the test clicks in global timestamp order (ties keep the order of
   :func:`streams.evaluation.read_sessions`). Each test session is a client whose agent starts
   with an empty, unbounded local cache. A click requests its content: a HIT when the cache
   holds it (pushed earlier, or fetched on an earlier miss), else a MISS, fetched from the node
   into the cache. A pushed item's first request also sends ``hit`` feedback to
   :meth:`Engine.on_feedback`, before the click itself goes through
   :meth:`Engine.on_interaction` (every request, hit or miss, is learned). Each commanded item
   whose probability is worth its size (:func:`foresight.push_rule.worth_its_bytes`, the cache
   node's rule, with the point's K) and that the client does not hold yet is pushed into its
   cache, unused until requested.
3. Tally: sizes are the origin catalogue's (:func:`origin.catalog.spec_of`, the exact body size
   without rendering it). Wasted bytes are those of pushed items never requested. As in a
   replay (:mod:`foresight.replay.measure`), a session's first click is its landing, the page
   load that brings its agent up: ``requests``, ``hit_ratio`` and ``requested_bytes`` are over
   the clicks after it, and the ``*_all_clicks`` figures count landings as requests too.

A :class:`Point` sets the base threshold of the planner's default connection class (the
yoochoose clicks carry no connection; the clients' feedback offsets still move it), how many
predictions the planner considers, and the push rule's K. The online HR@5 stays the top 5's.
Warming depends on none of them (the predictor learns the same; no training client comes back
in the test), so :func:`sweep` reads and warms once and gives each point its own copy of the
warm engine (a pickle round trip: 0.7 s; 20 to 27 s to warm on train_full, then about 5 s a
point); the model learns online, so every point is an independent, deterministic run.
"""

from __future__ import annotations

import functools
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from foresight.push_rule import worth_its_bytes
from foresight.ring import HashRing, Member
from foresight.settings import Settings
from origin.catalog import spec_of
from schemas import Feedback, Interaction
from streams.engine import ClientRecord, Engine, engine_for
from streams.evaluation import Session, read_sessions
from streams.planner import PlannerConfig

log = logging.getLogger(__name__)

Click = tuple[float, str, str]  # (ts, client_id, content_id)
Progress = Callable[[int], None]

HR_CUTOFF = 5
PROGRESS_EVERY = 1000
RING = HashRing([Member("simulated-node", slot=0)])


@dataclass(frozen=True)
class Point:
    """One configuration of the loop: the default class's base threshold, how many
    predictions the planner considers, and the push rule's bytes per unit of odds (None: no
    rule)."""

    threshold: float
    prefetch_k: int
    bytes_per_odds: float | None


@dataclass(frozen=True)
class SimulationResult:
    """What one replay of the test clicks gave, at one :class:`Point`."""

    threshold: float
    prefetch_k: int
    bytes_per_odds: float | None
    requests: int  # clicks after their session's first
    hits: int
    hit_ratio: float
    landings: int  # sessions' first clicks
    hit_ratio_all_clicks: float  # a landing counted as a request (it never hits)
    hr_at_5: float  # the engine's own online HR@5 over its scored clicks
    pushes: int
    not_worth_bytes: int  # commands the push rule kept from being pushed
    prefetched_bytes: int
    requested_bytes: int
    wasted_bytes: int
    wasted_items: int
    wasted_per_requested_byte: float
    wasted_per_requested_byte_all_clicks: float
    blocked_steps: int  # clicks on which the abuse guard stopped the client's prefetches
    seconds: float = field(default=0.0, compare=False)

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@functools.cache
def content_size(content_id: str) -> int:
    """The body size the origin serves for ``content_id`` (every version has the same)."""
    return spec_of(content_id).size


def replay_order(sessions: Sequence[Session]) -> list[Click]:
    """All clicks by timestamp; the stable sort keeps sessions' order and each one's clicks."""
    clicks = [(ts, client, item) for client, session in sessions for ts, item in session]
    clicks.sort(key=lambda click: click[0])
    return clicks


def _reporting(clicks: Iterable[Click], progress: Progress | None) -> Iterator[Click]:
    pending = 0
    for click in clicks:
        yield click
        pending += 1
        if progress is not None and pending == PROGRESS_EVERY:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)


def _click(offset: int, click: Click) -> Interaction:
    ts, client, item = click
    return Interaction(
        event_id=f"sim-{offset}", client_id=client, content_id=item, kind="click", ts=ts
    )


def _hit(click: Click) -> Feedback:
    ts, client, item = click
    return Feedback(
        client_id=client, content_id=item, version=1, outcome="hit", latency_ms=0, ts=ts
    )


def warm(
    engine: Engine, clicks: Sequence[Click], progress: Progress | None = None
) -> dict[str, ClientRecord]:
    """Feed ``clicks`` through ``engine`` at offsets 0.. of one partition; the clients' records."""
    records: dict[str, ClientRecord] = {}
    for offset, click in enumerate(_reporting(clicks, progress)):
        records[click[1]] = engine.on_interaction(
            _click(offset, click), records.get(click[1]), RING, 0, offset
        ).record
    return records


def replay(
    engine: Engine,
    records: dict[str, ClientRecord],
    clicks: Sequence[Click],
    *,
    first_offset: int,
    bytes_per_odds: float | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Replay ``clicks`` as requests of agents with empty caches; updates ``records``.

    ``bytes_per_odds`` is the push rule's K, as the cache node applies it (None: no rule).
    """
    caches: dict[str, set[str]] = {}  # client -> content it holds
    unused: dict[tuple[str, str], int] = {}  # (client, content) pushed, not requested -> size
    hits = scored = top_hits = pushes = prefetched = requested = landed = blocked = unworthy = 0
    for offset, click in enumerate(_reporting(clicks, progress), start=first_offset):
        _, client, item = click
        if client in caches:
            requested += content_size(item)
        else:
            landed += content_size(item)
        cache = caches.setdefault(client, set())
        if item in cache:
            hits += 1
            if unused.pop((client, item), None) is not None:
                records[client] = engine.on_feedback(_hit(click), records.get(client))
        else:
            cache.add(item)  # a miss: fetched from the node on demand
        previous = records.get(client)
        step = engine.on_interaction(_click(offset, click), previous, RING, 0, offset)
        records[client] = step.record
        if step.scored and previous is not None:
            scored += 1
            top_hits += item in previous.last_prediction[:HR_CUTOFF]
        blocked += step.blocked
        for _, command in step.commands:
            content = command.content_id
            size = content_size(content)
            # The node's order: the push rule once it knows the size, then what the agent holds.
            if not worth_its_bytes(command.probability, size, bytes_per_odds):
                unworthy += 1
            elif content not in cache:
                cache.add(content)
                unused[(client, content)] = size
                pushes += 1
                prefetched += size
    landings = len(caches)
    requests = len(clicks) - landings
    wasted = sum(unused.values())
    planner = engine.config.planner
    return SimulationResult(
        threshold=planner.thresholds[planner.default_connection],
        prefetch_k=engine.config.prefetch_k,
        bytes_per_odds=bytes_per_odds,
        requests=requests,
        hits=hits,  # a landing finds an empty cache: every hit is a request's
        hit_ratio=hits / max(1, requests),
        landings=landings,
        hit_ratio_all_clicks=hits / max(1, len(clicks)),
        hr_at_5=top_hits / max(1, scored),
        pushes=pushes,
        not_worth_bytes=unworthy,
        prefetched_bytes=prefetched,
        requested_bytes=requested,
        wasted_bytes=wasted,
        wasted_items=len(unused),
        wasted_per_requested_byte=wasted / max(1, requested),
        wasted_per_requested_byte_all_clicks=wasted / max(1, requested + landed),
        blocked_steps=blocked,
    )


def with_threshold(planner: PlannerConfig, threshold: float | None) -> PlannerConfig:
    """``planner`` with its default connection class's base threshold set to ``threshold``."""
    if threshold is None:
        return planner
    thresholds = {**planner.thresholds, planner.default_connection: threshold}
    return replace(planner, thresholds=thresholds)


def sweep(
    train_path: str | Path,
    test_path: str | Path,
    points: Sequence[Point | float | None],
    *,
    planner: PlannerConfig | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> list[SimulationResult]:
    """One :class:`SimulationResult` per point, in that order.

    A float point is a base threshold with the shipped prefetch k and K, None the shipped
    point: the planner's threshold and ``settings``' ``prefetch_top_k`` and
    ``push_bytes_per_odds``. ``planner`` replaces the shipped PlannerConfig (a point's threshold
    then overrides its default class). ``progress(n)`` advances by clicks processed: the
    training clicks once, then the test clicks once per point.
    """
    settings = settings or Settings()
    train = replay_order(read_sessions(train_path))
    test = replay_order(read_sessions(test_path))
    warm_engine = engine_for(settings)
    started = time.perf_counter()
    warm_records = warm(warm_engine, train, progress)
    frozen = pickle.dumps(warm_engine, protocol=pickle.HIGHEST_PROTOCOL)
    log.info("warmed on %d clicks in %.1f s", len(train), time.perf_counter() - started)
    shipped = warm_engine.config
    base = planner or shipped.planner
    results = []
    for given in points:
        point = _resolve(given, base, settings)
        started = time.perf_counter()
        engine: Engine = pickle.loads(frozen)
        engine.config = replace(
            shipped,
            prefetch_k=point.prefetch_k,
            planner=with_threshold(base, point.threshold),
        )
        result = replay(
            engine,
            dict(warm_records),  # records are replaced, never mutated: a shallow copy suffices
            test,
            first_offset=len(train),
            bytes_per_odds=point.bytes_per_odds,
            progress=progress,
        )
        results.append(replace(result, seconds=time.perf_counter() - started))
    return results


def shipped_point(settings: Settings, planner: PlannerConfig | None = None) -> Point:
    """The point the worker and the cache nodes run with ``settings`` and ``planner``."""
    planner = planner or PlannerConfig()
    return Point(
        planner.thresholds[planner.default_connection],
        settings.prefetch_top_k,
        settings.push_bytes_per_odds,
    )


def _resolve(point: Point | float | None, planner: PlannerConfig, settings: Settings) -> Point:
    if isinstance(point, Point):
        return point
    shipped = shipped_point(settings, planner)
    return shipped if point is None else replace(shipped, threshold=point)


def simulate(
    train_path: str | Path,
    test_path: str | Path,
    *,
    threshold: float | None = None,
    prefetch_k: int | None = None,
    planner: PlannerConfig | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Warm on ``train_path``, replay ``test_path`` at ``threshold`` and ``prefetch_k`` (None:
    the shipped ones) with the push rule of ``settings``."""
    settings = settings or Settings()
    shipped = _resolve(threshold, planner or PlannerConfig(), settings)
    point = replace(shipped, prefetch_k=prefetch_k or shipped.prefetch_k)
    (result,) = sweep(
        train_path, test_path, [point], planner=planner, settings=settings, progress=progress
    )
    return result
