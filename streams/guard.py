"""The abuse guard: an online anomaly detector over each client's request pattern.

A scraper walks the catalogue: fast, machine-regular, never re-clicking, asking for ids in
sequence and for items nobody has asked for. The guard keeps a small window of each client's
recent requests, turns it into a few features scaled into [0, 1] with fixed ranges, and scores
them with one global River ``HalfSpaceTrees`` (score first, then learn). A client whose score
stays at or above the threshold for ``patience`` events in a row, once it has made
``min_events`` requests, is flagged for good: it gets no more prefetches, and one SecurityAlert
names the features that stood out.

Beside the trees, a plain rule: a flood. ``flood_events`` of a client's last ``window``
requests stamped within ``flood_span_s`` of the newest one's flag it at once, with a
SecurityAlert of its own (detector ``flood``), even while the trees are still cold. Counting
around the newest timestamp rather than over the window's span catches a flood that repeats
one timestamp, runs backwards or jumps between two instants. Timestamps spaced like a
person's clicks hide a flood from any rule that reads them: the predictor's lifetime
allowance bounds what such a client teaches, and the trees still see its pattern.

Everything is a function of the events alone (their own timestamps, a seeded detector), so the
same events in the same order give the same scores and the same decisions. In a worker: one
guard per process, each client's ClientState in a table (``step``), no prefetches while
``decision.flagged``, and ``alert(decision)`` published when ``decision.newly_flagged``.
"""

from __future__ import annotations

import itertools
import math
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from importlib.metadata import version
from operator import add
from typing import Protocol

import msgspec
from river import anomaly, stats

from schemas import SecurityAlert

DETECTOR = "half-space-trees"
_HEADER = f"foresight-guard/1 river={version('river')}\n".encode()
_MIN_SPAN_S = 1e-3
_LOG_RATE_RANGE = (-2.0, 1.0)  # log10 of events/s: one per 100 s (or slower) .. ten a second
_LENGTH_MAX = 3.0  # log10(1 + requests): a thousand requests reach the top
FLOOD_DETECTOR = "flood"
# The flood rule, measured on train_full.tsv and test.tsv: no session has more than 7 clicks
# within 0.5 s of one of its clicks; played as `foresight replay --speed 50` plays them (the
# fastest replay the tests run; gaps / 50, at most 2 s), 11. Sixteen leaves a margin over both
# and takes a flood of thousands a second 16 requests to flag.
FLOOD_EVENTS = 16
FLOOD_SPAN_S = 0.5


class ClientState(msgspec.Struct, frozen=True, array_like=True):
    """One client's last requests and its flag: small, immutable, bytes for a Faust table."""

    events: int = 0
    ts: tuple[float, ...] = ()
    items: tuple[str, ...] = ()
    fresh: tuple[bool, ...] = ()  # nobody trusted (nor this client, lately) had asked for it
    streak: int = 0  # consecutive events scored at or above the threshold
    flagged_at: int = 0  # the request count at which the client was flagged; 0: not flagged

    @property
    def flagged(self) -> bool:
        return self.flagged_at > 0

    def to_bytes(self) -> bytes:
        return _encoder.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState:
        return _decoder.decode(data)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ClientState)
_EMPTY = ClientState()


class Detector(Protocol):
    """A River anomaly detector over scaled features: high scores are anomalies."""

    def score_one(self, x: dict[str, float]) -> float: ...

    def learn_one(self, x: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class GuardDecision:
    """The guard's verdict on one event; a ``flagged`` client gets no prefetches."""

    client_id: str
    score: float  # 0 when it could change nothing (see AbuseGuard), so was not computed
    flagged: bool
    newly_flagged: bool  # true on the one event that flagged the client: publish the alert
    reason: str  # why, in words; empty unless newly flagged
    ts: float
    events: int  # the client's requests so far, this one included
    detector: str = DETECTOR  # what flagged the client: the trees, or the flood rule


def crowd(state: ClientState, span_s: float) -> int:
    """How many of the window's requests are stamped within ``span_s`` of the newest one's,
    on either side (the newest included); 0 for an empty window.

    >>> crowd(ClientState(events=4, ts=(10.0, 50.0, 10.2, 60.0)), 0.5)
    1
    >>> crowd(ClientState(events=4, ts=(10.0, 50.0, 10.2, 9.9)), 0.5)
    3
    """
    if not state.ts:
        return 0
    newest = state.ts[-1]
    return sum(abs(t - newest) <= span_s for t in state.ts)


def _steps(items: tuple[str, ...]) -> list[int]:
    """Differences between consecutive numeric content ids (pairs with another id skipped)."""
    ids = [int(i) if i.isascii() and i.isdigit() else None for i in items]
    return [b - a for a, b in itertools.pairwise(ids) if a is not None and b is not None]


def features(state: ClientState) -> dict[str, float]:
    """Raw request-pattern features of a client's window, in units a person reads.

    rate: events/s; cv: inter-arrival std/mean (scrapers are regular, people bursty); spread:
    distinct items per event (people re-click); fresh: share of items nobody had requested
    before; monotone: share of id steps in the dominant direction; stride: share of id steps
    equal to the step before (a sequential walk); events: requests so far.
    """
    ts, items, n = state.ts, state.items, len(state.ts)
    gaps = [max(b - a, 0.0) for a, b in itertools.pairwise(ts)]  # late events: gap 0
    # Added left to right, not by sum(), which compensates rounding since Python 3.12: the
    # same window gives the same features, so the same verdict, on every version.
    span = reduce(add, gaps, 0.0)
    mean = span / len(gaps) if gaps else 0.0
    squares = reduce(add, ((g - mean) ** 2 for g in gaps), 0.0)
    cv = math.sqrt(squares / len(gaps)) / mean if mean > 0 else 0.0
    steps = _steps(items)
    up, down = sum(d > 0 for d in steps), sum(d < 0 for d in steps)
    same = sum(d1 == d0 != 0 for d0, d1 in itertools.pairwise(steps))
    return {
        "rate": len(gaps) / max(span, _MIN_SPAN_S) if gaps else 0.0,
        "cv": cv,
        "spread": len(set(items)) / n if n else 0.0,
        "fresh": sum(state.fresh) / n if n else 0.0,
        "monotone": max(up, down) / len(steps) if steps else 0.0,
        "stride": same / (len(steps) - 1) if len(steps) > 1 else 0.0,
        "events": float(state.events),
    }


def _sampled(client_id: str, events: int, every: int) -> bool:
    """One trusted window in ``every``, picked by a hash of the event (the same in any process)."""
    return every <= 1 or zlib.crc32(f"{client_id}\x1f{events}".encode()) % every == 0


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def scale(raw: dict[str, float]) -> dict[str, float]:
    """Map raw features into [0, 1] with fixed ranges, as HalfSpaceTrees expects.

    Each scaled feature points one way, towards scraping: being slower, burstier or more
    random in its ids than usual is no abuse, so all of that maps to 0 and normal clients
    crowd into a corner the trees learn well. Fixed ranges rather than an online MinMaxScaler
    keep each value's meaning stable: one extreme client cannot stretch the scale and hide the
    next one.
    """
    low, high = _LOG_RATE_RANGE
    rate = raw["rate"]
    return {
        "rate": _clip((math.log10(rate) - low) / (high - low)) if rate > 0 else 0.0,
        "regular": _clip(1.0 - raw["cv"]),
        "spread": raw["spread"],
        "fresh": raw["fresh"],
        "monotone": _clip(2.0 * raw["monotone"] - 1.0),
        "stride": raw["stride"],
        "events": _clip(math.log10(1.0 + raw["events"]) / _LENGTH_MAX),
    }


def describe(name: str, raw: dict[str, float], state: ClientState) -> str:
    """One scaled feature of a client, in words an operator reads at a glance."""
    if name == "rate":
        rate = raw["rate"]
        return f"rate {rate:.2g}/s" if rate >= 0.1 else f"rate {60 * rate:.2g}/min"
    if name == "regular":
        return f"machine-regular timing (inter-arrival CV {raw['cv']:.2f})"
    if name == "spread":
        return f"{raw['spread']:.0%} distinct items"
    if name == "fresh":
        return f"{raw['fresh']:.0%} never-seen items"
    if name == "monotone":
        return f"ids in one direction in {raw['monotone']:.0%} of steps"
    if name == "stride":
        steps = [d for d in _steps(state.items) if d != 0]
        step = Counter(steps).most_common(1)[0][0] if steps else 0
        return f"sequential id walk (step {step:+d}, {raw['stride']:.0%} of steps)"
    return f"{state.events} requests"


class AbuseGuard:
    """Scores every event of every client, flags abusive clients and keeps them blocked.

    Score first, then learn. The detector learns only from clients past ``min_events`` that
    are neither flagged nor scoring at or above the threshold, and only their items join the
    set of known content: an attack in progress is never learned as normal, and a scraper's
    made-up ids stay "never seen" for the next scraper too.

    The detector learns one trusted window in ``learn_every`` (picked by a hash of the client and
    its request count, so the same in every process): consecutive windows of a client overlap
    in all but one request, and the sample keeps the reference just as well (measured on
    train_tr -> train_valid) at a third of the learning cost. The trees score 0 until they
    have learned ``window_size`` windows (about ``window_size * learn_every`` trusted ones), so
    a new guard flags nobody: warm it on past events, or restore a warm one with ``loads``.

    Only scores that can change a decision are computed: not those of a flagged client (it
    stays flagged), nor those of a client's first ``min_events - patience`` requests for known
    items (a flag needs ``patience`` high scores in a row ending at or after ``min_events``,
    and no early window is learned). Their decisions report a score of 0.

    Parameters
    ----------
    threshold
        Anomaly score (0..1) at or above which an event counts against its client.
    min_events
        No client is flagged, and no window learned, before this many requests.
    patience
        Consecutive events at or above the threshold that flag a client (hysteresis).
    window
        Requests kept per client.
    n_trees, height, window_size, seed
        The HalfSpaceTrees; ``window_size`` is counted in learned events.
    learn_every
        The detector learns one in this many trusted windows.
    flood_events, flood_span_s
        The flood rule: this many of the window's requests within this many seconds of the
        newest one's flag the client (see the module's docstring).
    """

    def __init__(
        self,
        threshold: float = 0.96,
        min_events: int = 8,
        patience: int = 3,
        window: int = 32,
        n_trees: int = 25,
        height: int = 10,
        window_size: int = 333,
        seed: int = 42,
        learn_every: int = 3,
        flood_events: int = FLOOD_EVENTS,
        flood_span_s: float = FLOOD_SPAN_S,
    ) -> None:
        if patience < 1 or learn_every < 1:
            raise ValueError("patience and learn_every must be at least 1")
        if not 2 <= flood_events <= window:
            raise ValueError("flood_events must be between 2 and the window")
        self.flood_events = flood_events
        self.flood_span_s = flood_span_s
        self.threshold = threshold
        self.min_events = min_events
        self.patience = patience
        self.window = window
        self.learn_every = learn_every
        self.detector: Detector = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.normal: dict[str, stats.Var] = {}  # per scaled feature, over the learned windows
        self.seen: set[str] = set()  # grows with the real catalogue, in worker memory
        self.clients: dict[str, ClientState] = {}  # used by observe(); a table can hold them

    def step(
        self, state: ClientState, client_id: str, content_id: str, ts: float
    ) -> tuple[ClientState, GuardDecision]:
        """Score one event against a client's state: the new state and the decision.

        For callers that keep each client's state elsewhere (a Faust table, as bytes).
        """
        k = self.window
        known = content_id in self.seen
        fresh = not known and content_id not in state.items
        events = state.events + 1
        window = (
            (*state.ts, ts)[-k:],
            (*state.items, content_id)[-k:],
            (*state.fresh, fresh)[-k:],
        )
        if state.flagged or (known and events <= self.min_events - self.patience):
            # Scoring could change nothing here: a flagged client stays flagged, and a flag
            # needs the last `patience` events at or above the threshold once past min_events,
            # which these early events cannot be among (nor is the item new to `seen`).
            new = ClientState(events, *window, flagged_at=state.flagged_at)
            return new, GuardDecision(client_id, 0.0, new.flagged, False, "", ts, events)
        current = ClientState(events, *window)
        if events >= self.flood_events:
            crowded = crowd(current, self.flood_span_s)
            if crowded >= self.flood_events:
                new = msgspec.structs.replace(current, flagged_at=events)
                reason = (
                    f"flood: {crowded} of the last {len(current.ts)} requests stamped within "
                    f"{self.flood_span_s:g} s of the newest, {events} requests in all"
                )
                flood = GuardDecision(
                    client_id, 1.0, True, True, reason, ts, events, FLOOD_DETECTOR
                )
                return new, flood
        raw = features(current)
        x = scale(raw)
        score = float(self.detector.score_one(x))
        suspect = score >= self.threshold
        streak = state.streak + 1 if suspect else 0
        newly = events >= self.min_events and streak >= self.patience
        new = msgspec.structs.replace(current, streak=streak, flagged_at=events if newly else 0)
        if not suspect:
            self.seen.add(content_id)
            if events >= self.min_events and _sampled(client_id, events, self.learn_every):
                self.detector.learn_one(x)
                for name, value in x.items():
                    self.normal.setdefault(name, stats.Var()).update(value)
        reason = self.explain(new, raw, x, score) if newly else ""
        return new, GuardDecision(client_id, score, new.flagged, newly, reason, ts, events)

    def observe(self, client_id: str, content_id: str, ts: float) -> GuardDecision:
        """Score one event of a client whose state the guard keeps itself."""
        state, decision = self.step(self.clients.get(client_id, _EMPTY), client_id, content_id, ts)
        self.clients[client_id] = state
        return decision

    def is_blocked(self, client_id: str) -> bool:
        """True once the client has been flagged: it gets no prefetches."""
        state = self.clients.get(client_id)
        return state is not None and state.flagged

    def explain(
        self, state: ClientState, raw: dict[str, float], x: dict[str, float], score: float
    ) -> str:
        """The (up to three) features furthest above normal clients, in words."""

        def z(name: str) -> float:
            var = self.normal.get(name)
            if var is None or var.n < 2:
                return x[name]
            return (x[name] - var.mean.get()) / max(math.sqrt(var.get()), 1e-3)

        ranked = sorted(x, key=z, reverse=True)
        top = [name for name in ranked[:3] if z(name) >= 2.0] or ranked[:1]
        words = "; ".join(describe(name, raw, state) for name in top)
        return f"anomaly score {score:.2f} over {state.events} requests: {words}"

    def alert(self, decision: GuardDecision) -> SecurityAlert:
        """The SecurityAlert to publish for a flagged client (once: when newly flagged)."""
        if not decision.flagged:
            raise ValueError(f"client {decision.client_id} is not flagged")
        return SecurityAlert(
            client_id=decision.client_id,
            score=min(max(decision.score, 0.0), 1.0),
            reason=decision.reason[:1024] or "flagged by the abuse guard",
            ts=decision.ts,
            detector=decision.detector,
        )

    def __getstate__(self) -> dict[str, object]:
        # A set pickles in hash order, which differs between processes: sort it, so that the
        # same guard always gives the same bytes.
        state = dict(self.__dict__)
        state["seen"] = sorted(self.seen)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("learn_every", 1)  # a guard pickled before sampling learned every window
        state.setdefault("flood_events", FLOOD_EVENTS)  # or before the flood rule
        state.setdefault("flood_span_s", FLOOD_SPAN_S)
        self.__dict__.update(state)
        self.seen = set(self.seen)


def dumps(guard: AbuseGuard) -> bytes:
    """The whole guard as bytes, headed by the River version (River pickles break across it)."""
    return _HEADER + pickle.dumps(guard, protocol=5)


def loads(data: bytes) -> AbuseGuard:
    """A guard from ``dumps``; refuses bytes from another format or River version.

    Unpickling runs code: load only bytes this project wrote (its own snapshot or changelog).
    """
    if not data.startswith(_HEADER):
        raise ValueError(f"not a guard pickled as {_HEADER.decode().strip()}")
    guard = pickle.loads(data[len(_HEADER) :])
    if not isinstance(guard, AbuseGuard):
        raise ValueError("the bytes hold no AbuseGuard")
    return guard
