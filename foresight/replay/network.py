"""The visitor's network in a replay: a profile (round trip, downlink rate) and one agent's link.

Over loopback a miss costs a few milliseconds and a push is free; a visitor's real miss costs a
round trip plus its bytes over their downlink, and pushes use that same downlink. A profile
says how much; a :class:`Link` is one agent's downlink under it:

- a fetch answered (over loopback) at ``t`` reaches the visitor once its bytes have passed the
  downlink, starting no earlier than ``t + rtt`` (the request's way up and the answer's first
  byte's way down);
- a push received at ``t`` starts no earlier than ``t + rtt / 2`` (the node sent it: one way);
- transfers pass one after another, first come first served, at the profile's rate, so pushed
  bytes already on their way delay the next request's answer (a pessimistic model of two
  flows sharing a link: a push in flight is never overtaken);
- an item is usable once its bytes are in, however early its push was received.

Not modelled: the uplink (requests and views are a few hundred bytes), TCP slow start and
loss, connection set-up (the agent keeps its connections). The profiles' numbers are
WebPageTest's connectivity presets (``www/settings/connectivity.ini.sample`` in
WPO-Foundation/webpagetest); README.md and docs/access-logs.md cite them.

>>> link = Link(PROFILES["4g"])  # 170 ms, 9 Mbps
>>> round(link.pushed("a", 112_500, 0.0), 3)  # 0.085 s one way, then 100 ms of bytes
0.185
>>> round(link.fetched("b", 112_500, 0.1), 3)  # ready at 0.27, its bytes pass in 100 ms
0.37
>>> round(link.ready_at("a"), 3)
0.185
"""

from __future__ import annotations

from dataclasses import dataclass

MEGABIT = 1_000_000  # bits: WebPageTest's bwIn is in bit/s


@dataclass(frozen=True)
class NetworkProfile:
    """A round trip in ms and a downlink in Mbit/s (None: not limited)."""

    name: str
    rtt_ms: float = 0.0
    down_mbps: float | None = None

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or (self.down_mbps is not None and self.down_mbps <= 0):
            raise ValueError("the round trip must be >= 0 ms and the downlink > 0 Mbit/s")

    @property
    def shaped(self) -> bool:
        """False for loopback as it is: the replay then measures exactly as it always did."""
        return self.rtt_ms > 0 or self.down_mbps is not None

    def transfer_s(self, size: int) -> float:
        """Seconds ``size`` bytes take through the downlink."""
        return 0.0 if self.down_mbps is None else size * 8 / (self.down_mbps * MEGABIT)

    def idle_fetch_ms(self, loopback_ms: float, size: int) -> float:
        """What a fetch that took ``loopback_ms`` costs over an otherwise idle link."""
        return loopback_ms + self.rtt_ms + self.transfer_s(size) * 1000

    def as_json(self) -> dict[str, object]:
        return {"profile": self.name, "rtt_ms": self.rtt_ms, "down_mbps": self.down_mbps}


#: WebPageTest's presets (connectivity.ini.sample): Cable "5/1 Mbps 28ms RTT", 4G "9 Mbps,
#: 170ms RTT", 3G "1.6 Mbps/768 Kbps 300ms RTT".
PROFILES = {
    "loopback": NetworkProfile("loopback"),
    "cable": NetworkProfile("cable", rtt_ms=28.0, down_mbps=5.0),
    "4g": NetworkProfile("4g", rtt_ms=170.0, down_mbps=9.0),
    "3g": NetworkProfile("3g", rtt_ms=300.0, down_mbps=1.6),
}
LOOPBACK = PROFILES["loopback"]


def profile_of(
    name: str, rtt_ms: float | None = None, down_mbps: float | None = None
) -> NetworkProfile:
    """The named profile with the given overrides (``loopback`` with an override is shaped)."""
    if name not in PROFILES:
        raise ValueError(f"no network profile {name!r}: one of {', '.join(PROFILES)}")
    base = PROFILES[name]
    return NetworkProfile(
        name,
        base.rtt_ms if rtt_ms is None else rtt_ms,
        base.down_mbps if down_mbps is None else down_mbps,
    )


class Link:
    """One agent's downlink under a profile; times are the caller's clock, in seconds."""

    def __init__(self, profile: NetworkProfile) -> None:
        self.profile = profile
        self._rtt_s = profile.rtt_ms / 1000
        self._free_at = float("-inf")
        self._ready: dict[str, float] = {}

    def _through(self, start: float, size: int) -> float:
        """When ``size`` bytes that may start at ``start`` are in: after what is ahead."""
        self._free_at = max(start, self._free_at) + self.profile.transfer_s(size)
        return self._free_at

    def _hold(self, content_id: str, arrived: float) -> None:
        self._ready[content_id] = min(arrived, self._ready.get(content_id, arrived))

    def pushed(self, content_id: str, size: int, received_at: float) -> float:
        """A push the agent received at ``received_at``: when its bytes are in."""
        arrived = self._through(received_at + self._rtt_s / 2, size)
        self._hold(content_id, arrived)
        return arrived

    def fetched(self, content_id: str, size: int, answered_at: float) -> float:
        """A fetch whose answer came at ``answered_at`` over loopback: when it is in."""
        arrived = self._through(answered_at + self._rtt_s, size)
        self._hold(content_id, arrived)
        return arrived

    def ready_at(self, content_id: str) -> float | None:
        """When the item's bytes were (or will be) in, by push or fetch; None: never sent."""
        return self._ready.get(content_id)
