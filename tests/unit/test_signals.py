"""The shared signals' snapshot bytes: what a worker restarted on another version reads."""

from __future__ import annotations

from streams.predictor import Foresight, dumps_global_state, loads_global_state
from streams.signals import GlobalSignals


def test_a_snapshot_names_the_signals_where_earlier_versions_look_for_them() -> None:
    """GlobalSignals moved from streams.predictor to streams.signals (issue 13); a worker
    rolled back to a version before the move must still resume from a snapshot written now
    (a pickle names the module of every class it holds, and loads it from there)."""
    model = Foresight()
    for n, item in enumerate(["a", "b", "c", "a", "b"]):
        model.learn("s1", item, float(n))
    data = dumps_global_state(model.signals)
    assert b"streams.predictor" in data and b"GlobalSignals" in data
    assert b"streams.signals" not in data
    restored = loads_global_state(data)
    assert isinstance(restored, GlobalSignals) and restored.events == model.signals.events
