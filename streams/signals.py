"""What Foresight learns from all clients' events, shared by every client: :class:`GlobalSignals`.

Sequential rules ``a -> b`` weighted ``1/distance`` within ``steps`` clicks (SR), first-order
transitions, the reverse rules ``b -> a``, time-decayed popularity, a River logistic regression
that re-ranks candidates from their features, and a River logistic calibrator that maps a
candidate's re-ranker logit and its softmax share to the probability that it is the next click.
A stream worker snapshots them with :func:`dumps_global_state`.
"""

from __future__ import annotations

import math
import pickle
from importlib.metadata import version
from typing import Any

from river import linear_model, optim

from streams.baselines import Leaderboard, SequenceRules, inverse_weight, unit_weight
from streams.foresight_config import ForesightConfig


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


# Snapshots pickle the class by name: keep the name it had before it moved here, where
# streams.predictor still exports it, so a snapshot loads in this version and in earlier ones
# (a worker rolled back after an upgrade resumes its signals).
GlobalSignals.__module__ = "streams.predictor"


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
