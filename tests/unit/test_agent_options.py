"""An agent's options: one :class:`AgentOptions`, or its fields as ``Agent``'s keyword arguments
(as ``foresight agent`` and the replay pass them), the keywords winning."""

from __future__ import annotations

import dataclasses

import pytest

from agents.options import AgentOptions, AgentOverrides
from agents.sdk import Agent

URL = "http://127.0.0.1:1"


def test_every_option_is_a_keyword_of_agent() -> None:
    fields = {f.name for f in dataclasses.fields(AgentOptions)}
    assert set(AgentOverrides.__annotations__) == fields


def test_keywords_and_an_options_object_make_the_same_agent() -> None:
    def on_push(*_: object) -> None: ...

    chosen = {"nodes": [URL + "2"], "cache_bytes": 10, "private": True, "on_push": on_push}
    by_keywords = Agent("client-1", "t", URL, nodes=[URL + "2"], cache_bytes=10, private=True,
                        on_push=on_push)  # fmt: skip
    by_options = Agent("client-1", "t", URL, AgentOptions(**chosen))  # type: ignore[arg-type]
    assert by_keywords.options == by_options.options
    assert by_options.cache.max_bytes == 10
    assert by_options.options.private


def test_a_keyword_overrides_the_options_object() -> None:
    agent = Agent("client-1", "t", URL, AgentOptions(private=True, cache_bytes=5), private=False)
    assert (agent.options.private, agent.options.cache_bytes) == (False, 5)


def test_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(TypeError):
        Agent("client-1", "t", URL, retries=3)  # type: ignore[call-arg]
