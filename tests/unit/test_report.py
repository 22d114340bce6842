"""The replay report: the files it writes, the numbers a reader sees, the data it survives."""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path
from typing import Any

import pytest

from foresight.report import ReportData, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("hit_ratio.png", "latency.png", "tradeoff.png", "node_load.png")
# A blank 800x450 canvas compresses to well under this; any drawn axes and text go over it.
MIN_PLOT_BYTES = 4000

SUMMARY: dict[str, Any] = {
    "events": 13568,
    "requests": 13568,
    "hit_ratio": 0.5234,
    "online_hr@5": 0.55,
    "latency_ms": {
        "with": {"mean": 2.3456, "p50": 0.0123, "p99": 18.4},
        "without": {"mean": 5.1, "p50": 4.4, "p99": 19.0},
    },
    "prefetched_bytes": 734_003_200,
    "wasted_bytes": 5 * 1024 + 512,
    "wasted_per_requested_byte": 0.48,
    "click_to_push_ms": {"p50": 3.2, "p99": 41.066},
    "lost_events": 0,
    "duplicate_pushes": 2,
    "note": "</pre><b>not bold</b>",
}


def full_data(**overrides: Any) -> ReportData:
    fields: dict[str, Any] = {
        "summary": SUMMARY,
        "hit_timeline": [(10.0 * i, 100, 20 + i) for i in range(30)],
        "latency_with_ms": [0.01] * 50 + [1.0 + i / 10 for i in range(50)],
        "latency_without_ms": [1.0 + i / 10 for i in range(100)],
        "sweep": [
            {"threshold": t, "hit_ratio": 0.7 - t / 2, "wasted_per_requested_byte": 1.0 - t}
            for t in (0.1, 0.3, 0.5)
        ],
        "node_load": {
            "node-a": {"ring_share": 0.4, "clients": 40, "commands": 120, "pushes": 300},
            "node-b": {"ring_share": 0.6, "clients": 60, "commands": 180, "pushes": 500},
        },
    }
    return ReportData(**(fields | overrides))


EMPTY = ReportData(
    summary={}, hit_timeline=[], latency_with_ms=[], latency_without_ms=[], sweep=[], node_load={}
)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Nested and not yet there: write_report must create it.
    return write_report(full_data(), tmp_path_factory.mktemp("report") / "run" / "42")


def assert_valid_report(index: Path) -> str:
    """Every plot is a real PNG beside index.html, and the page links each of them."""
    assert index.name == "index.html"
    page = index.read_text(encoding="utf-8")
    for name in PLOTS:
        png = (index.parent / name).read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert len(png) > MIN_PLOT_BYTES, name
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(PLOTS)
    return page


def test_writes_the_page_and_every_plot(full_report: Path) -> None:
    assert full_report.is_file()
    assert_valid_report(full_report)


@pytest.mark.parametrize(
    "shown",
    [
        "13,568",  # events and requests
        "52.3%",  # hit ratio
        "55.0%",  # online HR@5
        "2.35 ms",  # mean latency with prefetching
        "0.01 ms",  # p50 with prefetching: a local hit
        "19.00 ms",  # p99 without prefetching
        "700.00 MiB",  # prefetched bytes
        "5.50 KiB",  # wasted bytes
        "0.480",  # wasted per requested byte
        "41.07 ms",  # click to push p99
    ],
)
def test_summary_table_shows_formatted_numbers(full_report: Path, shown: str) -> None:
    table = full_report.read_text(encoding="utf-8").split("<table>")[1].split("</table>")[0]
    assert f"<td>{shown}</td>" in table


def test_full_summary_is_at_the_bottom_with_markup_escaped(full_report: Path) -> None:
    page = full_report.read_text(encoding="utf-8")
    shown = html.unescape(page.split("<pre>")[1].split("</pre>")[0])
    assert '"events": 13568' in shown
    assert '"note": "</pre><b>not bold</b>"' in shown
    assert "<b>" not in page


def test_page_loads_nothing_from_the_network(full_report: Path) -> None:
    page = full_report.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page


def test_empty_run_still_gives_a_complete_report(tmp_path: Path) -> None:
    page = assert_valid_report(write_report(EMPTY, tmp_path))
    assert "<td>" not in page  # no numbers to show, and none invented


def test_partial_data_draws_what_there_is(tmp_path: Path) -> None:
    data = full_data(
        summary={"hit_ratio": 0.4, "wasted_per_requested_byte": 0.2, "lost_events": None},
        hit_timeline=[(0.0, 0, 0), (5.0, 10, 4)],  # a bucket with no requests
        latency_without_ms=[],
        sweep=[],
        node_load={"node-a": {"ring_share": 1.0}},
    )
    page = assert_valid_report(write_report(data, tmp_path))
    assert "<td>40.0%</td>" in page
    assert "Latency" not in page.split("</table>")[0]


def test_title_is_escaped(tmp_path: Path) -> None:
    title = '<script>alert("x")</script> & co'
    page = write_report(dataclasses.replace(EMPTY, title=title), tmp_path).read_text()
    assert "<script>" not in page
    assert "<h1>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co</h1>" in page
    assert "<title>&lt;script&gt;" in page
