"""The consistent-hash ring: placement, movement, weights, bounded loads, the membership fold."""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from foresight.ring import (
    EmptyRingError,
    HashRing,
    InvalidMembershipRecord,
    Member,
    RingMembership,
    loads,
    position,
)

REPO = Path(__file__).resolve().parents[2]
KEYS = [f"client-{i}" for i in range(5000)]

# '#' is the virtual-point separator, so ids containing it are worth generating.
node_ids = st.text(alphabet="abc-#0123456789", min_size=1, max_size=6)
members_st = st.lists(
    st.builds(Member, node_ids, weight=st.floats(0.25, 4.0)),
    min_size=1,
    max_size=8,
    unique_by=lambda m: m.node_id,
)
keys_st = st.lists(st.text(max_size=12), max_size=150)


def cluster(n: int) -> list[Member]:
    return [Member(f"node-{i}", url=f"ws://node-{i}:8080", slot=i) for i in range(n)]


def owner_ids(ring: HashRing, keys: list[str]) -> dict[str, str]:
    return {key: ring.owner(key).node_id for key in keys}


def sha_position(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def reference_owner(members: list[Member], key: str, vnodes: int) -> str:
    """Brute force, written apart from the ring: smallest clockwise distance, ties by node_id."""
    target = sha_position(key)
    return min(
        ((sha_position(f"{m.node_id}#{i}") - target) % 2**64, m.node_id)
        for m in members
        for i in range(max(1, round(vnodes * m.weight)))
    )[1]


def up(url: str = "ws://n:8080", slot: int = 0, ts: float = 100.0, **extra: Any) -> dict[str, Any]:
    return {"url": url, "slot": slot, "state": "up", "heartbeat_ts": ts, "weight": 1.0, **extra}


# --- hashing -----------------------------------------------------------------------------------


def test_position_is_the_first_eight_bytes_of_sha256_big_endian() -> None:
    # Published SHA-256 digests of "abc" (FIPS 180-2) and of the empty string.
    assert position("abc") == 0xBA7816BF8F01CFEA
    assert position("") == 0xE3B0C44298FC1C14
    assert position("client-é") == sha_position("client-é")


def test_pinned_owners_catch_any_change_to_hashing_or_placement() -> None:
    ring = HashRing([Member("node-a"), Member("node-b"), Member("node-c")])
    expected = {
        "alice": "node-c",
        "bob": "node-a",
        "carol": "node-b",
        "dave": "node-a",
        "erin": "node-a",
        "frank": "node-b",
    }
    assert owner_ids(ring, list(expected)) == expected
    assert expected == {k: reference_owner(list(ring.members), k, 160) for k in expected}
    # A key that lands exactly on a virtual point belongs to that point's node.
    assert [ring.owner(f"node-{c}#7").node_id for c in "abc"] == ["node-a", "node-b", "node-c"]


@settings(max_examples=60, deadline=None)
@given(
    members=members_st, keys=st.lists(st.text(max_size=8), max_size=20), vnodes=st.integers(1, 12)
)
def test_owner_is_the_first_virtual_point_clockwise(
    members: list[Member], keys: list[str], vnodes: int
) -> None:
    ring = HashRing(members, vnodes=vnodes)
    assert owner_ids(ring, keys) == {k: reference_owner(members, k, vnodes) for k in keys}


# --- agreement between processes -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(members=members_st, seed=st.integers(0, 2**32))
def test_same_membership_in_any_order_gives_the_same_owners(
    members: list[Member], seed: int
) -> None:
    shuffled = list(members)
    random.Random(seed).shuffle(shuffled)
    first, second = HashRing(members), HashRing(shuffled)
    assert first == second
    assert owner_ids(first, KEYS[:300]) == owner_ids(second, KEYS[:300])


def test_other_processes_with_other_hash_seeds_agree_on_every_owner() -> None:
    members = ", ".join(f"Member('node-{i}', weight={1 + i % 3})" for i in range(6))
    script = (
        "from foresight.ring import HashRing, Member\n"
        f"ring = HashRing([{members}])\n"
        "print(' '.join(ring.owner(f'client-{i}').node_id for i in range(500)))\n"
    )
    ring = HashRing(Member(f"node-{i}", weight=1 + i % 3) for i in range(6))
    expected = " ".join(ring.owner(key).node_id for key in KEYS[:500])
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == expected


# --- movement on membership changes --------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5, 9])
def test_a_join_moves_only_keys_to_the_new_node_and_about_one_in_n_plus_one(n: int) -> None:
    before = HashRing(cluster(n))
    joiner = Member(f"node-{n}", slot=n)
    after = before.with_member(joiner)
    moved = [k for k in KEYS if before.owner(k) != after.owner(k)]
    assert {after.owner(k) for k in moved} == {joiner}
    assert 0.5 / (n + 1) < len(moved) / len(KEYS) < 2 / (n + 1)


def test_a_leave_moves_only_the_leavers_keys() -> None:
    before = HashRing(cluster(6))
    after = before.without("node-2")
    for key in KEYS:
        if before.owner(key).node_id != "node-2":
            assert after.owner(key) == before.owner(key)
        else:
            assert after.owner(key).node_id != "node-2"
    assert "node-2" not in after
    assert len(after) == 5


@settings(max_examples=40, deadline=None)
@given(members=members_st, joiner=node_ids, keys=keys_st)
def test_join_then_leave_moves_keys_only_to_and_from_that_node(
    members: list[Member], joiner: str, keys: list[str]
) -> None:
    assume(any(m.node_id != joiner for m in members))
    ring = HashRing(m for m in members if m.node_id != joiner)
    joined = ring.with_member(Member(joiner))
    for key in keys:
        assert joined.owner(key) in (ring.owner(key), joined.member(joiner))
    assert owner_ids(joined.without(joiner), keys) == owner_ids(ring, keys)


# --- weights -------------------------------------------------------------------------------------


def test_a_node_of_weight_two_gets_about_twice_the_keys() -> None:
    ring = HashRing([*cluster(4), Member("node-4", weight=2.0, slot=4)])
    counts = loads({key: ring.owner(key) for key in KEYS})
    light = sum(counts[f"node-{i}"] for i in range(4)) / 4
    assert 1.5 < counts["node-4"] / light < 2.5


def test_raising_a_weight_moves_keys_only_onto_that_node() -> None:
    ring = HashRing(cluster(5))
    heavier = ring.with_weight("node-1", 2.0)
    assert heavier.member("node-1").weight == 2.0
    moved = [k for k in KEYS if ring.owner(k) != heavier.owner(k)]
    assert moved
    assert {heavier.owner(k).node_id for k in moved} == {"node-1"}


# --- owners(key, n) ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(members=members_st, key=st.text(max_size=12), n=st.integers(0, 10))
def test_owners_are_distinct_and_start_with_the_owner(
    members: list[Member], key: str, n: int
) -> None:
    ring = HashRing(members)
    found = ring.owners(key, n)
    assert len(found) == min(n, len(members))
    assert len({m.node_id for m in found}) == len(found)
    if found:
        assert found[0] == ring.owner(key)


# --- bounded loads -------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(members=members_st, keys=keys_st, epsilon=st.floats(0.01, 1.0), seed=st.integers(0, 99))
def test_bounded_assignment_never_exceeds_the_cap_and_ignores_key_order(
    members: list[Member], keys: list[str], epsilon: float, seed: int
) -> None:
    ring = HashRing(members, vnodes=20)
    assignment = ring.assign(keys, epsilon)
    distinct = len(set(keys))
    total = math.fsum(m.weight for m in members)
    assert set(assignment) == set(keys)
    for node_id, load in loads(assignment).items():
        weight = ring.member(node_id).weight
        assert load <= math.ceil((1 + epsilon) * distinct * weight / total)
    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    assert ring.assign(shuffled, epsilon) == assignment


def test_bounded_assignment_balances_what_plain_hashing_does_not() -> None:
    ring = HashRing(cluster(5), vnodes=4)
    plain = loads({key: ring.owner(key) for key in KEYS})
    assert max(plain.values()) > 1100  # few points per node: plain placement is lopsided
    bounded = loads(ring.assign(KEYS, 0.05))
    assert max(bounded.values()) <= 1050
    assert sum(bounded.values()) == len(KEYS)


def test_a_cap_that_never_binds_gives_the_plain_owners() -> None:
    ring = HashRing(cluster(3))
    # Each cap is ceil(3 * m / 3) = m, so no key is ever turned away.
    assert ring.assign(KEYS[:600], 2.0) == {key: ring.owner(key) for key in KEYS[:600]}


def test_load_factor_is_the_default_epsilon() -> None:
    ring = HashRing(cluster(4), load_factor=0.1)
    assert ring.assign(KEYS[:800]) == ring.assign(KEYS[:800], 0.1)
    grown = ring.with_member(Member("node-9"))  # derived rings keep the default
    assert grown.assign(KEYS[:800]) == grown.assign(KEYS[:800], 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        HashRing(cluster(4)).assign(KEYS[:10])
    with pytest.raises(ValueError, match="epsilon"):
        HashRing(cluster(4)).assign(KEYS[:10], -0.5)


# --- the owner lookup's fast path ----------------------------------------------------------------


def sorted_points(members: list[Member], vnodes: int) -> tuple[list[int], list[str]]:
    """Every virtual point as (position, node_id), sorted, computed apart from the ring."""
    points = sorted(
        (sha_position(f"{m.node_id}#{i}"), m.node_id)
        for m in members
        for i in range(max(1, round(vnodes * m.weight)))
    )
    return [pos for pos, _ in points], [node_id for _, node_id in points]


def bisect_owner(points: tuple[list[int], list[str]], key: str) -> str:
    positions, node_ids = points
    return node_ids[bisect.bisect_left(positions, sha_position(key)) % len(positions)]


BIG = cluster(64)
BIG_RING = HashRing(BIG)
BIG_POINTS = sorted_points(BIG, 160)


@pytest.mark.parametrize(
    ("n", "vnodes", "max_bits"),
    [
        (1, 1, 20),  # one point: every other key wraps around to it
        (3, 1, 20),  # a fifth of the circle lies past the last point, not the first's node
        (8, 160, 20),
        (64, 160, 20),
        (64, 160, 3),  # the size cap of the table, hit by huge rings: crowded buckets
    ],
)
def test_owner_agrees_with_a_plain_bisect_on_every_key_and_every_point(
    n: int, vnodes: int, max_bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("foresight.ring._MAX_BUCKET_BITS", max_bits)
    members = cluster(n)
    ring, points = HashRing(members, vnodes=vnodes), sorted_points(members, vnodes)
    # A point's own name lands exactly on it, so these keys sit in buckets holding a point.
    on_points = [f"{m.node_id}#{i}" for m in members for i in range(vnodes)]
    for key in KEYS + on_points:
        assert ring.owner(key).node_id == bisect_owner(points, key)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=40))
def test_owner_is_owners_first_and_a_plain_bisect_on_any_key(key: str) -> None:
    assert BIG_RING.owner(key) == BIG_RING.owners(key, 1)[0]
    assert BIG_RING.owner(key).node_id == bisect_owner(BIG_POINTS, key)


# --- lookups and validation ----------------------------------------------------------------------


def test_an_empty_ring_raises_a_clear_lookup_error() -> None:
    ring = HashRing([])
    assert len(ring) == 0
    for call in (
        lambda: ring.owner("client-1"),
        lambda: ring.owners("client-1", 2),
        lambda: ring.assign(["client-1"], 0.1),
    ):
        with pytest.raises(EmptyRingError, match="no members"):
            call()
    assert issubclass(EmptyRingError, LookupError)
    with pytest.raises(EmptyRingError):
        HashRing(cluster(1)).without("node-0").owner("client-1")


def test_member_lookup_and_replacement() -> None:
    ring = HashRing(cluster(3))
    assert "node-1" in ring
    assert "node-7" not in ring
    assert ring.member("node-1").url == "ws://node-1:8080"
    moved = ring.with_member(Member("node-1", url="ws://elsewhere:8080", slot=1))
    assert moved.member("node-1").url == "ws://elsewhere:8080"
    assert owner_ids(moved, KEYS[:500]) == owner_ids(ring, KEYS[:500])
    with pytest.raises(KeyError, match="node-7"):
        ring.member("node-7")
    with pytest.raises(KeyError, match="node-7"):
        ring.without("node-7")


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf])
def test_a_member_needs_a_positive_finite_weight(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Member("node-0", weight=weight)


def test_duplicate_node_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        HashRing([Member("node-0"), Member("node-0", slot=1)])


# --- building from the ring-membership topic ---------------------------------------------------


def test_the_fold_keeps_only_live_up_nodes() -> None:
    fold = RingMembership()
    fold.apply("node-a", up(url="ws://a:8080", slot=0, ts=100.0, weight=2.0))
    fold.apply("node-b", up(slot=1, ts=100.0, state="leaving"))
    fold.apply("node-c", up(slot=2, ts=100.0, state="down"))
    fold.apply("node-d", up(slot=3, ts=89.9))  # heartbeat older than the timeout
    fold.apply("node-e", up(slot=4, ts=90.0))  # exactly at the boundary: still live
    ring = fold.ring(now=100.0, heartbeat_timeout=10.0)
    assert [m.node_id for m in ring.members] == ["node-a", "node-e"]
    assert ring.member("node-a") == Member("node-a", weight=2.0, url="ws://a:8080", slot=0)
    assert set(fold.records) == {"node-a", "node-b", "node-c", "node-d", "node-e"}
    assert fold.records["node-b"].state == "leaving"


def test_a_tombstone_removes_and_the_last_write_wins() -> None:
    fold = RingMembership()
    fold.apply("node-a", up(slot=0))
    fold.apply("node-b", up(slot=1))
    fold.apply("node-b", up(slot=1, state="down"))
    fold.apply("node-c", up(slot=2, state="down"))
    fold.apply("node-c", up(url="ws://c2:8080", slot=5))
    fold.apply("node-a", None)
    fold.apply("node-z", None)  # a tombstone for a node never seen changes nothing
    ring = fold.ring(now=100.0, heartbeat_timeout=5.0)
    assert ring.members == (Member("node-c", url="ws://c2:8080", slot=5),)
    assert ring.owner("client-1").slot == 5


record_st = st.one_of(
    st.none(),
    st.builds(
        up,
        slot=st.integers(0, 3),
        ts=st.floats(80.0, 100.0),
        state=st.sampled_from(["up", "leaving", "down"]),
    ),
)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(st.sampled_from("abcde"), record_st), max_size=25))
def test_the_same_record_sequence_gives_the_same_ring(
    records: list[tuple[str, dict[str, Any] | None]],
) -> None:
    folds = [RingMembership(), RingMembership()]
    for node_id, value in records:
        for fold in folds:
            fold.apply(node_id, value)
    first, second = (fold.ring(now=100.0, heartbeat_timeout=10.0) for fold in folds)
    assert first == second
    latest = dict(records)
    live = {
        node_id
        for node_id, value in latest.items()
        if value is not None and value["state"] == "up" and value["heartbeat_ts"] >= 90.0
    }
    assert {m.node_id for m in first.members} == live


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "ws://a:8080", "slot": 0, "heartbeat_ts": 100.0},
        up(state="gone"),
        up(weight=0),
        up(weight="2"),
        up(slot=-1),
        up(slot=True),
        up(ts=math.nan),
        {**up(), "url": None},
        up(node_id="node-b"),
    ],
)
def test_an_invalid_record_is_refused_and_the_previous_one_kept(bad: dict[str, Any]) -> None:
    fold = RingMembership()
    fold.apply("node-a", up(slot=3))
    with pytest.raises(InvalidMembershipRecord):
        fold.apply("node-a", bad)
    assert fold.ring(now=100.0, heartbeat_timeout=10.0).member("node-a").slot == 3


def test_a_fold_with_no_live_node_gives_an_empty_ring() -> None:
    fold = RingMembership()
    fold.apply("node-a", up(ts=10.0))
    with pytest.raises(EmptyRingError):
        fold.ring(now=100.0, heartbeat_timeout=10.0).owner("client-1")


def test_a_slot_without_a_partition_is_refused_and_the_ring_keeps_routing() -> None:
    fold = RingMembership(slots=2)
    fold.apply("node-a", up(slot=1))
    with pytest.raises(InvalidMembershipRecord, match="no partition"):
        fold.apply("node-a", up(slot=2))
    with pytest.raises(InvalidMembershipRecord, match="no partition"):
        fold.apply("node-x", up(slot=100_000))
    ring = fold.ring(now=100.0, heartbeat_timeout=10.0)
    assert [m.node_id for m in ring.members] == ["node-a"]
    assert ring.owner("client-1").slot == 1


def test_a_heartbeat_from_the_future_is_refused() -> None:
    fold = RingMembership(max_clock_skew_s=300.0)
    fold.apply("node-a", up(ts=399.0), now=100.0)  # within the skew allowed
    with pytest.raises(InvalidMembershipRecord, match="in the future"):
        fold.apply("node-b", up(ts=1e12), now=100.0)  # would stay "live" for ages
    assert set(fold.records) == {"node-a"}
