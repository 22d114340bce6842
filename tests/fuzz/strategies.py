"""Hostile payloads for every boundary, generated with hypothesis.

Each record strategy yields plain dicts that pass the schema; :func:`mutated` breaks one to
three of their fields (a missing field, a wrong type, an unknown field, a value out of range,
a malformed identifier, another schema version), and :func:`hostile_bytes` turns a record
strategy into raw bytes of every kind a boundary may meet: valid records, broken ones, any
JSON, binary garbage, truncated or padded JSON, other encodings and deep nesting.

:func:`generate` draws a fixed number of payloads in batches (derandomized, so every run sends
the same ones): a boundary is then exercised with all of them in one go, and each test counts
the outcomes instead of stopping at the first, so its figure covers every payload.

Drawing a whole record with hypothesis costs about 0.5 ms, and a boundary needs 10,000 of
them: :func:`pooled` draws a few hundred records (and JSON values) once, and each payload then
picks one and breaks it with a few cheap draws, so 10,000 distinct payloads take seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import string
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from unittest import mock

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

T = TypeVar("T")

# Each hypothesis example draws a list of this many payloads: generating them one example at
# a time costs about five times as long (measured: 500 vs 2,000 payloads per second).
BATCH = 20

_FIRST = string.ascii_letters + string.digits
_REST = _FIRST + "._:@/+=-"

identifiers: SearchStrategy[str] = st.builds(
    lambda first, rest: first + rest, st.sampled_from(_FIRST), st.text(_REST, max_size=24)
)
bad_identifiers = st.one_of(
    st.sampled_from(["", "-leading-dash", "with space", "tab\there", "nul\x00", "a" * 257]),
    st.text(min_size=1, max_size=12).filter(lambda s: not s[:1].isalnum() or not s.isascii()),
)
timestamps = st.floats(min_value=0, max_value=32503680000, allow_nan=False)
# Numbers no schema accepts: negative, not finite, past 64 bits, or merely of another type.
bad_numbers = st.sampled_from(
    [-1, -1e-9, 2**63, 2**64 + 1, -(2**70), 1e309, -1e309, math.nan, 32503680001, "1", True, None]
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(),  # NaN and infinities as well: json.dumps writes them as bare NaN / Infinity
    st.text(max_size=30),
)
json_values: SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
POOL = 400
# Keyed by id(), holding the strategy itself so that its id is never reused by another.
_pools: dict[int, tuple[SearchStrategy[Any], SearchStrategy[Any]]] = {}


def pooled(strategy: SearchStrategy[T], size: int = POOL) -> SearchStrategy[T]:
    """Pick from ``size`` examples of ``strategy`` drawn once (per strategy object)."""
    if id(strategy) not in _pools:
        _pools[id(strategy)] = (strategy, st.sampled_from(generate(strategy, size)))
    return _pools[id(strategy)][1]


def any_json() -> SearchStrategy[Any]:
    return pooled(json_values)


def dumps(value: Any) -> bytes:
    """JSON the way a careless producer writes it: NaN allowed, lone surrogates kept raw."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def deep(depth: int, leaf: str = "0", kind: str = "array") -> str:
    """``depth`` nested arrays (or objects) around ``leaf``."""
    if kind == "array":
        return "[" * depth + leaf + "]" * depth
    return '{"k":' * depth + leaf + "}" * depth


@st.composite
def deep_nesting(draw: st.DrawFn, around: dict[str, Any] | None = None) -> bytes:
    """Arrays or objects nested up to 5,000 deep, bare or as an unknown field of a record."""
    depth = draw(st.integers(min_value=1, max_value=5000))
    nested = deep(depth, kind=draw(st.sampled_from(["array", "object"])))
    if around is None or draw(st.booleans()):
        return nested.encode()
    record = dumps(around)[:-1]
    separator = b"," if len(record) > 1 else b""
    return record + separator + b'"nested":' + nested.encode() + b"}"


MUTATIONS = ["drop", "retype", "unknown", "number", "identifier", "version"]


@st.composite
def mutated(draw: st.DrawFn, valid: SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid record with one to three of its fields broken."""
    record = dict(draw(valid))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        keys = sorted(record)
        key = draw(st.sampled_from(keys)) if keys else "x"
        how = draw(st.sampled_from(MUTATIONS))
        if how == "drop":
            record.pop(key, None)
        elif how == "retype":
            record[key] = draw(any_json())
        elif how == "unknown":
            record[draw(st.text(min_size=1, max_size=10))] = draw(any_json())
        elif how == "number":
            record[key] = draw(bad_numbers)
        elif how == "identifier":
            record[key] = draw(bad_identifiers)
        else:
            record["schema_version"] = draw(st.sampled_from([0, 2, -1, "1", None, 1.5]))
    return record


@st.composite
def hostile_bytes(draw: st.DrawFn, valid: SearchStrategy[dict[str, Any]]) -> bytes:
    """Raw bytes for a boundary that expects one JSON record of ``valid``'s shape."""
    valid = pooled(valid)
    kind = draw(
        st.sampled_from(
            ["valid"] * 2
            + ["mutated"] * 4
            + ["json", "binary", "truncated", "padded", "encoding", "bad-utf8", "deep", "empty"]
        )
    )
    if kind == "valid":
        return dumps(draw(valid))
    if kind == "mutated":
        return dumps(draw(mutated(valid)))
    if kind == "json":
        return dumps(draw(any_json()))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        whole = dumps(draw(valid))
        return whole[: draw(st.integers(min_value=0, max_value=len(whole) - 1))]
    if kind == "padded":
        whole = dumps(draw(valid))
        return draw(st.binary(max_size=8)) + whole + draw(st.binary(min_size=1, max_size=8))
    if kind == "encoding":
        text = dumps(draw(valid)).decode("utf-8", "surrogatepass")
        codec = draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "latin-1"]))
        return text.encode(codec, "replace")
    if kind == "bad-utf8":  # a byte that is not UTF-8 inside one of the record's strings
        whole = dumps(draw(valid))
        quotes = [i for i, byte in enumerate(whole) if byte == ord('"')]
        at = draw(st.sampled_from(quotes)) + 1 if quotes else 0
        return whole[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + whole[at:]
    if kind == "deep":
        return draw(deep_nesting(draw(valid)))
    return draw(st.sampled_from([b"", b" ", b"\n", b"null", b"{}", b"[]", b"\x00", b"\xff\xfe"]))


keys = st.one_of(st.none(), st.binary(max_size=40), identifiers.map(str.encode))


# --- Records of every topic, valid by construction --------------------------------------------

contexts = st.fixed_dictionaries(
    {},
    optional={
        "device": st.text(max_size=64),
        "connection": st.sampled_from(["4g", "3g", "2g", "slow-2g"]),
        "save_data": st.booleans(),
        "hour": st.integers(min_value=0, max_value=23),
        "location_consent": st.booleans(),
        "location": st.fixed_dictionaries(
            {
                "lat": st.floats(min_value=-90, max_value=90),
                "lon": st.floats(min_value=-180, max_value=180),
            }
        ),
    },
)


def interactions(
    clients: SearchStrategy[str] = identifiers, contents: SearchStrategy[str] = identifiers
) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "event_id": identifiers,
            "client_id": clients,
            "content_id": contents,
            "kind": st.sampled_from(["view", "click", "purchase", "request"]),
            "ts": timestamps,
        },
        optional={"schema_version": st.just(1), "context": contexts | st.none()},
    )


def feedback(
    clients: SearchStrategy[str] = identifiers, contents: SearchStrategy[str] = identifiers
) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "client_id": clients,
            "content_id": contents,
            "version": st.integers(min_value=0, max_value=2**63 - 1),
            "outcome": st.sampled_from(["hit", "miss", "unused", "expired"]),
            "latency_ms": st.floats(min_value=0, allow_infinity=False),
            "ts": timestamps,
        },
        optional={"schema_version": st.just(1)},
    )


@st.composite
def prefetch_commands(
    draw: st.DrawFn,
    clients: SearchStrategy[str] = identifiers,
    contents: SearchStrategy[str] = identifiers,
) -> dict[str, Any]:
    issued = draw(timestamps)
    command = {
        "command_id": draw(identifiers),
        "client_id": draw(clients),
        "content_id": draw(contents),
        "probability": draw(st.floats(min_value=0, max_value=1)),
        "rank": draw(st.integers(min_value=1, max_value=1000)),
        "model": draw(st.text(min_size=1, max_size=64)),
        "issued_at": issued,
        "expires_at": draw(st.floats(min_value=issued, max_value=32503680000)),
    }
    if draw(st.booleans()):
        command["event_ts"] = draw(timestamps | st.none())
    return command


def content_updates(
    contents: SearchStrategy[str] = identifiers,
) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "content_id": contents,
            "version": st.integers(min_value=0, max_value=2**63 - 1),
            "ts": timestamps,
        },
        optional={"etag": st.text(max_size=256) | st.none(), "schema_version": st.just(1)},
    )


member_states = st.sampled_from(["up", "leaving", "down"])


def ring_members(
    states: SearchStrategy[str] = member_states, heartbeats: SearchStrategy[float] = timestamps
) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "node_id": identifiers,
            "url": st.builds(lambda rest: "http://" + rest, st.text(max_size=40)),
            "weight": st.floats(min_value=0.001, max_value=1000),
            "slot": st.integers(min_value=0, max_value=100_000),
            "state": states,
            "heartbeat_ts": heartbeats,
        },
        optional={"schema_version": st.just(1)},
    )


# --- Drawing many payloads at once -------------------------------------------------------------


@contextlib.contextmanager
def only_our_constants() -> Iterator[None]:
    """Keep Hypothesis from mixing the literals of the local modules imported so far into its
    draws: those depend on which tests were collected (``make test`` imports every unit
    test's modules, ``pytest tests/fuzz`` fewer) and on code others are editing, so the same
    seed would not give the same payloads. Ours are in the strategies above. (Hypothesis
    internals, pinned at 6.170.17: without them, generation simply stays as it is.)"""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # pragma: no cover
        yield
        return
    if not hasattr(providers, "_get_local_constants"):  # pragma: no cover
        yield
        return
    cache = providers.CONSTANTS_CACHE.cache
    cache.clear()
    with mock.patch.object(providers, "_get_local_constants", Constants):
        try:
            yield
        finally:
            cache.clear()


def generate(strategy: SearchStrategy[T], count: int, batch: int = BATCH) -> list[T]:
    """Exactly ``count`` payloads of ``strategy``, the same ones on every run."""
    drawn: list[T] = []

    # 10 % more examples than needed: hypothesis may discard an example that overran its
    # buffer (a batch of large payloads), and the batches are cut to size afterwards.
    @settings(
        max_examples=math.ceil(count / batch * 1.1) + 1,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=batch, max_size=batch))
    def collect(payloads: list[T]) -> None:
        drawn.extend(payloads)

    with only_our_constants():
        collect()
    if len(drawn) < count:
        raise AssertionError(f"hypothesis drew {len(drawn)} payloads, {count} were asked for")
    return drawn[:count]


def shortest(samples: list[T], key: Callable[[T], int], n: int = 3) -> list[T]:
    """The ``n`` smallest offending inputs, for a failure message a person can read."""
    return sorted(samples, key=key)[:n]
