"""A session's candidates for its next click, their features, and their ranking. Pure logic.

Candidates come from the strongest rules of the session's recent clicks, the reverse rules of
the last click, the session's own clicks (repeat clicks are common) and the popular items; a
fixed blend of those signals keeps the best ``pool``, and the River re-ranker orders them by
its logit over each candidate's features (:data:`FEATURES`, then those of
:meth:`Session.clicked`).

The stream worker ranks twice per event (the learn step ranks the session's prefix, the
predict step the session with its new click), so this is the predictor's hot path. It gives
the very floats River's own calls over features dicts would give (the comments marked
*exact* say why), and builds a features dict only for a candidate a River model learns from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from operator import add
from typing import Any

from river.utils.math import sigmoid

from streams.foresight_config import ForesightConfig
from streams.signals import GlobalSignals

#: The features every candidate has, in the order its features dict holds them.
FEATURES = (
    "sr",  # share of the last click's rules (SR) leading to it
    "srs",  # its share of the earlier clicks' rules, weighted 1/distance
    "bk",  # share of the last click's reverse rules
    "mk",  # share of the last click's first-order transitions
    "log_sr",
    "log_srs",
    "log_bk",
    "log_pop",  # log of its popularity over the most popular item's
    "blend",  # the fixed blend that chose the pool
    "log_blend",
    "sr_sure",  # sr times the confidence in the last click's rules (many clicks follow it)
    "sr_unsure",
)
#: A returning client's candidate that it requested in an earlier session and not in this one
#: (issue 15): people re-read a news page, nobody rates a film twice; the re-ranker learns which.
SEEN = "seen"
_RECENT = {rank: f"recent_{rank}" for rank in range(1, 6)}
_LOG_MILLI = math.log(1e-3)
_BLEND = FEATURES.index("blend")
# The session-length bucket's feature names: (new, last, repeat).
_KINDS = {
    length: tuple(f"{kind}_at_length_{length}" for kind in ("new", "last", "repeat"))
    for length in ("1", "2", "3-4", "5+")
}

Values = tuple[float, ...]  # one candidate's FEATURES values, in that order
#: Whether a returning client requested an item before; None for a client in its first session.
Seen = Callable[[str], bool] | None
Scored = list[tuple[str, float, dict[str, float]]]


class Session:
    """What a ranking knows of the session: each item's place from the end (1 = the last
    click) and clicks, and the features that depend on the session alone."""

    __slots__ = (
        "counts",
        "last_kind",
        "new_kind",
        "recency",
        "repeat_kind",
        "repeat_length",
        "repeat_ratio",
        "seen",
        "unsure",
    )

    def __init__(self, items: list[str], unsure: float, seen: set[str] | None = None) -> None:
        n = len(items)
        # The candidates a returning client requested in earlier sessions and not in this one;
        # None for a client in its first session (then it has no SEEN feature at all).
        self.seen = seen
        recency: dict[str, int] = {}
        counts: dict[str, int] = {}
        for position, item in enumerate(reversed(items), 1):
            if item in counts:
                counts[item] += 1
            else:
                recency[item] = position
                counts[item] = 1
        self.recency = recency
        self.counts = counts
        self.repeat_ratio = 1.0 - len(recency) / n
        self.repeat_length = math.log(n)
        self.unsure = unsure
        length = "1" if n == 1 else "2" if n == 2 else "3-4" if n <= 4 else "5+"
        self.new_kind, self.last_kind, self.repeat_kind = _KINDS[length]

    def features(self, item: str, values: Values) -> dict[str, float]:
        """A candidate's features dict, keys in :data:`FEATURES` order and then the session's:
        ``new_at_length_<L>`` for an item the session never clicked, :meth:`clicked` for one
        it did."""
        sr, srs, bk, mk, log_sr, log_srs, log_bk, log_pop, blend, log_blend, sure, unsure = values
        x = {  # a literal: twice as fast as dict(zip(FEATURES, values)), and checked against it
            "sr": sr,
            "srs": srs,
            "bk": bk,
            "mk": mk,
            "log_sr": log_sr,
            "log_srs": log_srs,
            "log_bk": log_bk,
            "log_pop": log_pop,
            "blend": blend,
            "log_blend": log_blend,
            "sr_sure": sure,
            "sr_unsure": unsure,
        }
        rank = self.recency.get(item)
        if rank is None:
            x[self.new_kind] = 1.0
        else:
            x.update(self.clicked(item, rank))
        if self.seen is not None:
            x[SEEN] = 1.0 if item in self.seen else 0.0
        return x

    def clicked(self, item: str, rank: int) -> list[tuple[str, float]]:
        """The features of an item the session clicked, ``rank`` its place from the end:
        last or repeat click at this session length, ``recent_<rank>`` (capped at 5), the log
        of its clicks, the share of repeat clicks, the log of the session's length, and how
        unsure the last click's rules are."""
        return [
            (self.last_kind if rank == 1 else self.repeat_kind, 1.0),
            (_RECENT[min(rank, 5)], 1.0),
            ("repeats", math.log(self.counts[item])),
            ("repeat_ratio", self.repeat_ratio),
            ("repeat_length", self.repeat_length),
            ("repeat_unsure", self.unsure),
        ]


class Ranking:
    """A session's candidates, best first: ``items`` with their ``scores`` (the re-ranker's
    logits, or the blend without it) and ``values`` (:data:`FEATURES`, in that order), and on
    demand each one's features dict and softmax share."""

    __slots__ = ("_shares", "items", "rerank", "scores", "session", "values")

    def __init__(
        self,
        items: list[str],
        scores: list[float],
        values: list[Values],
        session: Session,
        rerank: bool,
    ) -> None:
        self.items = items
        self.scores = scores
        self.values = values
        self.session = session
        self.rerank = rerank
        self._shares: list[float] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def features(self, index: int) -> dict[str, float]:
        """The features of the candidate at ``index`` (0 = the best), as River reads them."""
        return self.session.features(self.items[index], self.values[index])

    def blend(self, index: int) -> float:
        """The fixed blend of the candidate at ``index``."""
        return self.values[index][_BLEND]

    def shares(self) -> list[float]:
        """Each candidate's share of the total: softmax of the logits, or of blend scores."""
        if self._shares is None:
            scores = self.scores
            if self.rerank and scores:
                top, exp = scores[0], math.exp
                weights = [exp(score - top) for score in scores]
            else:
                weights = list(scores)
            # *exact*: added left to right, as sum() did before Python 3.12 compensated its
            # rounding, so a session ranks the same on every version
            total = reduce(add, weights, 0.0) or 1.0
            self._shares = [w / total for w in weights]
        return self._shares

    def scored(self) -> Scored:
        """``(item, score, features)`` per candidate, best first."""
        return [(item, self.scores[i], self.features(i)) for i, item in enumerate(self.items)]


def rank(
    signals: GlobalSignals, items: list[str], config: ForesightConfig, seen: Seen = None
) -> Ranking:
    """The candidates of a session (``items``, oldest first, at least one) as the predictor
    ranks them: the best ``pool`` by the fixed blend, re-ranked by River's logit (unless
    ``config.rerank`` is off). A returning client (``seen`` tells what it requested before)
    gets ``past_pool`` more candidates, each with its SEEN feature."""
    ranker = signals.ranker if config.rerank else None
    return _candidates(signals, items, config, ranker, seen)


def by_blend(
    signals: GlobalSignals, items: list[str], config: ForesightConfig, seen: Seen = None
) -> Ranking:
    """The session's best ``pool`` candidates by the fixed blend, best first."""
    return _candidates(signals, items, config, None, seen)


def _candidates(
    signals: GlobalSignals,
    items: list[str],
    config: ForesightConfig,
    ranker: Any,
    seen_before: Seen = None,
) -> Ranking:
    """The pool by the fixed blend, re-ranked by ``ranker``'s logit unless it is None."""
    n = len(items)
    last = items[-1]
    forward_row = signals.forward.row(last)
    back_row = signals.backward.row(last)
    markov_row = signals.markov.row(last)
    forward, forward_total = forward_row.scores, forward_row.total or 1.0
    back, back_total = back_row.scores, back_row.total or 1.0
    markov, markov_total = markov_row.scores, markov_row.total or 1.0
    confidence = forward_row.total / (forward_row.total + 5.0)
    session = Session(items, 1.0 - confidence)
    recency = session.recency
    # Rules of the clicks before the last, weighted 1/distance, as shares of each row.
    reach = range(2, min(n, config.earlier) + 1)
    norm = reduce(add, (1.0 / d for d in reach), 0.0) or 1.0  # *exact*: as total in shares()
    earlier = [(signals.forward.row(items[n - d]), d * norm) for d in reach]
    earlier = [(row, scale * row.total) for row, scale in earlier if row.total]
    popularity = signals.popularity
    popular = popularity.top(config.popular)
    pop = popularity.scores
    most = pop[popular[0]] if popular else 1.0
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
    get_sr, get_srs, get_back, get_markov, get_pop = (
        forward.get,
        srs_of.get,
        back.get,
        markov.get,
        pop.get,
    )
    near = {item: w_recency / position for item, position in recency.items()}
    get_near = near.get
    blended = [
        (
            -(
                get_sr(item, 0.0) / forward_total
                + w_earlier * get_srs(item, 0.0)
                + w_back * (get_back(item, 0.0) / back_total)
                + w_pop * get_pop(item, 0.0) / most
                + get_near(item, 0.0)
            ),
            item,
        )
        for item in pool
    ]
    blended.sort()  # by score, ties by content id: items are distinct, so this is total
    if seen_before is None:
        del blended[config.pool :]
    else:  # a returning client: room for more, and what it requested before is known
        del blended[config.pool + config.past_pool :]
        session.seen = {item for _, item in blended if item not in recency and seen_before(item)}
    if ranker is not None:
        # Exact: River's predict_proba_one(x) squashes weights . x + intercept, and its dot
        # product (River's VectorDict.dot) adds weight * value to 0.0 in the order of x's keys,
        # a missing weight counting 0 (tests/unit/test_ranking.py holds River to it). The same
        # products added in the same order below give the same float, from the model's public
        # weights and intercept, with neither a features dict nor a River call per candidate.
        weights: dict[str, float] = ranker.weights
        intercept = float(ranker.intercept)
        weight = weights.get
        w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11 = (weight(f, 0.0) for f in FEATURES)
        w_new = weight(session.new_kind, 0.0)
        w_seen = weight(SEEN, 0.0)
    seen = session.seen
    unsure = session.unsure
    log = math.log
    chosen: list[str] = []
    scores_of: list[float] = []
    values: list[Values] = []
    for negative, item in blended:
        blend = -negative
        sr = get_sr(item, 0.0) / forward_total
        srs = get_srs(item, 0.0)
        bk = get_back(item, 0.0) / back_total
        mk = get_markov(item, 0.0) / markov_total
        # Exact: log(0.0 + 1e-3) is one constant, and most candidates lack a rule share.
        log_sr = log(sr + 1e-3) if sr else _LOG_MILLI
        log_srs = log(srs + 1e-3) if srs else _LOG_MILLI
        log_bk = log(bk + 1e-3) if bk else _LOG_MILLI
        log_pop = log(get_pop(item, 0.0) / most + 1e-4)
        log_blend = log(blend + 1e-3)
        sure, doubt = sr * confidence, sr * unsure
        chosen.append(item)
        values.append(
            (sr, srs, bk, mk, log_sr, log_srs, log_bk, log_pop, blend, log_blend, sure, doubt)
        )
        if ranker is None:
            scores_of.append(blend)
            continue
        dot = (
            0.0
            + w0 * sr
            + w1 * srs
            + w2 * bk
            + w3 * mk
            + w4 * log_sr
            + w5 * log_srs
            + w6 * log_bk
            + w7 * log_pop
            + w8 * blend
            + w9 * log_blend
            + w10 * sure
            + w11 * doubt
        )
        rank = recency.get(item)
        if rank is None:
            dot += w_new * 1.0
        else:  # the session's own items: a few per ranking
            for name, value in session.clicked(item, rank):
                dot += weight(name, 0.0) * value
        if seen is not None:
            dot += w_seen * (1.0 if item in seen else 0.0)
        scores_of.append(dot + intercept)
    if ranker is None:
        return Ranking(chosen, scores_of, values, session, rerank=False)
    # Highest logit first, ties by content id: sort by id, then stably by logit.
    order = sorted(range(len(chosen)), key=chosen.__getitem__)
    order.sort(key=scores_of.__getitem__, reverse=True)
    return Ranking(
        [chosen[i] for i in order],
        [scores_of[i] for i in order],
        [values[i] for i in order],
        session,
        rerank=True,
    )


def probability(model: Any) -> Callable[[float, float], float]:
    """The calibrator's probability for a candidate's logit and log share: River's
    ``predict_proba_one({"logit": ..., "log_share": ...})[True]``, to the bit (River's dot
    product order and River's own sigmoid), from the weights and intercept read once."""
    weights = model.weights
    w_logit, w_share = weights.get("logit", 0.0), weights.get("log_share", 0.0)
    intercept = float(model.intercept)

    def p(logit: float, log_share: float) -> float:
        result: float = sigmoid(0.0 + w_logit * logit + w_share * log_share + intercept)
        return result

    return p


def ranker_logit(model: Any) -> Callable[[dict[str, float]], float]:
    """The logit of a River logistic regression for a features dict: its weights dotted with x,
    plus its intercept (what ``predict_proba_one`` squashes through a sigmoid)."""
    weights = model.weights
    intercept = float(model.intercept)

    def logit(x: dict[str, float]) -> float:
        dot = 0.0
        for name, value in x.items():
            dot += weights.get(name, 0.0) * value
        return dot + intercept

    return logit
