"""The agent's local cache: bounded in bytes, least recently used out, digests checked."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agents.cache
from agents.cache import DropReason, Entry, HeldVersion, LocalCache
from schemas.protocol import digest


def body(content_id: str, version: int, size: int) -> bytes:
    return (f"{content_id}:{version}:".encode() * size)[:size]


class Recorder:
    """Collects on_drop calls."""

    def __init__(self) -> None:
        self.drops: list[tuple[str, int, DropReason, bool]] = []
        self.entries: list[Entry] = []

    def __call__(self, entry: Entry, reason: DropReason) -> None:
        self.drops.append((entry.content_id, entry.version, reason, entry.used))
        self.entries.append(entry)


def put(cache: LocalCache, content_id: str, version: int = 1, size: int = 10, **kw: object) -> bool:
    data = body(content_id, version, size)
    return cache.put(content_id, version, digest(data), "text/plain", data, pushed_at=0.0, **kw)  # type: ignore[arg-type]


def ids(cache: LocalCache) -> list[str]:
    """Held content ids, least recently used first."""
    return [h.content_id for h in reversed(cache.holdings())]


def test_the_examples_in_the_module_docstring_hold() -> None:
    assert doctest.testmod(agents.cache).failed == 0


def test_the_least_recently_used_goes_first() -> None:
    drops = Recorder()
    cache = LocalCache(30, on_drop=drops)
    for content_id in "abc":
        assert put(cache, content_id)
    assert cache.get("a") is not None
    assert put(cache, "d")
    assert ids(cache) == ["c", "a", "d"]
    assert drops.drops == [("b", 1, "evicted", False)]
    assert cache.size_bytes == 30


def test_a_large_item_evicts_as_many_as_it_needs() -> None:
    drops = Recorder()
    cache = LocalCache(30, on_drop=drops)
    for content_id in "abc":
        put(cache, content_id)
    assert put(cache, "big", size=25)
    assert ids(cache) == ["big"]
    assert [d[0] for d in drops.drops] == ["a", "b", "c"]
    assert cache.size_bytes == 25


def test_peek_neither_counts_nor_refreshes() -> None:
    cache = LocalCache(20)
    put(cache, "a")
    put(cache, "b")
    entry = cache.peek("a")
    assert entry is not None
    assert not entry.used
    put(cache, "c")
    assert "a" not in cache


def test_get_counts_hits_and_misses_return_none() -> None:
    cache = LocalCache(100)
    put(cache, "a")
    first = cache.get("a")
    assert first is not None
    assert (first.hits, first.used) == (1, True)
    second = cache.get("a")
    assert second is not None
    assert second.hits == 2
    assert cache.get("nope") is None


def test_a_body_that_does_not_match_its_digest_is_refused() -> None:
    cache = LocalCache(100)
    put(cache, "a", version=1)
    good = body("a", 2, 10)
    assert not cache.put("a", 2, digest(good), "text/plain", good[:-1] + b"!", pushed_at=0.0)
    assert not cache.put("b", 1, digest(good).upper(), "text/plain", good, pushed_at=0.0)
    assert cache.holdings() == [HeldVersion("a", 1, digest(body("a", 1, 10)))]
    assert cache.size_bytes == 10


def test_an_item_larger_than_the_cache_is_refused() -> None:
    cache = LocalCache(10)
    put(cache, "a", size=4)
    assert not put(cache, "b", size=11)
    assert ids(cache) == ["a"]
    assert put(cache, "c", size=10)
    assert ids(cache) == ["c"]


def test_a_newer_version_replaces_the_held_one() -> None:
    drops = Recorder()
    cache = LocalCache(100, on_drop=drops)
    put(cache, "a", version=1, size=10)
    assert put(cache, "a", version=2, size=30)
    held = cache.peek("a")
    assert held is not None
    assert (held.version, held.size, len(cache), cache.size_bytes) == (2, 30, 1, 30)
    assert drops.drops == [("a", 1, "replaced", False)]


def test_an_older_version_is_refused() -> None:
    cache = LocalCache(100)
    put(cache, "a", version=5)
    assert not put(cache, "a", version=4)
    held = cache.peek("a")
    assert held is not None
    assert held.version == 5


def test_the_same_version_again_only_refreshes_it() -> None:
    drops = Recorder()
    cache = LocalCache(20, on_drop=drops)
    put(cache, "a")
    entry = cache.get("a")
    put(cache, "b")
    assert put(cache, "a")
    assert cache.peek("a") is entry
    assert entry is not None
    assert entry.hits == 1
    put(cache, "c")
    assert ids(cache) == ["a", "c"]
    assert drops.drops == [("b", 1, "evicted", False)]


def test_a_newer_version_too_big_to_keep_still_drops_the_outdated_one() -> None:
    drops = Recorder()
    cache = LocalCache(20, on_drop=drops)
    put(cache, "a", version=1)
    assert not put(cache, "a", version=2, size=21)
    assert "a" not in cache
    assert drops.drops == [("a", 1, "replaced", False)]


def test_holdings_list_the_most_recently_used_first() -> None:
    cache = LocalCache(100)
    for version, content_id in enumerate("abc"):
        put(cache, content_id, version=version)
    cache.get("a")
    assert cache.holdings() == [
        HeldVersion("a", 0, digest(body("a", 0, 10))),
        HeldVersion("c", 2, digest(body("c", 2, 10))),
        HeldVersion("b", 1, digest(body("b", 1, 10))),
    ]


@pytest.mark.parametrize(("version", "dropped"), [(None, True), (3, True), (4, True), (2, False)])
def test_invalidate_drops_the_held_version_or_older(version: int | None, dropped: bool) -> None:
    drops = Recorder()
    cache = LocalCache(100, on_drop=drops)
    put(cache, "a", version=3)
    assert cache.invalidate("a", version) is dropped
    assert ("a" not in cache) is dropped
    assert drops.drops == ([("a", 3, "invalidated", False)] if dropped else [])
    assert cache.size_bytes == (0 if dropped else 10)
    assert not cache.invalidate("never-held")


def test_unused_prefetches_expire_once() -> None:
    cache = LocalCache(100)
    data = body("x", 1, 5)
    for content_id, pushed_at, prefetched in [
        ("old", 0.0, True),
        ("old-used", 0.0, True),
        ("old-fetched", 0.0, False),
        ("fresh", 50.0, True),
    ]:
        cache.put(
            content_id, 1, digest(data), "t/t", data, pushed_at=pushed_at, prefetched=prefetched
        )
    cache.get("old-used")
    expired = cache.unused_expired(now=60.0, ttl_s=60.0)
    assert [e.content_id for e in expired] == ["old"]
    assert "old" not in cache
    assert cache.size_bytes == 15
    assert cache.unused_expired(now=60.0, ttl_s=60.0) == []
    assert [e.content_id for e in cache.unused_expired(now=110.0, ttl_s=60.0)] == ["fresh"]


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        LocalCache(0)


def test_an_entry_repr_leaves_the_body_out() -> None:
    cache = LocalCache(10_000)
    put(cache, "a", size=5000)
    assert len(repr(cache.peek("a"))) < 300


# --- model-based: the cache against a plain list, over random operation sequences -----------

MAX_BYTES = 64
keys = st.sampled_from("abcdef")
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 3), st.integers(0, 70), st.booleans()),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("invalidate"), keys, st.none() | st.integers(0, 3)),
        st.tuples(st.just("expire"), st.integers(0, 40)),
    ),
    max_size=60,
)


@dataclass
class Model:
    content_id: str
    version: int
    size: int
    hits: int
    pushed_at: float


@given(ops)
def test_the_cache_behaves_like_a_simple_model(operations: list[tuple[object, ...]]) -> None:
    drops = Recorder()
    cache = LocalCache(MAX_BYTES, on_drop=drops)
    model: list[Model] = []  # least recently used first
    reported: list[Entry] = []
    for clock, op in enumerate(operations):
        position = {m.content_id: i for i, m in enumerate(model)}
        if op[0] == "put":
            _, content_id, version, size, corrupt = op
            assert isinstance(content_id, str) and isinstance(version, int)
            assert isinstance(size, int)
            data = body(content_id, version, size)
            sent_digest = digest(data + b"?") if corrupt else digest(data)
            accepted = cache.put(content_id, version, sent_digest, "t/t", data, pushed_at=clock)
            held = model[position[content_id]] if content_id in position else None
            if corrupt or (held is not None and version < held.version):
                expected = False
            elif held is not None and (version, size) == (held.version, held.size):
                model.append(model.pop(position[content_id]))
                expected = True
            else:
                if held is not None:
                    model.remove(held)
                expected = size <= MAX_BYTES
                if expected:
                    while sum(m.size for m in model) + size > MAX_BYTES:
                        model.pop(0)
                    model.append(Model(content_id, version, size, 0, clock))
            assert accepted is expected
        elif op[0] == "get":
            content_id = str(op[1])
            entry = cache.get(content_id)
            assert (entry is not None) is (content_id in position)
            if content_id in position:
                held = model.pop(position[content_id])
                held.hits += 1
                model.append(held)
                assert entry is not None and entry.hits == held.hits
        elif op[0] == "invalidate":
            content_id, version = str(op[1]), op[2]
            assert version is None or isinstance(version, int)
            expected = content_id in position and (
                version is None or model[position[content_id]].version <= version
            )
            assert cache.invalidate(content_id, version) is expected
            if expected:
                model.pop(position[content_id])
        else:
            ttl = op[1]
            assert isinstance(ttl, int)
            expired = cache.unused_expired(now=clock, ttl_s=ttl)
            gone = [m for m in model if m.hits == 0 and m.pushed_at + ttl <= clock]
            assert [e.content_id for e in expired] == [m.content_id for m in gone]
            model = [m for m in model if m not in gone]
            reported += expired

        assert cache.size_bytes == sum(m.size for m in model) <= MAX_BYTES
        assert [(h.content_id, h.version) for h in reversed(cache.holdings())] == [
            (m.content_id, m.version) for m in model
        ]
        assert len(cache) == len(model)

    # Every entry that left was reported exactly once, and none of them is still held.
    reported += drops.entries
    assert len({id(e) for e in reported}) == len(reported)
    for entry in reported:
        assert cache.peek(entry.content_id) is not entry
