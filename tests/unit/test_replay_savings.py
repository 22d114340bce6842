"""What a replay tells a site owner: latency saved per request and per session, the share of
page views answered locally, the bytes it costs, and the same for the top pages."""

from __future__ import annotations

from foresight.replay.measure import Request
from foresight.replay.savings import TOP_PAGES, savings
from foresight.replay.site import content_id_of

HOME, NEWS, ABOUT = content_id_of("/"), content_id_of("/news"), content_id_of("/about")


def click(client: str, item: str, *, landing: bool, hit: bool, ms: float, size: int) -> Request:
    return Request(0.0, client, item, landing, hit, ms, size)


# Two sessions: a lands on /, then /news from its cache and /about fetched; b lands on /,
# then /news from its cache. Without prefetching every click is a 400 ms fetch.
CLICKS = [
    click("a", HOME, landing=True, hit=False, ms=400.0, size=3000),
    click("a", NEWS, landing=False, hit=True, ms=0.0, size=2000),
    click("b", HOME, landing=True, hit=False, ms=400.0, size=3000),
    click("a", ABOUT, landing=False, hit=False, ms=450.0, size=1000),  # behind a push: slower
    click("b", NEWS, landing=False, hit=True, ms=100.0, size=2000),  # its push still coming
]
WITHOUT = [400.0] * 5
PUSHED = {NEWS: 4000, ABOUT: 0, HOME: 3000}  # /news to both; / to a, never used
USED = {NEWS: 4000}


def test_latency_saved_per_request_and_per_session() -> None:
    result = savings(CLICKS, WITHOUT, PUSHED, USED)
    # the three requests (not the landings) saved 400, -50 and 300 ms
    assert result["saved_ms_per_request"] == round((400 - 50 + 300) / 3, 2)
    # a saved 400 - 50, b 300; landings saved nothing
    assert result["saved_ms_per_session"] == (350 + 300) / 2


def test_the_share_answered_locally_is_over_every_page_view() -> None:
    result = savings(CLICKS, WITHOUT, PUSHED, USED)
    assert (result["page_views"], result["sessions"], result["answered_locally"]) == (5, 2, 2)
    assert result["answered_locally_share"] == 0.4


def test_the_bytes_it_costs_are_the_pushed_and_the_wasted_ones() -> None:
    result = savings(CLICKS, WITHOUT, PUSHED, USED)
    assert result["prefetched_bytes_per_session"] == 7000 / 2
    assert result["wasted_bytes_per_session"] == 3000 / 2
    assert result["wasted_bytes_per_page_view"] == 3000 / 5


def test_the_top_pages_by_views_say_which_gain_most() -> None:
    pages = savings(CLICKS, WITHOUT, PUSHED, USED)["top_pages"]
    # / and /news have two views each (ties by content id: "p/=" first), /about one
    assert [p["page"] for p in pages] == ["/", "/news", "/about"]
    home, news, about = pages
    assert news == {
        "page": "/news",
        "content_id": NEWS,
        "views": 2,
        "answered_locally_share": 1.0,
        "latency_ms_with": 50.0,
        "latency_ms_without": 400.0,
        "saved_ms_per_view": 350.0,
        "saved_ms_total": 700.0,
        "bytes": 2000,
        "prefetched_bytes": 4000,
        "wasted_bytes": 0,
    }
    assert (home["saved_ms_per_view"], home["wasted_bytes"]) == (0.0, 3000)
    assert (about["saved_ms_per_view"], about["answered_locally_share"]) == (-50.0, 0.0)


def test_only_the_top_pages_are_listed() -> None:
    clicks = [
        click(f"c{n}", f"item-{n % 15}", landing=False, hit=False, ms=1.0, size=1)
        for n in range(15 * 3 + 5)
    ]
    pages = savings(clicks, [2.0] * len(clicks), {}, {})["top_pages"]
    assert len(pages) == TOP_PAGES
    assert [p["views"] for p in pages] == sorted((p["views"] for p in pages), reverse=True)
    assert pages[0]["page"] == "item-0"  # not a page's id: shown as it is


def test_without_a_baseline_pass_no_latency_is_claimed() -> None:
    result = savings(CLICKS, [], PUSHED, USED)
    assert result["saved_ms_per_request"] is None and result["saved_ms_per_session"] is None
    assert result["top_pages"][0]["saved_ms_per_view"] is None
    assert result["answered_locally_share"] == 0.4
