"""`foresight services status|down --replicated` on a state folder where nothing runs: each of
the six nodes named with its address, the quorum and the ring said to be down, nothing stopped,
and FORESIGHT_REPLICATED=1 making the replicated set the default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from foresight.cli import cli
from foresight.settings import REPLICATED_HOSTS

NODES = [f"{kind}-{n}" for kind in ("kafka", "cassandra") for n in (1, 2, 3)]


@pytest.fixture(autouse=True)
def empty_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FORESIGHT_STATE_DIR", str(tmp_path / "state"))


def services(*args: str) -> Result:
    return CliRunner().invoke(cli, ["services", *args], terminal_width=200)


def test_status_of_a_replicated_set_not_running_names_each_node_and_fails() -> None:
    result = services("status", "--replicated")
    assert result.exit_code == 1
    for name in NODES:
        assert name in result.output
    for host in REPLICATED_HOSTS:
        assert f"{host}:9092" in result.output and f"{host}:9042" in result.output
    assert "kafka quorum: kafka-1, kafka-2, kafka-3 down" in result.output
    assert "cassandra ring: cassandra-1, cassandra-2, cassandra-3 down" in result.output
    assert "127.0.0.1:" not in result.output  # the single set is not shown: it does not run


def test_down_of_a_replicated_set_not_running_stops_nothing() -> None:
    result = services("down", "--replicated")
    assert result.exit_code == 0
    assert sorted(result.output.splitlines()) == sorted(f"{n}: was not running" for n in NODES)


def test_the_switch_makes_the_replicated_set_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_REPLICATED", "1")
    assert "cassandra-3" in services("status").output
    single = services("status", "--single").output
    assert "127.0.0.1:9092" in single and "kafka-1" not in single
