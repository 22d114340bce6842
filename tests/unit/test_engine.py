"""The worker's per-event step, without Kafka: scoring, routing, idempotence, feedback."""

from __future__ import annotations

from pathlib import Path

import msgspec

from foresight.ring import HashRing, Member
from foresight.settings import Settings
from producers.datasets import read_yoochoose
from schemas import Context, Feedback, Interaction
from streams.engine import (
    RECENT_EVENT_IDS,
    ClientRecord,
    Engine,
    EngineConfig,
    dumps_record,
    engine_for,
    loads_record,
)
from streams.guard import AbuseGuard
from streams.planner import PlannerConfig
from streams.predictor import Foresight

RING = HashRing([Member("a", slot=1), Member("b", slot=4), Member("c", slot=6)])


def _click(client: str, item: str, ts: float, n: int, **context: object) -> Interaction:
    ctx = Context(**context) if context else None  # type: ignore[arg-type]
    return Interaction(
        event_id=f"{client}-{n}",
        client_id=client,
        content_id=item,
        kind="click",
        ts=ts,
        context=ctx,
    )


def _warm(engine: Engine) -> None:
    """Many sessions walking a -> b -> c, so b is very likely after a."""
    for n in range(200):
        for i, item in enumerate(("a", "b", "c")):
            engine.predictor.learn(f"warm-{n}", item, 1000.0 + n * 100 + i)


def test_commands_go_to_the_owners_slot_and_scoring_comes_first() -> None:
    engine = Engine(Foresight())
    _warm(engine)
    step = engine.on_interaction(_click("client-9", "a", 50_000.0, 1), None, RING, 0, 10)
    assert not step.scored  # nothing was predicted for this client before
    assert step.predictions[0][0] == "b"
    assert step.commands, "b is likely enough to prefetch on 4g"
    assert {slot for slot, _ in step.commands} == {RING.owner("client-9").slot}
    assert step.commands[0][1].content_id == "b"
    second = engine.on_interaction(_click("client-9", "b", 50_010.0, 2), step.record, RING, 0, 11)
    assert second.scored and second.hit
    assert second.record.hits == 1 and second.record.events == 2


def test_a_replayed_event_changes_nothing() -> None:
    engine = Engine(Foresight())
    step = engine.on_interaction(_click("c1", "a", 10.0, 1), None, RING, 2, 7)
    again = engine.on_interaction(_click("c1", "a", 10.0, 1), step.record, RING, 2, 7)
    assert again.duplicate and again.record == step.record and not again.commands


def test_a_copy_an_agent_sent_again_is_dropped_by_its_event_id() -> None:
    """The agent resends a view whose ack it missed; the copy is a new Kafka record (another
    offset) with the same event id, and must not be learned twice."""
    engine = Engine(Foresight())
    first = engine.on_interaction(_click("c1", "a", 10.0, 1), None, RING, 2, 7)
    other = engine.on_interaction(_click("c1", "b", 11.0, 2), first.record, RING, 2, 8)
    copy = engine.on_interaction(_click("c1", "a", 10.0, 1), other.record, RING, 2, 9)
    assert copy.duplicate and copy.record == other.record and not copy.commands
    # Only the last RECENT_EVENT_IDS are kept: the record stays small.
    record = other.record
    for n in range(3, 3 + RECENT_EVENT_IDS + 5):
        record = engine.on_interaction(
            _click("c1", "x", 12.0 + n, n), record, RING, 2, 7 + n
        ).record
    assert len(record.recent_events) == RECENT_EVENT_IDS


def test_save_data_and_an_empty_ring_send_nothing() -> None:
    engine = Engine(Foresight())
    _warm(engine)
    saving = engine.on_interaction(_click("c2", "a", 9e4, 1, save_data=True), None, RING, 0, 1)
    assert saving.predictions and not saving.commands
    nowhere = engine.on_interaction(_click("c3", "a", 9e4, 1), None, HashRing(), 0, 2)
    assert not nowhere.commands and nowhere.unrouted > 0


def test_every_prefetch_an_empty_ring_cannot_route_is_counted() -> None:
    everything = PlannerConfig(
        thresholds={"4g": 0.0, "3g": 0.0, "2g": 0.0, "slow-2g": 0.0}, threshold_floor=0.0
    )
    engine = Engine(Foresight(), EngineConfig(planner=everything))
    _warm(engine)
    event = _click("c4", "a", 9e4, 1)
    routed = engine.on_interaction(event, None, RING, 0, 1)
    nowhere = engine.on_interaction(event, None, HashRing(), 0, 1)
    assert len(routed.commands) > 1 and routed.unrouted == 0
    assert nowhere.unrouted == len(routed.commands) and not nowhere.commands


def test_a_scraper_is_blocked_and_alerted_once_while_people_keep_their_prefetches(
    yoochoose_dir: Path,
) -> None:
    engine = Engine(Foresight(), guard=AbuseGuard())
    records: dict[str, ClientRecord] = {}
    people = sorted(read_yoochoose(yoochoose_dir / "train_tr.tsv"), key=lambda e: e.ts)[:20000]
    for offset, event in enumerate(people):
        step = engine.on_interaction(event, records.get(event.client_id), RING, 0, offset)
        records[event.client_id] = step.record
    start = people[-1].ts
    bot = None
    alerts = []
    for n in range(60):  # a fast, regular walk over sequential ids
        event = _click("bot-1", str(214500000 + n), start + n * 0.5, n)
        bot = engine.on_interaction(event, bot.record if bot else None, RING, 0, 30000 + n)
        if bot.alert is not None:
            alerts.append((n, bot.alert))
    assert bot is not None and bot.blocked and not bot.commands
    assert len(alerts) == 1 and alerts[0][0] < 20
    assert alerts[0][1].client_id == "bot-1"
    flagged_people = [c for c, r in records.items() if r.guard.flagged]
    assert len(flagged_people) <= 0.01 * len(records)


def test_an_item_commanded_once_is_not_commanded_again_before_it_expires() -> None:
    engine = Engine(Foresight())
    _warm(engine)
    first = engine.on_interaction(_click("c4", "a", 9e4, 1), None, RING, 0, 1)
    again = engine.on_interaction(_click("c4", "a", 9e4 + 5, 2), first.record, RING, 0, 2)
    first_items = {c.content_id for _, c in first.commands}
    assert "b" in first_items
    assert "b" not in {c.content_id for _, c in again.commands}


def test_feedback_moves_the_threshold() -> None:
    engine = Engine(Foresight())
    record = ClientRecord()
    hit = Feedback(client_id="c", content_id="x", version=1, outcome="hit", latency_ms=1, ts=1)
    unused = Feedback(
        client_id="c", content_id="x", version=1, outcome="unused", latency_ms=0, ts=2
    )
    lowered = engine.on_feedback(hit, record)
    raised = engine.on_feedback(unused, record)
    assert lowered.threshold_offset < record.threshold_offset < raised.threshold_offset


def test_the_record_round_trips_through_bytes() -> None:
    engine = Engine(Foresight())
    step = engine.on_interaction(_click("c5", "a", 10.0, 1), None, RING, 3, 99)
    data = dumps_record(step.record)
    assert loads_record(data) == step.record
    assert len(data) < 2048


def _fan_out(engine: Engine, successors: int = 8) -> None:
    """Sessions going from a to one of ``successors`` items, the earlier ones more often."""
    n = 0
    for i in range(successors):
        for _ in range(2 * (successors - i)):
            engine.predictor.learn(f"fan-{n}", "a", 1000.0 + 100 * n)
            engine.predictor.learn(f"fan-{n}", f"b{i}", 1010.0 + 100 * n)
            n += 1


EAGER = PlannerConfig(
    thresholds={"4g": 0.0, "3g": 0.0, "2g": 0.0, "slow-2g": 0.0}, budget_bytes_per_minute=None
)


def test_the_planner_reaches_prefetch_k_deep_while_scoring_stays_at_top_k() -> None:
    engine = Engine(Foresight(), EngineConfig(top_k=2, prefetch_k=6, planner=EAGER))
    _fan_out(engine)
    step = engine.on_interaction(_click("c6", "a", 9e4, 1), None, RING, 0, 1)
    ranked = [item for item, _ in step.predictions]
    assert len(ranked) == 6
    assert step.record.last_prediction == ranked[:2]  # only the scored top k is kept
    commanded = {c.content_id: c.rank for _, c in step.commands}
    assert max(commanded.values()) > 2, "items past the scored top k are prefetched"
    # A click on a prefetched item ranked past the top k is not a hit of the online HR@k ...
    deep = next(item for item, rank in commanded.items() if rank > 2)
    miss = engine.on_interaction(_click("c6", deep, 9e4 + 5, 2), step.record, RING, 0, 2)
    assert miss.scored and not miss.hit and miss.record.hits == 0
    # ... and one on the top prediction is.
    hit = engine.on_interaction(_click("c6", ranked[0], 9e4 + 5, 2), step.record, RING, 0, 2)
    assert hit.scored and hit.hit


def test_a_prefetch_k_below_top_k_prefetches_only_that_deep() -> None:
    engine = Engine(Foresight(), EngineConfig(top_k=5, prefetch_k=1, planner=EAGER))
    _fan_out(engine)
    step = engine.on_interaction(_click("c7", "a", 9e4, 1), None, RING, 0, 1)
    assert len(step.predictions) == len(step.record.last_prediction) == 5
    assert [c.rank for _, c in step.commands] == [1]


def test_engine_for_wires_both_ks_from_the_settings() -> None:
    engine = engine_for(Settings(top_k=5, prefetch_top_k=12))
    assert (engine.config.top_k, engine.config.prefetch_k) == (5, 12)
    assert engine_for(Settings()).config.top_k == 5  # the replay's online HR@5


def test_a_record_stored_before_prefetch_k_existed_still_loads() -> None:
    stored = msgspec.msgpack.encode(
        {
            "session": [["a", "b"], 12.5],
            "last_prediction": ["c", "d", "e", "f", "g"],
            "tokens": 1.0e6,
            "counted_at": 12.5,
            "threshold_offset": -0.01,
            "prefetched": {"c": 612.5},
            "partition": 3,
            "offset": 41,
            "events": 2,
            "hits": 1,
        }
    )
    record = loads_record(stored)
    assert record.last_prediction == ["c", "d", "e", "f", "g"] and record.hits == 1
    assert record.session.items == ["a", "b"] and record.prefetched == {"c": 612.5}


def test_a_click_learned_without_a_prediction_plans_nothing_and_is_not_scored_next() -> None:
    engine = Engine(Foresight())
    ring = HashRing([Member("node-0", slot=0)])
    events = [
        Interaction(event_id=f"e{n}", client_id="c", content_id=item, kind="click", ts=float(n))
        for n, item in enumerate(["a", "b", "a", "b", "a"])
    ]
    record = None
    for offset, event in enumerate(events[:-1]):
        record = engine.on_interaction(event, record, ring, 0, offset).record
    shed = engine.on_interaction(events[-1], record, ring, 0, 4, predict=False)
    assert shed.commands == [] and shed.predictions == [] and shed.record.last_prediction == []
    # Learned all the same: the session advanced.
    assert shed.record.session.items[-1] == "a" and shed.record.events == 5
