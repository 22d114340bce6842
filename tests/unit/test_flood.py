"""One client cannot poison the shared model (issue 12): a flood is learned up to a cap, flagged
once, and teaches nothing after that, however its events arrive and whatever their timestamps.

An integrator sent 5,000 views in one second from one agent: every one was learned, and
P(B after A) became 0.994 for every client. Each test here starts from the same warm model (the
first 20,000 clicks of train_full.tsv through the worker's engine, guard included) and compares
a flood with one ordinary session of the same client on top of it.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from foresight.ring import HashRing, Member
from producers.datasets import read_yoochoose
from schemas import Interaction, SecurityAlert
from streams.engine import ClientRecord, Engine, dumps_record, loads_record
from streams.evaluation import read_sessions
from streams.guard import AbuseGuard
from streams.predictor import (
    ClientState,
    Foresight,
    ForesightConfig,
    contribution_tokens,
    dumps_global_state,
)

RING = HashRing([Member("node", slot=0)])
WARM = 20_000  # time-ordered train_full clicks: a warm model, and a warm guard
FLOOD = 5_000
# The ordinary session a flood is compared with: a dozen clicks at a person's pace (a flood
# gets 9 through, each with its full 10-click context of rules; a session's first clicks have
# less of one).
ORDINARY = 12
Click = tuple[str, float]  # content_id, ts


@pytest.fixture(scope="module")
def clicks(yoochoose_dir: Path) -> list[Interaction]:
    return sorted(read_yoochoose(yoochoose_dir / "train_full.tsv"), key=lambda e: e.ts)


@pytest.fixture(scope="module")
def warm(clicks: list[Interaction]) -> bytes:
    """The worker's engine after the first WARM clicks, as bytes (each test loads its own)."""
    engine = Engine(Foresight(), guard=AbuseGuard())
    records: dict[str, ClientRecord] = {}
    for offset, event in enumerate(clicks[:WARM]):
        step = engine.on_interaction(event, records.get(event.client_id), RING, 0, offset)
        records[event.client_id] = step.record
    return pickle.dumps(engine)


@pytest.fixture(scope="module")
def pair(clicks: list[Interaction]) -> tuple[str, str]:
    """A, the warm model's most clicked item, and B, the most clicked item never after A."""
    counts: dict[str, int] = {}
    for event in clicks[:WARM]:
        counts[event.content_id] = counts.get(event.content_id, 0) + 1
    ranked = sorted(counts, key=lambda item: (-counts[item], item))
    a = ranked[0]
    after_a = set()
    previous: dict[str, str] = {}
    for event in clicks[:WARM]:
        if previous.get(event.client_id) == a:
            after_a.add(event.content_id)
        previous[event.client_id] = event.content_id
    b = next(item for item in ranked[1:] if item not in after_a)
    return a, b


def load(warm: bytes) -> Engine:
    engine: Engine = pickle.loads(warm)
    return engine


def start(clicks: list[Interaction]) -> float:
    return clicks[WARM - 1].ts + 60.0


def in_one_second(items: list[str], t0: float) -> list[Click]:
    return [(item, t0 + i / len(items)) for i, item in enumerate(items)]


def at_human_pace(items: list[str], t0: float, seed: int = 3) -> list[Click]:
    """A person's clicks: gaps of 15 s to 1.5 min."""
    rng = random.Random(seed)
    out, ts = [], t0
    for item in items:
        out.append((item, ts))
        ts += rng.uniform(15.0, 90.0)
    return out


def alternating(a: str, b: str, n: int) -> list[str]:
    return [a if i % 2 == 0 else b for i in range(n)]


def distinct(clicks: list[Interaction], n: int) -> list[str]:
    """n distinct items: the catalogue of train_full in order of first click, then new ids."""
    known = list(dict.fromkeys(e.content_id for e in clicks))
    return (known + [f"new-{i}" for i in range(n)])[:n]


def play(engine: Engine, client: str, session: Iterable[Click]) -> list[SecurityAlert]:
    """The client's clicks through the worker's step, its record kept as the table keeps it
    (bytes); the alerts they raised."""
    record: ClientRecord | None = None
    alerts = []
    offset = 1_000_000
    for n, (item, ts) in enumerate(session):
        event = Interaction(
            event_id=f"{client}-{n}", client_id=client, content_id=item, kind="view", ts=ts
        )
        step = engine.on_interaction(event, record, RING, 0, offset + n)
        record = loads_record(dumps_record(step.record))
        if step.alert is not None:
            alerts.append(step.alert)
    return alerts


def learn(model: Foresight, client: str, session: Iterable[Click]) -> None:
    for item, ts in session:
        model.learn(client, item, ts)


def reader(model: Foresight, last: str) -> list[tuple[str, float]]:
    """What the model predicts for another client, whose last click is ``last``."""
    model.set_client_state("reader", ClientState([last], 0.0))
    try:
        return model.predict("reader", 20)
    finally:
        model.forget("reader")


def place(predictions: list[tuple[str, float]], item: str) -> int:
    """The item's rank among the predictions (1: first), one past the end when absent."""
    ranked = [candidate for candidate, _ in predictions]
    return ranked.index(item) + 1 if item in ranked else len(ranked) + 1


def mass(model: Foresight) -> list[float]:
    """The weight in each rule table, and the popularity, in all."""
    signals = model.signals
    tables = (signals.forward, signals.markov, signals.backward)
    return [sum(row.total for row in table.rows.values()) for table in tables] + [
        signals.popularity.total
    ]


def assert_moved_no_more(flood: Foresight, ordinary: Foresight, warm: Foresight) -> None:
    """The flood taught the shared signals no more clicks, no more rule weight in any table
    and no more popularity than the ordinary session; no item gained more popularity, and no
    rule between the session's items more weight."""
    f, o = flood.signals, ordinary.signals
    assert f.events <= o.events
    assert all(a <= b for a, b in zip(mass(flood), mass(ordinary), strict=True))
    start = warm.signals.popularity.scores

    def gained(model: Foresight) -> dict[str, float]:
        scores = model.signals.popularity.scores
        return {item: score - start.get(item, 0.0) for item, score in scores.items()}

    assert max(gained(flood).values()) <= max(gained(ordinary).values())
    clicked = [item for item in o.popularity.scores if gained(ordinary)[item] > 0]
    for table, other in ((f.forward, o.forward), (f.markov, o.markov), (f.backward, o.backward)):
        for a in clicked:
            for b in clicked:
                assert table.row(a).scores.get(b, 0.0) <= other.row(a).scores.get(b, 0.0)


@pytest.mark.parametrize("kind", ["alternating", "distinct"])
def test_a_flood_teaches_the_shared_model_no_more_than_one_ordinary_session(
    kind: str, warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    """The predictor alone (no guard): its budget bounds what one client teaches."""
    a, b = pair
    items = alternating(a, b, FLOOD) if kind == "alternating" else distinct(clicks, FLOOD)
    t0 = start(clicks)
    flood, ordinary = load(warm).predictor, load(warm).predictor
    learn(flood, "integrator", in_one_second(items, t0))
    learn(ordinary, "integrator", at_human_pace(items[:ORDINARY], t0))

    first, second = items[0], items[1]
    flooded, usual = reader(flood, first), reader(ordinary, first)
    print(
        f"{kind}: {second} after {first}: rank {place(flooded, second)}, "
        f"p {dict(flooded).get(second, 0.0):.4f} after the flood; rank {place(usual, second)}, "
        f"p {dict(usual).get(second, 0.0):.4f} after {ORDINARY} ordinary clicks"
    )
    assert_moved_no_more(flood, ordinary, load(warm).predictor)
    if kind == "alternating":  # the figure: P(B after A) for everyone
        assert place(flooded, second) >= place(usual, second)
        assert dict(flooded).get(second, 0.0) <= dict(usual).get(second, 0.0)
    # The flooder's own session still advances: its predictions follow its last click.
    state = flood.client_state("integrator")
    assert state is not None and state.items[-1] == items[-1]


@pytest.mark.parametrize("kind", ["alternating", "distinct"])
def test_a_flood_through_the_worker_raises_one_alert_and_moves_no_more_than_a_session(
    kind: str, warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    a, b = pair
    items = alternating(a, b, FLOOD) if kind == "alternating" else distinct(clicks, FLOOD)
    t0 = start(clicks)
    flood, ordinary = load(warm), load(warm)
    alerts = play(flood, "integrator", in_one_second(items, t0))
    quiet = play(ordinary, "integrator", at_human_pace(items[:ORDINARY], t0))

    assert len(alerts) == 1 and alerts[0].client_id == "integrator"
    assert quiet == []
    assert_moved_no_more(flood.predictor, ordinary.predictor, load(warm).predictor)
    if kind == "alternating":
        flooded, usual = reader(flood.predictor, items[0]), reader(ordinary.predictor, items[0])
        assert place(flooded, items[1]) >= place(usual, items[1])
        assert dict(flooded).get(items[1], 0.0) <= dict(usual).get(items[1], 0.0)


FORGED: dict[str, Callable[[int, float], float]] = {  # (i, t0) -> ts of the i-th view
    "all at one instant": lambda i, t0: t0,
    "running backwards": lambda i, t0: t0 - i / FLOOD,
    "jittered within a second": lambda i, t0: t0 + ((i * 7919) % FLOOD) / FLOOD,
}


@pytest.mark.parametrize("pattern", sorted(FORGED))
def test_forged_timestamps_do_not_hide_a_flood(
    pattern: str, warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    a, b = pair
    t0 = start(clicks)
    stamp = FORGED[pattern]
    flood, ordinary = load(warm), load(warm)
    items = alternating(a, b, FLOOD)
    alerts = play(flood, "integrator", [(item, stamp(i, t0)) for i, item in enumerate(items)])
    play(ordinary, "integrator", at_human_pace(items[:ORDINARY], t0))
    assert len(alerts) == 1
    assert_moved_no_more(flood.predictor, ordinary.predictor, load(warm).predictor)
    flooded, usual = reader(flood.predictor, a), reader(ordinary.predictor, a)
    assert place(flooded, b) >= place(usual, b)
    assert dict(flooded).get(b, 0.0) <= dict(usual).get(b, 0.0)


def test_a_flood_forged_at_a_persons_pace_is_learned_only_up_to_the_lifetime_allowance(
    warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    """Timestamps a minute apart look like a person's: only a bound that does not read them
    holds, the client's lifetime allowance (a floor, then a share of the shared model)."""
    model = load(warm).predictor
    config = model.config
    before = model.signals.events
    learn(model, "integrator", at_human_pace(alternating(*pair, FLOOD), start(clicks)))
    taught = model.signals.events - before
    allowance = config.lifetime_floor + config.lifetime_share * model.signals.events
    assert taught == math.ceil(allowance) < FLOOD
    state = model.client_state("integrator")
    assert state is not None and state.contributed == taught


def test_a_flagged_client_teaches_nothing_more_but_keeps_its_own_predictions(
    warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    a, b = pair
    engine = load(warm)
    t0 = start(clicks)
    record: ClientRecord | None = None
    flagged_at = None
    for n, (item, ts) in enumerate(in_one_second(alternating(a, b, 200), t0)):
        event = Interaction(
            event_id=f"f-{n}", client_id="integrator", content_id=item, kind="view", ts=ts
        )
        step = engine.on_interaction(event, record, RING, 0, 2_000_000 + n)
        record = step.record
        if step.alert is not None:
            flagged_at = n
    assert flagged_at is not None and record is not None and record.guard.flagged
    signals = dumps_global_state(engine.predictor.signals)
    # Later, at a person's pace: still nothing reaches the shared model.
    later = at_human_pace([e.content_id for e in clicks[WARM : WARM + 20]], t0 + 600.0)
    for n, (item, ts) in enumerate(later):
        event = Interaction(
            event_id=f"g-{n}", client_id="integrator", content_id=item, kind="view", ts=ts
        )
        step = engine.on_interaction(event, record, RING, 0, 3_000_000 + n)
        record = step.record
        assert step.blocked and not step.commands and step.predictions
        assert record.session.items[-1] == item  # its own session advances
    assert dumps_global_state(engine.predictor.signals) == signals


def test_the_budget_survives_a_restart(
    warm: bytes, clicks: list[Interaction], pair: tuple[str, str]
) -> None:
    """The budget lives in the client's record (the changelogged table): a flood split across
    a worker restart is capped as if it had not been."""
    session = in_one_second(alternating(*pair, 400), start(clicks))
    warm_events = load(warm).predictor.signals.events
    whole = load(warm).predictor
    learn(whole, "integrator", session)
    split = load(warm).predictor
    learn(split, "integrator", session[:200])
    state = split.client_state("integrator")
    assert state is not None
    stored = dumps_record(ClientRecord(session=state))
    restarted = Foresight(signals=split.signals)  # the signals come back from the snapshot
    restarted.set_client_state("integrator", loads_record(stored).session)
    learn(restarted, "integrator", session[200:])
    taught = restarted.signals.events - warm_events
    assert taught == whole.signals.events - warm_events < ORDINARY


def long_session(clicks: list[Interaction], n: int) -> list[Click]:
    """n clicks of real sessions after the warm ones, one after the other, each with its own
    recorded gaps and a minute between sessions: one person's long visit."""
    by_client: dict[str, list[Interaction]] = {}
    for event in clicks[WARM:]:
        by_client.setdefault(event.client_id, []).append(event)
    out: list[Click] = []
    ts = start(clicks)
    for events in by_client.values():
        previous = events[0].ts
        for event in events:
            ts += event.ts - previous
            previous = event.ts
            out.append((event.content_id, ts))
        ts += 60.0
        if len(out) >= n:
            return out[:n]
    raise AssertionError("not enough clicks")


UNCAPPED = ForesightConfig(burst=math.inf, lifetime_floor=2**62)


def test_a_long_ordinary_session_is_learned_in_full(warm: bytes, clicks: list[Interaction]) -> None:
    """200 clicks at a person's pace (real gaps, bursts included): every one is learned, as
    it was before the budget existed."""
    session = long_session(clicks, 200)
    capped = load(warm).predictor
    uncapped = Foresight(UNCAPPED, signals=load(warm).predictor.signals)
    learn(capped, "person", session)
    learn(uncapped, "person", session)
    assert capped.signals.events == uncapped.signals.events
    assert dumps_global_state(capped.signals) == dumps_global_state(uncapped.signals)
    # And through the worker, guard included: not flagged, every click learned.
    engine = load(warm)
    before = engine.predictor.signals.events
    assert play(engine, "person", session) == []
    assert engine.predictor.signals.events == before + 200


def as_replayed(session: list[tuple[float, str]], speed: float, max_gap_s: float) -> list[float]:
    """The session's click times as `foresight replay` plays them (gaps / speed, capped)."""
    times, ts = [], 0.0
    for n, (at, _) in enumerate(session):
        if n:
            ts += min(max(0.0, (at - session[n - 1][0]) / speed), max_gap_s)
        times.append(ts)
    return times


@pytest.mark.parametrize("name", ["train_full.tsv", "test.tsv"])
def test_no_real_session_ever_runs_out_of_budget(name: str, yoochoose_dir: Path) -> None:
    """The eval and the replay learn exactly what they learned before the budget: no session
    of the data, as recorded or replayed 10 times faster with gaps of at most 2 s (the
    replay's defaults), is ever short of a token."""
    config = ForesightConfig()
    for _, session in read_sessions(yoochoose_dir / name):
        for times in ([at for at, _ in session], as_replayed(session, 10.0, 2.0)):
            state = ClientState()
            for ts in times:
                tokens, refilled_at = contribution_tokens(state, ts, config)
                assert tokens >= 1.0
                state = ClientState(tokens=tokens - 1.0, refilled_at=refilled_at)


def test_a_view_stamped_a_month_ahead_does_not_take_over_popularity(
    warm: bytes, clicks: list[Interaction]
) -> None:
    engine = load(warm)
    now = start(clicks)
    forged = Interaction(
        event_id="forged-1",
        client_id="forger",
        content_id="forged-item",
        kind="view",
        ts=now + 30 * 86400.0,
    )
    engine.on_interaction(forged, None, RING, 0, 2_000_000, received_at=now)
    records: dict[str, ClientRecord] = {}
    for offset, event in enumerate(clicks[WARM : WARM + 2000]):
        step = engine.on_interaction(
            event, records.get(event.client_id), RING, 0, WARM + offset, received_at=event.ts
        )
        records[event.client_id] = step.record
    # A newcomer is offered the popular items: the forged one is one view among thousands.
    offered = [item for item, _ in engine.predictor.predict("newcomer", 5)]
    assert "forged-item" not in offered, offered
