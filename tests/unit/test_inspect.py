"""`foresight inspect client`: the view it prints and its one-line failures.

The worker, Cassandra and the ring are replaced at the module's three read functions; the
worker's error mapping is checked through a stubbed urlopen. No network.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner

from foresight.cli import cli
from foresight.cli import inspect as inspect_cli
from foresight.settings import Settings

NOW = 1_750_000_000.0
REAL_FETCH_VIEW = inspect_cli.fetch_view


def explanation(content_id: str, rank: int, probability: float) -> dict[str, Any]:
    return {
        "content_id": content_id,
        "rank": rank,
        "probability": probability,
        "calibrated": probability,
        "score": 0.4,
        "share": 0.5,
        "blend": 1.3,
        "ranking": "re-ranker",
        "sources": {"sr": 1.0, "earlier": 0.0, "reverse": 0.12, "popularity": 0.0, "session": 0.3},
        "signals": {"sr": 1.0, "markov": 1.0, "reverse": 0.4, "session_position": 1.0},
        "ranker": {"recent_1": 0.69, "log_pop": -0.14, "intercept": -0.36},
        "calibration": {"logit": 0.13, "log_share": -0.32, "intercept": -0.56},
    }


VIEW: dict[str, Any] = {
    "client_id": "c-1",
    "known": True,
    "at": NOW,
    "events": 3,
    "hits": 1,
    "last_events": [
        {"content_id": "p-last", "ts": NOW - 12.0},
        {"content_id": "p-before", "ts": None},
    ],
    "top_k": [explanation("p-next", 1, 0.62), explanation("p-maybe", 2, 0.08)],
    "last_prediction": ["p-next", "p-maybe", "p-gone"],
    "threshold": {"value": 0.15, "connection": "4g", "base": 0.15, "offset": 0.0},
    "budget": {"tokens": 1_950_000.0, "capacity": 2_000_000.0, "refill_per_s": 33_333.3},
    "prefetched": [{"content_id": "p-next", "expires_at": NOW + 600.0}],
    "worker": {"id": 0, "group": "g", "topic": "interactions", "partition": 2, "offset": 41},
}
HOLDINGS = [{"content_id": "p-next", "version": 3, "digest": "ab" * 32, "pushed_at": NOW - 5.0}]
OWNER = {"node_id": "node-0", "url": "http://127.0.0.1:8710", "slot": 0}


class Sources:
    """Stand-ins for the worker, Cassandra and the ring, recording what was asked."""

    def __init__(self, pages: dict[int, tuple[int, dict[str, Any]] | Exception]) -> None:
        self.pages = pages
        self.asked: list[str] = []
        self.holdings: list[dict[str, Any]] | Exception = HOLDINGS
        self.owner: dict[str, Any] | Exception | None = OWNER

    def fetch_view(self, url: str) -> tuple[int, dict[str, Any]]:
        self.asked.append(url)
        port = int(url.split(":")[2].split("/")[0])
        page = self.pages.get(port - Settings().worker_web_port, (404, {}))
        if isinstance(page, Exception):
            raise page
        return page

    def read_holdings(self, settings: Settings, client_id: str) -> list[dict[str, Any]]:
        if isinstance(self.holdings, Exception):
            raise self.holdings
        return self.holdings

    def find_owner(self, settings: Settings, client_id: str) -> dict[str, Any] | None:
        if isinstance(self.owner, Exception):
            raise self.owner
        return self.owner


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> Sources:
    stub = Sources({0: (200, VIEW)})
    monkeypatch.setattr(inspect_cli, "fetch_view", stub.fetch_view)
    monkeypatch.setattr(inspect_cli, "read_holdings", stub.read_holdings)
    monkeypatch.setattr(inspect_cli, "find_owner", stub.find_owner)
    monkeypatch.setattr(inspect_cli, "read_history", lambda settings, client_id: None)
    return stub


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["inspect", "client", *args], terminal_width=200)


def test_the_view_shows_events_top_k_threshold_budget_holdings_and_owner(
    sources: Sources,
) -> None:
    result = run("c-1")
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "c-1",
        "p-last",
        "p-before",
        "p-next",
        "0.620",
        "p-maybe",
        "0.080",
        "threshold 0.150 on 4g",
        "1,950 kB left of 2,000 kB",
        "node-0",
        "http://127.0.0.1:8710",
        "recent_1 +0.69",
        "log_pop -0.14",
        "abababababab",
        "partition 2",
        "predicted at its last event: p-next, p-maybe, p-gone",
    ):
        assert expected in out, expected
    lines = out.splitlines()
    # The likely item is over the threshold, commanded and held; the unlikely one is not.
    next_row = next(line for line in lines if "p-next" in line and "0.620" in line)
    assert "≥ threshold, commanded, held" in next_row
    maybe_row = next(line for line in lines if "p-maybe" in line and "0.080" in line)
    assert "< threshold" in maybe_row and "held" not in maybe_row
    # Each item's blend terms: sr 1.00, reverse 0.12, session 0.30 (zeros left blank).
    why = [line for line in lines if line.startswith("│ 1 ") and "recent_1" in line]
    assert why and [cell.strip() for cell in why[0].split("│")[2:7]] == [
        "1.00",
        "",
        "0.12",
        "",
        "0.30",
    ]
    assert "unavailable" not in out


def test_json_is_one_object_with_the_worker_view_holdings_and_owner(sources: Sources) -> None:
    result = run("c-1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["client_id"] == "c-1"
    assert report["last_events"][0] == {"content_id": "p-last", "ts": NOW - 12.0}
    assert [item["content_id"] for item in report["top_k"]] == ["p-next", "p-maybe"]
    assert report["top_k"][0]["sources"]["sr"] == 1.0
    assert report["last_prediction"] == ["p-next", "p-maybe", "p-gone"]
    assert report["threshold"]["value"] == 0.15
    assert report["budget"]["capacity"] == 2_000_000.0
    assert report["holdings"] == HOLDINGS and report["owner"] == OWNER
    assert report["worker"]["url"] == sources.asked[0] and report["worker"]["partition"] == 2
    assert report["problems"] == []


def test_the_first_of_several_workers_that_holds_the_client_answers(sources: Sources) -> None:
    sources.pages = {0: (404, {}), 1: (404, {}), 2: (200, VIEW)}
    result = run("c-1", "--workers", "4", "--json")
    assert result.exit_code == 0, result.output
    base = Settings().worker_web_port
    assert sources.asked == [
        f"http://127.0.0.1:{base + n}/clients/c-1" for n in range(3)
    ]  # it stops at the one that holds the client
    assert json.loads(result.output)["worker"]["url"].startswith(f"http://127.0.0.1:{base + 2}/")


def test_an_unknown_client_is_one_line_and_exit_1(sources: Sources) -> None:
    sources.pages = {0: (404, {"known": False}), 1: (404, {"known": False})}
    result = run("ghost", "--workers", "2")
    assert result.exit_code == 1
    assert "unknown client 'ghost'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_an_unreachable_worker_is_one_line_naming_its_url_and_exit_1(
    sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(url: str, timeout: float) -> Any:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(inspect_cli, "fetch_view", REAL_FETCH_VIEW)
    monkeypatch.setattr(urllib.request, "urlopen", refused)
    result = run("c-1")
    assert result.exit_code == 1
    url = f"http://127.0.0.1:{Settings().worker_web_port}/clients/c-1"
    assert f"worker not reachable at {url}" in result.output
    assert "Connection refused" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_worker_that_is_down_is_reported_even_when_another_does_not_know_the_client(
    sources: Sources,
) -> None:
    sources.pages = {0: (404, {}), 1: inspect_cli.Unavailable("worker not reachable at X: no")}
    result = run("c-1", "--workers", "2")
    assert result.exit_code == 1
    assert "worker not reachable at X" in result.output


def test_cassandra_or_the_ring_down_leaves_the_rest_of_the_view(sources: Sources) -> None:
    sources.holdings = inspect_cli.Unavailable("holdings: Cassandra at 127.0.0.1:9042 is down")
    sources.owner = None
    result = run("c-1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["holdings"] is None and report["owner"] is None
    assert report["problems"] == [
        "holdings: Cassandra at 127.0.0.1:9042 is down",
        "owner: no live cache node in the ring",
    ]
    assert report["top_k"]
    shown = run("c-1")
    assert shown.exit_code == 0
    assert "unavailable: holdings: Cassandra" in shown.output
    assert "owner node unknown" in shown.output
