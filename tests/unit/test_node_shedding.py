"""Under load a cache node sheds the prefetch work that can no longer help, first and counted:
commands of a click its client has since followed with another, and commands whose click is
older than the shedding age."""

from __future__ import annotations

from typing import cast

from consumers.fetcher import Fetcher
from consumers.node import CacheNode
from consumers.sessions import SessionRegistry
from consumers.store import ContentStore
from schemas import PrefetchCommand


def command(client: str, item: str, event_ts: float) -> PrefetchCommand:
    return PrefetchCommand(
        command_id=f"{client}-{item}-{event_ts}",
        client_id=client,
        content_id=item,
        probability=0.5,
        rank=1,
        model="test",
        issued_at=event_ts,
        expires_at=event_ts + 600,
        event_ts=event_ts,
    )


def node(shed_after_s: float | None = 2.0) -> CacheNode:
    store, fetcher = cast(ContentStore, object()), cast(Fetcher, object())
    return CacheNode("node-0", store, fetcher, SessionRegistry(), shed_after_s=shed_after_s)


def test_the_commands_of_a_click_followed_by_another_are_superseded() -> None:
    cache_node = node()
    first = [command("c-1", item, 100.0) for item in ("a", "b", "c")]
    second = [command("c-1", item, 101.5) for item in ("d", "e")]
    other_client = command("c-2", "a", 100.0)
    cache_node.note_clicks([*first, *second, other_client])
    assert [cache_node.shed(c, now=101.6) for c in first] == ["superseded"] * 3
    # The newest click's commands, and another client's, still go ahead.
    assert [cache_node.shed(c, now=101.6) for c in [*second, other_client]] == [None] * 3
    assert cache_node.counters.superseded == 3


def test_a_command_whose_click_is_older_than_the_shedding_age_is_late() -> None:
    cache_node = node(shed_after_s=2.0)
    fresh, old = command("c-1", "a", 100.0), command("c-2", "a", 97.0)
    cache_node.note_clicks([fresh, old])
    assert cache_node.shed(fresh, now=101.0) is None
    assert cache_node.shed(old, now=101.0) == "late"
    # Without an age, only superseded commands are shed.
    assert node(shed_after_s=None).shed(old, now=1e9) is None


def test_a_command_read_before_the_newer_click_is_shed_once_the_newer_one_is_read() -> None:
    cache_node = node()
    old = command("c-1", "a", 100.0)
    cache_node.note_clicks([old])
    assert cache_node.shed(old, now=100.1) is None
    cache_node.note_clicks([command("c-1", "b", 100.2)])
    assert cache_node.shed(old, now=100.3) == "superseded"
