"""How an agent is set up, apart from who it is: :class:`AgentOptions`.

``Agent(client_id, token, url, options)`` takes one; the same fields are also accepted as
keyword arguments (``Agent(..., nodes=urls, private=True)``), which override the options'.

>>> options = AgentOptions(nodes=["http://10.0.0.2:8710"], private=True)
>>> options.private, options.reconnect_max_s
(True, 30.0)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import aiohttp

from schemas.protocol import Push

#: How long connect() keeps trying the nodes it knows before it gives up.
CONNECT_RETRY_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """Everything about an agent but its client id, token and first node."""

    #: Other nodes to try when the first is gone (as Kafka's bootstrap servers: any live node
    #: redirects to the client's owner).
    nodes: Sequence[str] = ()
    #: Bytes of content bodies the local cache holds.
    cache_bytes: int = 64 * 1024 * 1024
    #: A session to share (the caller closes it); None: the agent makes and closes its own.
    session: aiohttp.ClientSession | None = None
    #: Reconnect backoff: the first wait and the ceiling (doubled per failure, jittered).
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    #: How long connect() keeps trying (0: one round over the nodes).
    connect_retry_s: float = CONNECT_RETRY_S
    clock: Callable[[], float] = time.time
    #: The backoff's jitter; None: a fresh ``random.Random()`` per agent.
    rng: random.Random | None = None
    #: Global Privacy Control: nothing this agent asks for is recorded.
    private: bool = False
    #: A pushed item unused this long is dropped and reported expired (None keeps it).
    unused_ttl_s: float | None = 600.0
    #: Called with every push received and the agent's clock at its arrival.
    on_push: Callable[[Push, float], None] | None = None


class AgentOverrides(TypedDict, total=False):
    """:class:`AgentOptions`' fields as keyword arguments of ``Agent`` (tests check they match)."""

    nodes: Sequence[str]
    cache_bytes: int
    session: aiohttp.ClientSession | None
    reconnect_min_s: float
    reconnect_max_s: float
    connect_retry_s: float
    clock: Callable[[], float]
    rng: random.Random | None
    private: bool
    unused_ttl_s: float | None
    on_push: Callable[[Push, float], None] | None
