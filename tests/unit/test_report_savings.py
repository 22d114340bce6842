"""The replay report's page for a site owner: the network, the latency saved per request and
per session, the share answered locally, the bytes it costs, and a table of the top pages."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from foresight.report import ReportData, write_report

TOP_PAGE = {
    "page": "/news/<script>alert(1)</script>",
    "content_id": "p/news/=3Cscript=3E",
    "views": 1234,
    "answered_locally_share": 0.5,
    "latency_ms_with": 120.04,
    "latency_ms_without": 410.0,
    "saved_ms_per_view": 289.96,
    "saved_ms_total": 357810.6,
    "bytes": 187_002,
    "prefetched_bytes": 3 * 1024**2,
    "wasted_bytes": 512,
}
SUMMARY: dict[str, Any] = {
    "events": 2000,
    "requests": 1500,
    "hit_ratio": 0.6,
    "network": {"profile": "4g", "rtt_ms": 170.0, "down_mbps": 9.0},
    "savings": {
        "saved_ms_per_request": 250.5,
        "saved_ms_per_session": 801.25,
        "answered_locally_share": 0.45,
        "prefetched_bytes_per_session": 300 * 1024,
        "wasted_bytes_per_session": 100 * 1024,
        "top_pages": [TOP_PAGE, {**TOP_PAGE, "page": "/b", "latency_ms_without": None}],
    },
}


def page_of(summary: dict[str, Any], tmp_path: Path) -> str:
    data = ReportData(summary, [], [], [], [], {}, title="a log")
    return write_report(data, tmp_path).read_text()


def rows(page: str) -> dict[str, str]:
    return dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", page))


def test_the_summary_says_what_prefetching_saved_and_cost_under_the_network(
    tmp_path: Path,
) -> None:
    table = rows(page_of(SUMMARY, tmp_path))
    assert table["Network"] == "4g: 170 ms, 9 Mbit/s down"
    assert table["Latency saved per request"] == "250.50 ms"
    assert table["Latency saved per session"] == "801.25 ms"
    assert table["Page views answered locally"] == "45.0%"
    assert table["Pushed per session"] == "300.00 KiB"
    assert table["Wasted per session"] == "100.00 KiB"


def test_the_top_pages_table_lists_each_page_escaped(tmp_path: Path) -> None:
    page = page_of(SUMMARY, tmp_path)
    assert "<h2>Top pages by views</h2>" in page
    assert "<script>" not in page.split("<h2>Full result</h2>")[0]
    cells = "".join(
        f"<td>{html.escape(v)}</td>"
        for v in (
            str(TOP_PAGE["page"]),
            "1,234",
            "50.0%",
            "120.0 ms",
            "410.0 ms",
            "290.0 ms",
            "182.62 KiB",
            "3.00 MiB",
            "512 B",
        )
    )
    assert cells in page
    assert "<td>/b</td>" in page and "<td>-</td>" in page  # no baseline figure: a dash


def test_a_replay_on_loopback_without_savings_has_no_such_rows(tmp_path: Path) -> None:
    summary = {"events": 10, "network": {"profile": "loopback", "rtt_ms": 0.0, "down_mbps": None}}
    page = page_of(summary, tmp_path)
    assert "Top pages" not in page and "Network" not in rows(page)
