"""Replays of recorded sessions through the running system (``foresight replay`` and
``foresight demo``), measured from the agents' side."""

from foresight.replay.run import DEFAULT_SWEEP, ReplayOptions, ReplayResult, replay

__all__ = ["DEFAULT_SWEEP", "ReplayOptions", "ReplayResult", "replay"]
