"""Why the predictor ranks a client's top k as it does: :class:`Explanation`, read off the models
without changing them (``foresight inspect`` and the worker's inspection endpoint show it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.foresight_config import ForesightConfig
from streams.ranking import Ranking
from streams.signals import GlobalSignals


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


def calibration_features(score: float, share: float, rerank: bool) -> dict[str, float]:
    """What the calibrator reads of a candidate: its re-ranker logit (or the log of its blend)
    and the log of its share."""
    logit = score if rerank else math.log(score + 1e-4)
    return {"logit": logit, "log_share": math.log(share + 1e-6)}


def by_popularity(signals: GlobalSignals, k: int) -> list[Explanation]:
    """A client with no session yet: the shares of time-decayed popularity."""
    popularity = signals.popularity
    out: list[Explanation] = []
    for rank, item in enumerate(popularity.top(k), 1):
        p = popularity.scores[item] / popularity.total
        parts = {"popularity": p}
        out.append(Explanation(item, rank, p, p, p, p, 0.0, "popularity", parts, parts, {}, {}))
    return out


def explain_ranking(
    signals: GlobalSignals,
    config: ForesightConfig,
    items: list[str],
    ranking: Ranking,
    k: int,
) -> list[Explanation]:
    """The top k of ``ranking`` (the session ``items``' own), each with what every signal
    contributed."""
    popularity = signals.popularity
    shares = ranking.shares()
    popular = popularity.top(config.popular)
    most = popularity.scores[popular[0]] if popular else 1.0
    recent = list(reversed(items))
    w_earlier, w_back, w_recency, w_pop = config.blend
    kind = "re-ranker" if config.rerank else "blend"
    out: list[Explanation] = []
    ceiling = 1.0
    for index in range(min(k, len(ranking))):
        item, score, share = ranking.items[index], ranking.scores[index], shares[index]
        x = ranking.features(index)
        calibration = calibration_features(score, share, config.rerank)
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
                rank=index + 1,
                probability=ceiling,
                calibrated=calibrated,
                score=score,
                share=share,
                blend=x["blend"],
                ranking=kind,
                sources=sources,
                signals=raw,
                ranker=_contributions(signals.ranker, x) if config.rerank else {},
                calibration=_contributions(signals.calibrator, calibration),
            )
        )
    return out


def _contributions(model: Any, x: dict[str, float]) -> dict[str, float]:
    """A River linear model's weight times value per feature, and its intercept."""
    weights = model.weights
    parts = {name: weights.get(name, 0.0) * value for name, value in x.items()}
    parts["intercept"] = float(model.intercept)
    return parts
