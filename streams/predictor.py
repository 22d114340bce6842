"""Foresight's next-click predictor: global online signals re-ranked by an online River model.

Pure logic: no Faust, no Kafka, no clock (times come from events), no randomness (ties break by
content id), so the same events in the same order give the same predictions.

The parts, one concept per module, all re-exported here:

- :mod:`streams.foresight_config`: :class:`ForesightConfig`, the knobs;
- :mod:`streams.client_state`: a client's session and contribution budget (issue 12: one
  client cannot poison what all share), ~80 bytes in a worker's table;
- :mod:`streams.signals`: :class:`GlobalSignals`, learned from every client's events (rules,
  popularity, the River re-ranker and calibrator), snapshotted as bytes;
- :mod:`streams.ranking`: a session's candidates, their features and their ranking;
- :mod:`streams.explain`: why a client's top k is what it is.

Predict: the ranking's top k, with the calibrator's probabilities. Learn (score, then learn):
the re-ranker and calibrator learn from the ranking of the client's prefix, labelled by the
click; then the click is counted. That ranking is the one the client was shown, its last
prediction, when the predictor still has it (:data:`SHOWN_RANKINGS`): the worker interleaves
clients, so ranking the prefix again would cost a second ranking per click (40 % of the step)
and score it with signals other clients have moved since. Sequential callers (the evaluation)
see no difference: nothing is learned between a client's predict and its learn.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Protocol

from streams.client_state import (
    ClientState,
    contribution_tokens,
    dumps_client_state,
    loads_client_state,
)
from streams.explain import Explanation, by_popularity, calibration_features, explain_ranking
from streams.foresight_config import ForesightConfig
from streams.logistic import learn_each
from streams.ranking import Ranking, Scored, Seen, by_blend, probability, rank, ranker_logit
from streams.seen import add as add_seen
from streams.seen import contains
from streams.signals import GlobalSignals, dumps_global_state, loads_global_state

#: Clients whose last prediction's ranking the predictor keeps for their next click's learning
#: (most recent first out). A ranking is ~9 KB (20 candidates' features), so this is ~36 MB;
#: a client that fell out is ranked again, as it would be without the cache. A worker at
#: 1,000 clicks/s sees each client's next click within seconds: 4,096 covers them.
SHOWN_RANKINGS = 4096

__all__ = [
    "ClientState",
    "Explanation",
    "Foresight",
    "ForesightConfig",
    "GlobalSignals",
    "Predictor",
    "Scored",
    "candidates",
    "contribution_tokens",
    "dumps_client_state",
    "dumps_global_state",
    "loads_client_state",
    "loads_global_state",
    "ranker_logit",
]


class Predictor(Protocol):
    """What the evaluation loop and the stream worker need from any predictor."""

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        """Up to k ``(content_id, probability)``, most likely first, no duplicates."""
        ...

    def learn(self, client_id: str, content_id: str, ts: float) -> None:
        """Take in the client's click on ``content_id`` at event time ``ts``."""
        ...


def candidates(signals: GlobalSignals, state: ClientState, config: ForesightConfig) -> Scored:
    """The client's candidates with their features, pre-ranked by the fixed blend."""
    return by_blend(signals, state.items, config).scored()


#: How deep in a ranking a click counts as a hit for a client's personal-or-shared choice.
PREQUENTIAL_TOP = 5


def returning(state: ClientState | None, config: ForesightConfig) -> bool:
    """Whether the client came back after an earlier session (and `personal` is on)."""
    return config.personal and state is not None and state.sessions >= 2


def seen_before(state: ClientState | None, config: ForesightConfig) -> Seen:
    """What a returning client requested before, when its personal ranking has hit more of its
    clicks than the shared one; None (rank the shared way) otherwise."""
    if state is None or not returning(state, config) or state.personal_hits <= state.shared_hits:
        return None
    return partial(contains, state.seen)


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
        self._last: tuple[str, int, Ranking] | None = None
        # Each client's last prediction's ranking, with the session it ranked (SHOWN_RANKINGS).
        self._shown: OrderedDict[str, tuple[list[str], Ranking]] = OrderedDict()

    def client_state(self, client_id: str) -> ClientState | None:
        return self.clients.get(client_id)

    def set_client_state(self, client_id: str, state: ClientState) -> None:
        self.clients[client_id] = state
        self._last = None

    def forget_shown(self) -> None:
        """Drop the rankings clients were last shown, as a new process has none: each client's
        next click is then learned from its prefix ranked again."""
        self._shown.clear()

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
        ranking = self._ranked(client_id, state.items)
        self._remember_shown(client_id, state.items, ranking)
        shares = ranking.shares()
        calibrated = probability(self.signals.calibrator)
        rerank, log = self.config.rerank, math.log
        out: list[tuple[str, float]] = []
        ceiling = 1.0
        for item, score, share in zip(ranking.items[:k], ranking.scores, shares, strict=False):
            # The calibrator's features, as calibration_features() builds them for River.
            logit = score if rerank else log(score + 1e-4)
            ceiling = min(ceiling, calibrated(logit, log(share + 1e-6)))  # follow the ranking
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
        recent, sessions = state.items, state.sessions or 1
        if state.last_ts is not None and ts - state.last_ts > config.session_gap_s:
            recent = []  # a new session: the old one's clicks predict little ...
            sessions += 1  # ... but what the client requested before stays known
        shown = self._shown.pop(client_id, None)
        ranking = shown[1] if shown is not None and shown[0] == recent else None
        personal_hits, shared_hits = state.personal_hits, state.shared_hits
        if recent and returning(state, config):  # score both ways for the client's choice
            ranking = ranking or self._ranked(client_id, recent)
            other = rank(
                self.signals,
                recent,
                config,
                None if ranking.session.seen is not None else partial(contains, state.seen),
            )
            personal, shared = (
                (other, ranking) if ranking.session.seen is None else (ranking, other)
            )
            personal_hits += content_id in personal.items[:PREQUENTIAL_TOP]
            shared_hits += content_id in shared.items[:PREQUENTIAL_TOP]
        if teach:
            if recent:
                self._learn_ranking(ranking or self._ranked(client_id, recent), content_id)
            self.signals.observe(recent, content_id, ts)
            tokens -= 1.0
        items = [*recent, content_id][-config.history :]
        contributed = state.contributed + int(teach)
        seen, seen_count = add_seen(state.seen, state.seen_count, content_id)
        self.clients[client_id] = ClientState(
            items,
            ts,
            tokens,
            refilled_at,
            contributed,
            sessions,
            seen,
            seen_count,
            personal_hits,
            shared_hits,
        )
        self._last = None

    def lifetime_allowance(self) -> float:
        """The clicks any one client may teach the shared signals as they are now."""
        config = self.config
        return config.lifetime_floor + config.lifetime_share * self.signals.events

    def _remember_shown(self, client_id: str, items: list[str], ranking: Ranking) -> None:
        shown = self._shown
        shown[client_id] = (list(items), ranking)
        shown.move_to_end(client_id)
        if len(shown) > SHOWN_RANKINGS:
            shown.popitem(last=False)

    def _ranked(self, client_id: str, items: list[str]) -> Ranking:
        """The session's ranking, reusing the last one computed when it is the same client's
        and nothing was learned since."""
        last = self._last
        if last is not None and last[0] == client_id and last[1] == self.signals.events:
            return last[2]
        ranking = rank(
            self.signals, items, self.config, seen_before(self.clients.get(client_id), self.config)
        )
        self._last = (client_id, self.signals.events, ranking)
        return ranking

    def rank(self, state: ClientState) -> Ranking:
        """A session's candidate pool as :meth:`predict` ranks it (needs a click; changes
        nothing, caches nothing)."""
        return rank(self.signals, state.items, self.config, seen_before(state, self.config))

    def _learn_ranking(self, ranking: Ranking, actual: str) -> None:
        config, signals = self.config, self.signals
        items, scores, shares = ranking.items, ranking.scores, ranking.shares()
        learn_each(
            signals.calibrator,
            [
                (calibration_features(scores[i], shares[i], config.rerank), items[i] == actual)
                for i in range(min(config.calibrate_top, len(items)))
            ],
        )
        if not config.rerank or actual not in items:  # nothing to rank above the others
            return
        # Feature dicts only for the candidates the re-ranker learns from: the top learn_top,
        # and the click itself when it ranked below them.
        top = min(config.learn_top, len(items))
        examples = [(ranking.features(i), items[i] == actual) for i in range(top)]
        position = items.index(actual)
        if position >= config.learn_top:
            examples.append((ranking.features(position), True))
        learn_each(signals.ranker, examples)

    def explain(self, client_id: str, k: int = 5) -> list[Explanation]:
        """The client's :meth:`predict` top k, each with what every signal contributed."""
        return self.explain_session(self.clients.get(client_id), k)

    def explain_session(self, state: ClientState | None, k: int = 5) -> list[Explanation]:
        """:meth:`explain` for a session kept outside the predictor (a worker's table)."""
        if k <= 0:
            return []
        if state is None or not state.items:
            return by_popularity(self.signals, k)
        ranking = self.rank(state)
        return explain_ranking(self.signals, self.config, state.items, ranking, k)
