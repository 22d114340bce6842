"""The push rule: whether a prefetch's odds of being used are worth the bytes it costs.

Hit ratio counts requests and waste counts bytes, so a small item is a cheap bet and a large one
an expensive bet at the same probability. An item of ``size`` bytes used with probability ``p``
is pushed only when its odds pay for its bytes at ``bytes_per_odds`` (K) bytes per unit of odds::

    p / (1 - p) >= size / K,   that is   p >= size / (size + K)

so at K = 700 kB (the default) a 7 kB record needs p >= 0.01 and a 300 kB photo p >= 0.3.
The worker does not know content sizes; the cache node does once it holds the item, so the node
applies the rule, and :mod:`streams.simulate` applies the same function at its push step. It
lives in the shared kernel because consumers and streams both use it and never import each
other.

>>> worth_its_bytes(0.05, 4_000, 700_000), worth_its_bytes(0.05, 300_000, 700_000)
(True, False)
>>> worth_its_bytes(0.05, 300_000, None)  # no K: no rule
True
"""

from __future__ import annotations


def worth_its_bytes(probability: float, size: int, bytes_per_odds: float | None) -> bool:
    """Whether ``p / (1 - p) >= size / bytes_per_odds``; None for ``bytes_per_odds``: always.

    Written without division, so ``p == 1`` and ``size == 0`` need no special case; the
    boundary itself passes.
    """
    if bytes_per_odds is None:
        return True
    return probability * bytes_per_odds >= size * (1.0 - probability)
