"""Reference next-click predictors: Markov-1, sequential rules (SR) and popularity.

They follow the same small protocol as Foresight's predictor (``predict(client_id, k)`` and
``learn(client_id, content_id, ts)``), so one evaluation loop runs them all. SR is the rule
learner of Ludewig and Jannach (2018): a click on ``b`` that follows ``a`` at distance ``d``
(within ``steps`` clicks) adds ``1/d`` to the rule ``a -> b``; a client is scored from its last
click only. Markov-1 is the same learner with ``steps=1`` and unit weights. The rule tables are
also the global sequential signals of Foresight's predictor, which reuses
:class:`SequenceRules`.

Probabilities are each model's own normalised scores (share of the rule mass leaving the last
item, or share of all clicks), not calibrated ones.

>>> sr = SequentialRules()
>>> for item in ["a", "b", "c"]:
...     sr.learn("s1", item, 0.0)
>>> sr.learn("s2", "a", 1.0)
>>> [item for item, _ in sr.predict("s2")]
['b', 'c']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

Weight = Callable[[int], float]


def unit_weight(distance: int) -> float:
    """Every earlier click counts the same."""
    return 1.0


def inverse_weight(distance: int) -> float:
    """SR's ``div`` weighting: a click ``d`` steps back counts ``1/d``."""
    return 1.0 / distance


def top_k(scores: Iterable[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """The k highest scores, ties broken by content id so that the order is deterministic."""
    return heapq.nsmallest(k, scores, key=lambda pair: (-pair[1], pair[0]))


class Leaderboard:
    """Scores that only grow, with the best ``leaders`` of them kept in order.

    An item can only overtake a leader by its own increase, so the leaders are maintained on
    each ``add`` and reading the top k (k <= leaders) costs O(k). Ties rank by content id.
    """

    def __init__(self, leaders: int) -> None:
        self.scores: dict[str, float] = {}
        self.total = 0.0
        self.leaders = leaders
        self._top: list[str] = []

    def top(self, k: int) -> list[str]:
        """The k items with the highest scores."""
        if k <= self.leaders:
            return self._top[:k]
        return [item for item, _ in top_k(self.scores.items(), k)]

    def add(self, item: str, amount: float) -> None:
        """Add ``amount`` (> 0) to the item's score."""
        scores, top = self.scores, self._top
        score = scores[item] = scores.get(item, 0.0) + amount
        self.total += amount
        if len(top) < self.leaders:
            if item not in top:
                top.append(item)
            p = top.index(item)
        else:
            if not top:
                return
            # A leader never ranks below the last one, so an item that still does is no leader
            # and displaces none: most adds end here in O(1), without a scan of the leaders.
            last = top[-1]
            if score < scores[last] or (score == scores[last] and item > last):
                return
            p = len(top) - 1 if item == last or item not in top else top.index(item)
        # Move up past every leader that now ranks lower (a smaller score, or equal, larger id).
        while p > 0:
            ahead = top[p - 1]
            if scores[ahead] > score or (scores[ahead] == score and ahead < item):
                break
            top[p] = ahead
            p -= 1
        top[p] = item

    def rescale(self, factor: float) -> None:
        """Multiply every score by ``factor`` (> 0); the order does not change."""
        self.scores = {item: score * factor for item, score in self.scores.items()}
        self.total *= factor

    def prune(self, keep: int) -> None:
        """Forget all but the ``keep`` (>= leaders) best scores; the total and leaders stay."""
        if len(self.scores) > keep:
            self.scores = dict(top_k(self.scores.items(), max(keep, self.leaders)))


_EMPTY = Leaderboard(leaders=0)  # the row of an unknown source; never added to


class SequenceRules:
    """Weighted item-to-item rules ``a -> b`` counted from click sequences.

    ``observe(recent, item)`` adds ``weight(d)`` to ``recent[-d] -> item`` for every
    ``d <= steps``. Each source's row is a :class:`Leaderboard`: its total gives shares in
    O(1) and its ``leaders`` strongest successors are at hand without sorting.
    """

    def __init__(self, steps: int, weight: Weight = inverse_weight, leaders: int = 30) -> None:
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.steps = steps
        self.weight = weight
        self.leaders = leaders
        self.rows: dict[str, Leaderboard] = {}

    def observe(self, recent: list[str] | deque[str], item: str, scale: float = 1.0) -> None:
        """Count ``item`` as following each of the last ``steps`` items of ``recent``.

        ``scale`` multiplies the weights.
        """
        n = len(recent)
        for distance in range(1, min(self.steps, n) + 1):
            self.add(recent[n - distance], item, self.weight(distance) * scale)

    def add(self, source: str, target: str, weight: float) -> None:
        row = self.rows.get(source)
        if row is None:
            row = self.rows[source] = Leaderboard(self.leaders)
        row.add(target, weight)

    def prune(self, keep: int) -> None:
        """Bound memory: keep each source's ``keep`` strongest rules (shares stay as they were)."""
        for row in self.rows.values():
            row.prune(keep)

    def row(self, source: str) -> Leaderboard:
        """The rules leaving ``source`` (empty when it was never followed by anything)."""
        return self.rows.get(source, _EMPTY)


class RulePredictor:
    """Predicts from the client's last click with a :class:`SequenceRules` table."""

    def __init__(self, steps: int, weight: Weight) -> None:
        self.table = SequenceRules(steps, weight)
        self._recent: dict[str, deque[str]] = {}

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        recent = self._recent.get(client_id)
        if not recent:
            return []
        row = self.table.row(recent[-1])
        return [(item, row.scores[item] / row.total) for item in row.top(k)]

    def learn(self, client_id: str, content_id: str, ts: float) -> None:
        recent = self._recent.get(client_id)
        if recent is None:
            recent = self._recent[client_id] = deque(maxlen=self.table.steps)
        self.table.observe(recent, content_id)
        recent.append(content_id)


class Markov1(RulePredictor):
    """First-order Markov chain: the most frequent successors of the last click."""

    def __init__(self) -> None:
        super().__init__(steps=1, weight=unit_weight)


class SequentialRules(RulePredictor):
    """SR: rules within ``steps`` clicks weighted ``1/distance``, scored from the last click."""

    def __init__(self, steps: int = 10) -> None:
        super().__init__(steps=steps, weight=inverse_weight)


class Popularity:
    """The most clicked items overall, the same for every client."""

    def __init__(self) -> None:
        self.board = Leaderboard(leaders=100)

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        board = self.board
        return [(item, board.scores[item] / board.total) for item in board.top(k)]

    def learn(self, client_id: str, content_id: str, ts: float) -> None:
        self.board.add(content_id, 1.0)
