"""Foresight's next-click predictor: global online signals re-ranked by an online River model.

Pure logic: no Faust, no Kafka, no clock (times come from events), no randomness (ties break by
content id), so the same events in the same order give the same predictions.

Per client: the current session, its last ``history`` clicks and the last click's time (a gap
over ``session_gap_s`` starts a new one), and its contribution budget;
:func:`dumps_client_state` makes it ~80 bytes.

One client cannot poison what all share (issue 12): a click reaches the shared signals only
while its client has budget left. A token bucket in the events' own time (``burst`` tokens,
``refill_per_s`` a second) lets through everything a person does and a flood's first few
clicks; a lifetime allowance that reads no timestamp (``lifetime_floor`` clicks, then
``lifetime_share`` of the events the signals hold) bounds a client whose timestamps are forged
to look like a person's. A click over budget, or one the caller says not to learn from (a
client the abuse guard flagged), still advances the client's own session.

Shared by all clients, :class:`GlobalSignals` learns from every event: sequential rules
``a -> b`` weighted ``1/distance`` within ``steps`` clicks (SR), first-order transitions, the
reverse rules ``b -> a``, time-decayed popularity, a River logistic regression that re-ranks
candidates from their features, and a River logistic calibrator that maps a candidate's
re-ranker logit and its softmax share to the probability that it is the next click.

Predict: candidates come from the strongest rules of the session's recent clicks, the reverse
rules of the last click, the session's own clicks (repeat clicks are common) and the popular
items; a fixed blend keeps the best ``pool``, the River model re-ranks them, the calibrator
gives the top k their probabilities. Learn (score, then learn): the re-ranker and calibrator
learn from the ranking of the client's prefix, labelled by the click; then the click is counted.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol

import msgspec
from river import linear_model, optim

from streams.baselines import Leaderboard, SequenceRules, inverse_weight, unit_weight

Scored = list[tuple[str, float, dict[str, float]]]


class Predictor(Protocol):
    """What the evaluation loop and the stream worker need from any predictor."""

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        """Up to k ``(content_id, probability)``, most likely first, no duplicates."""
        ...

    def learn(self, client_id: str, content_id: str, ts: float) -> None:
        """Take in the client's click on ``content_id`` at event time ``ts``."""
        ...


@dataclass(frozen=True)
class ForesightConfig:
    """Knobs of the predictor; the defaults were tuned on train_tr -> train_valid."""

    steps: int = 10  # SR window
    history: int = 20  # clicks kept per client
    earlier: int = 5  # recent clicks whose rules propose candidates
    session_gap_s: float = 1800.0
    popularity_half_life_s: float = 6 * 3600.0
    popular: int = 10  # most popular items always among the candidates
    leaders: int = 20  # strongest rules of the last click that are candidates
    earlier_leaders: int = 10  # strongest rules of each earlier click that are candidates
    pool: int = 20  # candidates the River model re-ranks
    learn_top: int = 15  # candidates (by current rank) the re-ranker learns from per click
    calibrate_top: int = 5  # predictions per click the calibrator learns from
    learning_rate: float = 0.01
    rerank: bool = True  # False: rank by the fixed blend (the "without River" measurement)
    blend: tuple[float, float, float, float] = (0.5, 0.3, 0.3, 0.001)  # srs, back, recency, pop
    # The contribution budget, measured on the four yoochoose-100k files (38,923 sessions,
    # 153,639 clicks). The densest burst of any session is 7 clicks (within 1 s, and within
    # 5 s alike); `foresight replay` plays sessions 10 times faster with gaps of at most 2 s
    # (its defaults), which packs up to 9 clicks into a second and 14 into 4 s. With 8 tokens
    # refilled 2 a second no session, recorded or so replayed, ever runs dry (the tightest
    # keeps 0.16 of a token), so the eval and the replay learn what they learned before; a
    # flood within one second teaches the shared signals 9 clicks (faster replays, such as
    # the tests' --speed 50, are floods of a kind: some of their clicks go untaught).
    burst: float = 8.0  # tokens: clicks a client may teach at once
    refill_per_s: float = 2.0  # tokens a second of the events' own time gives back
    # Timestamps come from the client: spaced like a person's, they refill the bucket at will.
    # What no timestamp moves: a client teaches at most `lifetime_floor` clicks, 8 sessions at
    # the 99.9th percentile of session length on train_full.tsv (32 clicks; the longest of
    # the four files has 78), or `lifetime_share` of the events the signals hold if more.
    lifetime_floor: int = 256
    lifetime_share: float = 0.01


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


class GlobalSignals:
    """Everything learned from all clients' events: rule tables, popularity, River models."""

    def __init__(self, config: ForesightConfig) -> None:
        self.forward = SequenceRules(config.steps, inverse_weight, config.leaders)
        self.markov = SequenceRules(1, unit_weight, config.leaders)
        self.backward = SequenceRules(config.steps, inverse_weight, config.leaders)
        self.popularity = Leaderboard(config.popular)
        self.half_life = config.popularity_half_life_s
        self.origin: float | None = None  # event time at which a popularity click adds 1
        # River models are untyped: Any keeps mypy strict everywhere else.
        # Plain SGD: once warm as accurate as Adam was (train_tr -> train_valid), at a third of
        # the cost of an update; it grows confident more slowly from nothing.
        self.ranker: Any = linear_model.LogisticRegression(
            optimizer=optim.SGD(config.learning_rate), intercept_lr=config.learning_rate
        )
        self.calibrator: Any = linear_model.LogisticRegression(optimizer=optim.SGD(0.02))
        self.events = 0

    def observe(self, recent: list[str], item: str, ts: float) -> None:
        """Count ``item`` clicked at ``ts`` after the session's ``recent`` clicks."""
        self.events += 1
        self.forward.observe(recent, item)
        self.markov.observe(recent, item)
        n = len(recent)
        for distance in range(1, min(self.backward.steps, n) + 1):
            self.backward.add(item, recent[n - distance], 1.0 / distance)
        if self.origin is None:
            self.origin = ts
        exponent = (ts - self.origin) * math.log(2.0) / self.half_life
        if exponent > 50.0:  # keep the growing weights finite: rescale, the ranking holds
            self.popularity.rescale(math.exp(-exponent))
            self.origin, exponent = ts, 0.0
        self.popularity.add(item, math.exp(max(-50.0, exponent)))

    def prune(self, keep: int = 100) -> None:
        """Bound memory in a long-lived worker: keep each item's ``keep`` strongest rules."""
        for table in (self.forward, self.markov, self.backward):
            table.prune(keep)


def dumps_global_state(signals: GlobalSignals) -> bytes:
    """Pickle (protocol 5) behind a River-version header: River pickles break across versions."""
    return _header() + pickle.dumps(signals, protocol=5)


def loads_global_state(data: bytes) -> GlobalSignals:
    """The signals :func:`dumps_global_state` wrote (unpickling: only bytes we wrote ourselves)."""
    header = _header()
    if not data.startswith(header):
        raise ValueError(f"not Foresight global state for river {version('river')}")
    signals = pickle.loads(data[len(header) :])
    if not isinstance(signals, GlobalSignals):
        raise ValueError("the payload is not GlobalSignals")
    return signals


def _header() -> bytes:
    return f"foresight-global/1 river={version('river')}\n".encode()


def candidates(signals: GlobalSignals, state: ClientState, config: ForesightConfig) -> Scored:
    """The client's candidates with their features, pre-ranked by the fixed blend."""
    items = state.items
    n = len(items)
    last = items[-1]
    forward_row = signals.forward.row(last)
    back_row = signals.backward.row(last)
    markov_row = signals.markov.row(last)
    forward, forward_total = forward_row.scores, forward_row.total or 1.0
    back, back_total = back_row.scores, back_row.total or 1.0
    markov, markov_total = markov_row.scores, markov_row.total or 1.0
    recency: dict[str, int] = {}
    counts: dict[str, int] = {}
    for position, item in enumerate(reversed(items), 1):
        if item in counts:
            counts[item] += 1
        else:
            recency[item] = position
            counts[item] = 1
    # Rules of the clicks before the last, weighted 1/distance, as shares of each row.
    reach = range(2, min(n, config.earlier) + 1)
    norm = sum(1.0 / d for d in reach) or 1.0
    earlier = [(signals.forward.row(items[n - d]), d * norm) for d in reach]
    earlier = [(row, scale * row.total) for row, scale in earlier if row.total]
    popularity = signals.popularity
    popular = popularity.top(config.popular)
    most = popularity.scores[popular[0]] if popular else 1.0
    pool = set(forward_row.top(config.leaders))
    pool.update(back_row.top(config.leaders))
    for row, _ in earlier:
        pool.update(row.top(config.earlier_leaders))
    pool.update(recency)
    pool.update(popular)
    # The earlier rules' share of each pool item, summed row by row (the same floats as a sum
    # per item), looking only at the items a row has.
    srs_of: dict[str, float] = {}
    for row, divisor in earlier:
        scores = row.scores
        smaller, larger = (scores, pool) if len(scores) < len(pool) else (pool, scores)
        for item in [item for item in smaller if item in larger]:
            srs_of[item] = srs_of.get(item, 0.0) + scores[item] / divisor
    w_earlier, w_back, w_recency, w_pop = config.blend
    get_sr, get_back, get_srs, get_rank = forward.get, back.get, srs_of.get, recency.get
    get_pop = popularity.scores.get
    blended = [
        (
            -(
                get_sr(item, 0.0) / forward_total
                + w_earlier * get_srs(item, 0.0)
                + w_back * (get_back(item, 0.0) / back_total)
                + w_pop * get_pop(item, 0.0) / most
                + (w_recency / rank if (rank := get_rank(item)) else 0.0)
            ),
            item,
        )
        for item in pool
    ]
    blended.sort()  # by score, ties by content id: items are distinct, so this is total
    repeat_ratio = 1.0 - len(recency) / n
    repeat_length = math.log(n)
    length = "1" if n == 1 else "2" if n == 2 else "3-4" if n <= 4 else "5+"
    kinds = (f"{kind}_at_length_{length}" for kind in ("new", "last", "repeat"))
    new_kind, last_kind, repeat_kind = kinds
    confidence = forward_row.total / (forward_row.total + 5.0)
    unsure = 1.0 - confidence
    log = math.log
    out: Scored = []
    for negative, item in blended[: config.pool]:
        blend = -negative
        sr = get_sr(item, 0.0) / forward_total
        srs = get_srs(item, 0.0)
        bk = get_back(item, 0.0) / back_total
        rank = get_rank(item)
        x = {
            "sr": sr,
            "srs": srs,
            "bk": bk,
            "mk": markov.get(item, 0.0) / markov_total,
            "log_sr": log(sr + 1e-3),
            "log_srs": log(srs + 1e-3),
            "log_bk": log(bk + 1e-3),
            "log_pop": log(get_pop(item, 0.0) / most + 1e-4),
            "blend": blend,
            "log_blend": log(blend + 1e-3),
            "sr_sure": sr * confidence,
            "sr_unsure": sr * unsure,
        }
        if rank is None:
            x[new_kind] = 1.0
        else:
            x[last_kind if rank == 1 else repeat_kind] = 1.0
            x[_RECENT[min(rank, 5)]] = 1.0
            x["repeats"] = log(counts[item])
            x["repeat_ratio"] = repeat_ratio
            x["repeat_length"] = repeat_length
            x["repeat_unsure"] = unsure
        out.append((item, blend, x))
    return out


_RECENT = {rank: f"recent_{rank}" for rank in range(1, 6)}


@dataclass(frozen=True)
class Explanation:
    """Why ``content_id`` is at ``rank`` of a client's top k, as :meth:`Foresight.explain`
    reads it off the models without changing them.

    ``ranking`` says what ordered the items: ``"re-ranker"`` (River's logit over the candidate
    features), ``"blend"`` (the fixed blend, ``rerank=False``) or ``"popularity"`` (a client
    with no session yet). ``sources`` holds the fixed blend's terms, which sum to ``blend`` and
    chose the candidate pool; ``signals`` the raw signal values behind them (rule shares, the
    share of the most popular item's score, the item's place in the session, 1 = the last
    click); ``ranker`` and ``calibration`` each model's weight times input per feature plus its
    ``intercept``: ``ranker`` sums to ``score``, and ``calibration`` sums to the log-odds of
    ``calibrated``. ``probability`` is what :meth:`Foresight.predict` returns: ``calibrated``
    capped by the items ranked above, so probabilities follow the ranking.
    """

    content_id: str
    rank: int
    probability: float
    calibrated: float
    score: float
    share: float
    blend: float
    ranking: str
    sources: dict[str, float]
    signals: dict[str, float]
    ranker: dict[str, float]
    calibration: dict[str, float]


def _contributions(model: Any, x: dict[str, float]) -> dict[str, float]:
    """A River linear model's weight times value per feature, and its intercept."""
    weights = model.weights
    parts = {name: weights.get(name, 0.0) * value for name, value in x.items()}
    parts["intercept"] = float(model.intercept)
    return parts


class Foresight:
    """The predictor: per-client sessions over shared :class:`GlobalSignals`.

    ``clients`` caches client states by id; a stream worker that keeps them elsewhere moves
    them in and out with :meth:`client_state`, :meth:`set_client_state` and :meth:`forget`.
    """

    def __init__(
        self, config: ForesightConfig | None = None, signals: GlobalSignals | None = None
    ) -> None:
        self.config = config or ForesightConfig()
        self.signals = signals or GlobalSignals(self.config)
        self.clients: dict[str, ClientState] = {}
        # The last ranking computed, reused by learn() when nothing was learned since predict().
        self._last: tuple[str, int, Scored] | None = None

    def client_state(self, client_id: str) -> ClientState | None:
        return self.clients.get(client_id)

    def set_client_state(self, client_id: str, state: ClientState) -> None:
        self.clients[client_id] = state
        self._last = None

    def forget(self, client_id: str) -> None:
        self.clients.pop(client_id, None)
        self._last = None

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        """The client's k likeliest next clicks with calibrated probabilities, best first."""
        state = self.clients.get(client_id)
        if k <= 0:
            return []
        if state is None or not state.items:
            popularity = self.signals.popularity
            # No session yet (cold start): the shares of time-decayed popularity.
            return [
                (item, popularity.scores[item] / popularity.total) for item in popularity.top(k)
            ]
        ranked = self._ranked(client_id, state)
        shares = _shares(ranked, self.config.rerank)
        out: list[tuple[str, float]] = []
        ceiling = 1.0
        for (item, score, _), share in zip(ranked[:k], shares, strict=False):
            p = self.signals.calibrator.predict_proba_one(self._calibration(score, share))[True]
            ceiling = min(ceiling, p)  # keep probabilities sorted like the ranking
            out.append((item, ceiling))
        return out

    def learn(self, client_id: str, content_id: str, ts: float, *, contribute: bool = True) -> None:
        """Score the ranking of the client's prefix against the click, learn it, then count it.

        The shared signals learn the click only with ``contribute`` and while the client has
        budget left (see :class:`ForesightConfig`); its own session advances either way.
        """
        config = self.config
        state = self.clients.get(client_id) or ClientState()
        tokens, refilled_at = contribution_tokens(state, ts, config)
        teach = contribute and tokens >= 1.0 and state.contributed < self.lifetime_allowance()
        recent = state.items
        if state.last_ts is not None and ts - state.last_ts > config.session_gap_s:
            recent = []  # a new session: the old one's clicks predict little
        if teach:
            if recent:
                self._learn_ranking(self._ranked(client_id, ClientState(recent)), content_id)
            self.signals.observe(recent, content_id, ts)
            tokens -= 1.0
        items = [*recent, content_id][-config.history :]
        contributed = state.contributed + int(teach)
        self.clients[client_id] = ClientState(items, ts, tokens, refilled_at, contributed)
        self._last = None

    def lifetime_allowance(self) -> float:
        """The clicks any one client may teach the shared signals as they are now."""
        config = self.config
        return config.lifetime_floor + config.lifetime_share * self.signals.events

    def _ranked(self, client_id: str, state: ClientState) -> Scored:
        """Candidates ranked by the River re-ranker (or the blend), reusing the last ranking."""
        last = self._last
        if last is not None and last[0] == client_id and last[1] == self.signals.events:
            return last[2]
        ranked = self.rank(state)
        self._last = (client_id, self.signals.events, ranked)
        return ranked

    def rank(self, state: ClientState) -> Scored:
        """A session's candidate pool as :meth:`predict` ranks it (needs a click; changes
        nothing, caches nothing)."""
        ranked = candidates(self.signals, state, self.config)
        if self.config.rerank:
            logit = ranker_logit(self.signals.ranker)
            ranked = [(item, logit(x), x) for item, _, x in ranked]
            ranked.sort(key=_by_score)
        return ranked

    def _learn_ranking(self, ranked: Scored, actual: str) -> None:
        config, signals = self.config, self.signals
        shares = _shares(ranked, config.rerank)
        for (item, score, _), share in zip(ranked[: config.calibrate_top], shares, strict=False):
            signals.calibrator.learn_one(self._calibration(score, share), item == actual)
        if not config.rerank:
            return
        positive = next((x for item, _, x in ranked if item == actual), None)
        if positive is None:  # nothing to rank above the others
            return
        for item, _, x in ranked[: config.learn_top]:
            signals.ranker.learn_one(x, item == actual)
        if all(item != actual for item, _, _ in ranked[: config.learn_top]):
            signals.ranker.learn_one(positive, True)

    def _calibration(self, score: float, share: float) -> dict[str, float]:
        logit = score if self.config.rerank else math.log(score + 1e-4)
        return {"logit": logit, "log_share": math.log(share + 1e-6)}

    def explain(self, client_id: str, k: int = 5) -> list[Explanation]:
        """The client's :meth:`predict` top k, each with what every signal contributed."""
        return self.explain_session(self.clients.get(client_id), k)

    def explain_session(self, state: ClientState | None, k: int = 5) -> list[Explanation]:
        """:meth:`explain` for a session kept outside the predictor (a worker's table)."""
        if k <= 0:
            return []
        signals = self.signals
        popularity = signals.popularity
        if state is None or not state.items:
            cold: list[Explanation] = []
            for rank, item in enumerate(popularity.top(k), 1):
                p = popularity.scores[item] / popularity.total
                parts = {"popularity": p}
                cold.append(
                    Explanation(item, rank, p, p, p, p, 0.0, "popularity", parts, parts, {}, {})
                )
            return cold
        config = self.config
        ranked = self.rank(state)
        shares = _shares(ranked, config.rerank)
        popular = popularity.top(config.popular)
        most = popularity.scores[popular[0]] if popular else 1.0
        recent = list(reversed(state.items))
        w_earlier, w_back, w_recency, w_pop = config.blend
        ranking = "re-ranker" if config.rerank else "blend"
        out: list[Explanation] = []
        ceiling = 1.0
        top = zip(ranked[:k], shares, strict=False)
        for rank, ((item, score, x), share) in enumerate(top, 1):
            calibration = self._calibration(score, share)
            calibrated = signals.calibrator.predict_proba_one(calibration)[True]
            ceiling = min(ceiling, calibrated)
            pop = popularity.scores.get(item, 0.0)
            position = recent.index(item) + 1 if item in recent else 0
            sources = {
                "sr": x["sr"],
                "earlier": w_earlier * x["srs"],
                "reverse": w_back * x["bk"],
                "popularity": w_pop * pop / most,
                "session": w_recency / position if position else 0.0,
            }
            raw = {
                "sr": x["sr"],
                "earlier": x["srs"],
                "markov": x["mk"],
                "reverse": x["bk"],
                "popularity": pop / most,
                "session_position": float(position),
                "session_count": float(recent.count(item)),
            }
            out.append(
                Explanation(
                    content_id=item,
                    rank=rank,
                    probability=ceiling,
                    calibrated=calibrated,
                    score=score,
                    share=share,
                    blend=x["blend"],
                    ranking=ranking,
                    sources=sources,
                    signals=raw,
                    ranker=_contributions(signals.ranker, x) if config.rerank else {},
                    calibration=_contributions(signals.calibrator, calibration),
                )
            )
        return out


def ranker_logit(model: Any) -> Callable[[dict[str, float]], float]:
    """The logit function of a River logistic regression: its weights dotted with x, plus
    its intercept.

    ``predict_proba_one`` squashes exactly this through a sigmoid into a dict; the ranking
    wants the logit back, and the squash, the dict and the inverse cost three times the dot
    product, on every candidate twice per event. River's own method computes it.
    """
    dot: Callable[[dict[str, float]], float] = model._raw_dot_one
    return dot


def _by_score(candidate: tuple[str, float, dict[str, float]]) -> tuple[float, str]:
    return -candidate[1], candidate[0]


def _shares(ranked: Scored, rerank: bool) -> list[float]:
    """Each candidate's share of the total: softmax of logits, or of blend scores."""
    if not ranked:
        return []
    if rerank:
        top = ranked[0][1]
        weights = [math.exp(score - top) for _, score, _ in ranked]
    else:
        weights = [score for _, score, _ in ranked]
    total = sum(weights) or 1.0
    return [w / total for w in weights]
