"""Hostile WebSocket frames: what an agent may send first, and after its welcome.

Built like the records in :mod:`tests.fuzz.strategies`: message shapes valid by construction,
pooled, then broken, sent as binary, nested deep or in the wrong direction.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from schemas.protocol import PROTOCOL_VERSION

from .strategies import (
    any_json,
    bad_numbers,
    deep_nesting,
    dumps,
    generate,
    identifiers,
    mutated,
    pooled,
    timestamps,
)

# --- Messages an agent may send ------------------------------------------------------------------

holdings = st.fixed_dictionaries(
    {
        "content_id": identifiers,
        "version": st.integers(min_value=0, max_value=2**40),
        "digest": st.text("0123456789abcdef", min_size=64, max_size=64),
    }
)


def hellos(client: SearchStrategy[str]) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("hello"), "client_id": client, "agent": st.just("fuzz/1")},
        optional={
            "protocol_version": st.just(PROTOCOL_VERSION),
            "holdings": st.lists(holdings, max_size=3),
            "cache_max_bytes": st.integers(min_value=0, max_value=2**40) | st.none(),
            "resume": st.fixed_dictionaries(
                {}, optional={"node_id": identifiers, "redirected": st.booleans()}
            ),
        },
    )


agent_messages = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("feedback"),
            "content_id": identifiers,
            "version": st.integers(min_value=0, max_value=2**40),
            "outcome": st.sampled_from(["hit", "miss", "unused", "expired"]),
            "latency_ms": st.floats(min_value=0, max_value=86_400_000),
            "ts": timestamps,
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("view"),
            "content_id": identifiers,
            "version": st.integers(min_value=0, max_value=2**40),
            "ts": timestamps,
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "pong"]), "ts": timestamps}),
    st.fixed_dictionaries(
        {
            "type": st.just("error"),
            "code": st.integers(min_value=1000, max_value=4999),
            "reason": st.text(min_size=1, max_size=100),
        }
    ),
)
# What only a node may send: from an agent, each is a message in the wrong direction.
node_messages = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("welcome"),
            "node_id": identifiers,
            "client_id": identifiers,
            "server_time": timestamps,
            "heartbeat_s": st.just(25.0),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("redirect"),
            "url": st.just("ws://127.0.0.1:1/v1/agents/ws"),
            "node_id": identifiers,
            "reason": st.just("fuzz"),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("invalidate"), "content_id": identifiers, "version": st.none()}
    ),
)


# --- WebSocket frames ----------------------------------------------------------------------------

Frame = tuple[bool, str | bytes]  # (text frame?, data)


any_hello = hellos(identifiers)


@st.composite
def agent_frames(draw: st.DrawFn) -> Frame:
    """One frame an agent might send after its hello: valid or broken in any way."""
    messages = pooled(agent_messages)
    kind = draw(
        st.sampled_from(
            ["valid"] * 3
            + ["mutated"] * 3
            + ["wrong-direction", "hello", "json", "text", "binary", "binary-json"]
            + ["version", "deep", "empty"]
        )
    )
    if kind == "valid":
        raw = dumps(draw(messages))
    elif kind == "mutated":
        raw = dumps(draw(mutated(messages)))
    elif kind == "wrong-direction":
        raw = dumps(draw(pooled(node_messages)))
    elif kind == "hello":
        raw = dumps(draw(pooled(any_hello)))
    elif kind == "json":
        raw = dumps(draw(any_json()))
    elif kind == "text":
        return True, draw(st.text(max_size=200))
    elif kind == "binary":
        return False, draw(st.binary(max_size=300))
    elif kind == "binary-json":
        return False, dumps(draw(messages))
    elif kind == "version":
        raw = dumps({**draw(messages), "protocol_version": draw(bad_numbers | st.integers())})
    elif kind == "deep":
        raw = draw(deep_nesting(draw(messages)))
    else:
        raw = b""
    return True, raw.decode("utf-8", "replace")


@st.composite
def first_frames(draw: st.DrawFn, client: str) -> Frame:
    """The frame that should be a hello for ``client``: valid, for another client, or not one."""
    kind = draw(
        st.sampled_from(
            ["hello"] * 2 + ["other-client"] * 2 + ["mutated"] * 3 + ["binary-hello", "frame"]
        )
    )
    hellos_ = pooled(any_hello)
    if kind == "hello":
        return True, dumps(draw(hellos_) | {"client_id": client}).decode()
    if kind == "other-client":
        hello = draw(hellos_)
        other = hello["client_id"] if hello["client_id"] != client else client + "-other"
        return True, dumps(hello | {"client_id": other}).decode()
    if kind == "mutated":
        hello = draw(mutated(hellos_.map(lambda h: h | {"client_id": client})))
        return True, dumps(hello).decode("utf-8", "replace")
    if kind == "binary-hello":
        return False, dumps(draw(hellos_) | {"client_id": client})
    return draw(agent_frames())


# The WebSocket boundary's 10,000 payloads: first frames of as many connections, and frames
# sent after a welcome (ten per connection).
HELLOS = 3_000
FRAMES = 7_000
TOKEN_KINDS = ["valid"] * 6 + ["missing", "garbage", "forged", "expired", "other-client"]
HelloAttempt = tuple[str, str, Frame]  # (how the token is made, client, first frame)


@st.composite
def hello_attempts(draw: st.DrawFn) -> HelloAttempt:
    """A connection's token (what kind, made when sent) and its first frame."""
    client = draw(identifiers.filter(lambda c: not c.startswith("fz-good")))
    return draw(st.sampled_from(TOKEN_KINDS)), client, draw(first_frames(client))


@functools.cache
def hello_batch(count: int) -> list[HelloAttempt]:
    return generate(hello_attempts(), count)


@functools.cache
def frame_batch(count: int) -> list[Frame]:
    return generate(agent_frames(), count)
