"""A replay's network: the profiles are the cited ones, a fetch costs a round trip and its
bytes, and pushed bytes share the visitor's downlink with the requests' answers."""

from __future__ import annotations

import pytest

from foresight.replay.network import LOOPBACK, PROFILES, Link, NetworkProfile, profile_of

MB = 1_000_000


def test_the_profiles_are_webpagetests_presets() -> None:
    # WPO-Foundation/webpagetest, www/settings/connectivity.ini.sample (cited in the README)
    table = {name: (p.rtt_ms, p.down_mbps) for name, p in PROFILES.items()}
    assert table == {
        "loopback": (0.0, None),
        "cable": (28.0, 5.0),
        "4g": (170.0, 9.0),
        "3g": (300.0, 1.6),
    }


def test_loopback_is_not_shaped_unless_an_override_shapes_it() -> None:
    assert not LOOPBACK.shaped
    assert LOOPBACK.idle_fetch_ms(3.25, 10 * MB) == 3.25
    assert profile_of("loopback", rtt_ms=50.0).shaped
    assert profile_of("loopback", down_mbps=10.0).shaped


def test_overrides_replace_the_profiles_numbers_and_keep_its_name() -> None:
    assert profile_of("4g", rtt_ms=100.0) == NetworkProfile("4g", 100.0, 9.0)
    assert profile_of("3g", down_mbps=2.0) == NetworkProfile("3g", 300.0, 2.0)
    assert profile_of("cable").as_json() == {"profile": "cable", "rtt_ms": 28.0, "down_mbps": 5.0}


@pytest.mark.parametrize(
    ("name", "rtt_ms", "down_mbps"), [("5g", None, None), ("4g", -1.0, None), ("4g", None, 0.0)]
)
def test_an_unknown_profile_or_an_impossible_number_is_refused(
    name: str, rtt_ms: float | None, down_mbps: float | None
) -> None:
    with pytest.raises(ValueError):
        profile_of(name, rtt_ms, down_mbps)


def test_a_fetch_over_an_idle_link_costs_the_round_trip_and_its_bytes() -> None:
    four_g = PROFILES["4g"]
    # 1.125 MB at 9 Mbit/s is one second
    assert four_g.idle_fetch_ms(5.0, 1_125_000) == pytest.approx(5.0 + 170.0 + 1000.0)
    link = Link(four_g)
    asked, answered = 100.0, 100.005  # 5 ms over loopback
    assert link.fetched("a", 1_125_000, answered) - asked == pytest.approx(1.175)


def test_pushed_bytes_ahead_delay_the_answer_of_a_request() -> None:
    link = Link(PROFILES["4g"])
    pushed_in = link.pushed("p", 2_250_000, received_at=0.0)  # two seconds of bytes
    assert pushed_in == pytest.approx(0.085 + 2.0)
    # answered 10 ms later over loopback: its bytes wait for the push's to pass
    assert link.fetched("a", 112_500, 0.010) == pytest.approx(0.085 + 2.0 + 0.1)
    # alone, it would have been in at 0.010 + 0.170 + 0.1
    assert Link(PROFILES["4g"]).fetched("a", 112_500, 0.010) == pytest.approx(0.28)


def test_a_pushed_item_is_usable_once_its_bytes_are_in() -> None:
    link = Link(PROFILES["3g"])
    assert link.ready_at("p") is None
    link.pushed("p", 200_000, received_at=10.0)  # one second at 1.6 Mbit/s, after 150 ms
    assert link.ready_at("p") == pytest.approx(11.15)
    link.pushed("p", 200_000, received_at=10.5)  # pushed again: the first copy counts
    assert link.ready_at("p") == pytest.approx(11.15)


def test_without_a_downlink_limit_only_the_round_trip_counts() -> None:
    link = Link(profile_of("loopback", rtt_ms=40.0))
    assert link.pushed("p", 10 * MB, 1.0) == pytest.approx(1.02)
    assert link.fetched("a", 10 * MB, 1.0) == pytest.approx(1.04)
