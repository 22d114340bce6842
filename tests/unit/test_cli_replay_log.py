"""`foresight replay --log --network`: its inputs checked before any service is asked, and the
printed summary showing the network and what prefetching saved, per top page too."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from rich.console import Console

from foresight.cli import cli
from foresight.cli.demo import summary_table, top_pages_table
from producers.logline import format_line


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["replay", *args], terminal_width=200)


def test_a_log_and_session_files_together_are_one_error(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(format_line("10.0.0.1", 0.0, "/", size=10) + "\n")
    result = run("--log", str(log), "--train", str(log), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 1
    assert "either --log or --train and --test" in result.output


def test_neither_a_log_nor_session_files_is_one_error(tmp_path: Path) -> None:
    result = run("--train", str(tmp_path / "t.tsv"), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 1 and "or --log (an access log)" in result.output


def test_a_log_reading_option_without_a_log_is_one_error(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("SessionId\tItemId\tTime\n")
    args = ["--train", str(tsv), "--test", str(tsv), "--json", str(tmp_path / "r.json")]
    result = run(*args, "--session-gap-min", "10", "--test-fraction", "0.3")
    assert result.exit_code == 1
    assert "only with --log: --session-gap-min, --test-fraction" in result.output


def test_an_unknown_network_profile_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(format_line("10.0.0.1", 0.0, "/", size=10) + "\n")
    result = run("--log", str(log), "--network", "5g", "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 2 and "'5g' is not one of" in result.output


def test_a_log_with_no_page_view_to_replay_fails_before_any_service(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(format_line("66.249.66.1", 0.0, "/", size=10, agent="Googlebot/2.1") + "\n")
    result = run("--log", str(log), "--json", str(tmp_path / "r.json"), "--out", str(tmp_path))
    assert result.exit_code == 1 and "no session to replay" in result.output


SUMMARY = {
    "events": 5,
    "landings": 2,
    "requests": 3,
    "hit_ratio": 0.6667,
    "online_hr@5": 0.7,
    "latency_reduction": 0.5,
    "latency_ms": {
        "with": {"mean": 200.0, "p50": 0.0, "p99": 450.0},
        "without": {"mean": 400.0, "p50": 400.0, "p99": 400.0},
    },
    "prefetched_bytes": 7000,
    "wasted_bytes": 3000,
    "wasted_per_requested_byte": 0.6,
    "click_to_push_ms": {"p50": 10.0, "p99": 20.0},
    "lost_events": 0,
    "errors": 0,
    "duplicate_pushes": 0,
    "duration_s": 12.0,
    "all_clicks": {"hit_ratio": 0.4, "latency_reduction": 0.4, "wasted_per_requested_byte": 0.3},
    "network": {"profile": "4g", "rtt_ms": 170.0, "down_mbps": 9.0},
    "savings": {
        "saved_ms_per_request": 216.67,
        "saved_ms_per_session": 325.0,
        "answered_locally_share": 0.4,
        "prefetched_bytes_per_session": 3500,
        "wasted_bytes_per_session": 1500,
        "top_pages": [
            {
                "page": "/news/[b]bold[/b]",
                "views": 2,
                "answered_locally_share": 1.0,
                "latency_ms_with": 50.0,
                "latency_ms_without": 400.0,
                "saved_ms_per_view": 350.0,
                "wasted_bytes": 0,
            }
        ],
    },
}


def rendered(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_summary_shows_the_network_and_what_prefetching_saved() -> None:
    text = rendered(summary_table(SUMMARY))
    assert "4g: 170 ms round trip, 9 Mbit/s" in text
    assert "latency saved per request" in text and "216.67 ms" in text
    assert "latency saved per session" in text and "325.00 ms" in text
    assert "page views answered locally" in text and "40.0%" in text
    assert "3.5 kB / 1.5 kB" in text


def test_loopback_prints_no_network_line() -> None:
    loopback = SUMMARY | {"network": {"profile": "loopback", "rtt_ms": 0.0, "down_mbps": None}}
    assert "round trip" not in rendered(summary_table(loopback))


def test_the_top_pages_table_shows_each_pages_gain_and_its_path_as_written() -> None:
    table = top_pages_table(SUMMARY)
    assert table is not None
    text = rendered(table)
    assert "/news/[b]bold[/b]" in text and "350.00 ms" in text and "100.0%" in text
    assert top_pages_table({"events": 1}) is None
