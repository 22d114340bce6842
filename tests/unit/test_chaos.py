"""The replay's fault list: what --chaos accepts and refuses."""

from __future__ import annotations

import pytest

from foresight.replay.chaos import FAULTS, parse_faults


def test_faults_are_read_in_order_once_each() -> None:
    assert parse_faults("worker, node,worker") == ("worker", "node")
    assert parse_faults(",".join(FAULTS)) == FAULTS


@pytest.mark.parametrize("text", ["", " , ", "worker,disk", "Kafka"])
def test_an_unknown_or_empty_fault_list_is_refused_with_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="use any of worker, node, kafka, cassandra"):
        parse_faults(text)
