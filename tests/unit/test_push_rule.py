"""The push rule: a prefetch's odds must pay for its bytes; None switches the rule off."""

from __future__ import annotations

import doctest

import pytest

import foresight.push_rule
from foresight.push_rule import worth_its_bytes


@pytest.mark.parametrize(
    ("probability", "size", "worth"),
    [
        (0.25, 100, True),  # odds 1/3 == 100 / 300: the boundary passes
        (0.2499, 100, False),  # just under it
        (0.5, 300, True),  # odds 1 == 300 / 300
        (0.5, 301, False),
        (0.0, 1, False),  # an item that will not be used costs its bytes
        (0.0, 0, True),  # an empty body costs nothing
        (1.0, 10**9, True),  # a certain request is worth any size
    ],
)
def test_an_item_is_pushed_when_its_odds_pay_for_its_bytes(
    probability: float, size: int, worth: bool
) -> None:
    assert worth_its_bytes(probability, size, 300.0) is worth


def test_the_same_probability_pushes_a_small_item_and_not_a_large_one() -> None:
    assert worth_its_bytes(0.1, 20_000, 400_000.0)  # needs p >= 0.048
    assert not worth_its_bytes(0.1, 200_000, 400_000.0)  # needs p >= 0.33


def test_a_larger_k_pushes_more() -> None:
    assert not worth_its_bytes(0.1, 100_000, 400_000.0)
    assert worth_its_bytes(0.1, 100_000, 900_000.0)


def test_none_means_no_rule() -> None:
    assert worth_its_bytes(0.0, 10**9, None)


def test_the_examples_run() -> None:
    assert doctest.testmod(foresight.push_rule).failed == 0
