"""SIGTERM acts as Ctrl+C while a command's children run, and a second signal hurries the stop.

(tests/integration/test_sigterm.py sends SIGTERM to real commands; these check the pieces.)
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from foresight.stack import Child, Stack, sigterm_as_ctrl_c


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored, as in a background job of a non-interactive shell."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigterm_raises_keyboard_interrupt_inside_the_block_only() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_stops_the_command_even_where_ctrl_c_is_ignored(sigint_ignored: None) -> None:
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        signal.raise_signal(signal.SIGTERM)


@pytest.fixture
def sigterm_fails() -> Iterator[None]:
    """SIGTERM outside a Stack fails the test (its default would end the test run)."""

    def not_caught(signum: int, frame: object) -> None:
        pytest.fail("SIGTERM was not turned into Ctrl+C")

    previous = signal.signal(signal.SIGTERM, not_caught)
    yield
    assert signal.getsignal(signal.SIGTERM) is not_caught, "the handler was not put back"
    signal.signal(signal.SIGTERM, previous)


def test_an_open_stack_turns_sigterm_into_an_interrupt_and_stops_its_children(
    sigterm_fails: None,
) -> None:
    children = [_Child("origin"), _Child("worker")]
    with pytest.raises(KeyboardInterrupt), Stack() as stack:
        for child in children:
            stack.start(child, wait=False)
        signal.raise_signal(signal.SIGTERM)
    assert [c.ended for c in children] == ["stopped", "stopped"]


def test_a_second_interrupt_while_stopping_kills_the_rest_at_once() -> None:
    children = [_Child("origin"), _Child("worker"), _Child("node", slow=True)]
    stack = Stack()
    for child in children:
        stack.start(child, wait=False)
    with pytest.raises(KeyboardInterrupt):
        stack.stop_all()  # newest first: the node's grace is cut short by the interrupt
    assert [c.ended for c in children] == ["killed", "killed", "killed"]
    assert stack.children == {}


class _Child(Child):
    """A child that records how it ended; a slow one is interrupted while it is stopped."""

    def __init__(self, name: str, *, slow: bool = False) -> None:
        super().__init__(name, [], "", Path("unused.log"), {})
        self.slow = slow
        self.ended = ""

    def start(self) -> None:
        pass

    def stop(self, grace: float = 0.0) -> int | None:
        if self.slow:
            raise KeyboardInterrupt  # what a second Ctrl+C or SIGTERM does during its wait
        self.ended = "stopped"
        return 0

    def kill(self) -> None:
        self.ended = "killed"
