"""`foresight replay --log --network 4g` end to end on real Kafka and Cassandra: an access log
this test writes becomes sessions and page sizes, its later sessions are played by agents over
a 4G link, every page view is accounted for, the origin serves each page at the size the log
recorded, and the figures a site owner reads are there and agree with each other."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from foresight.replay.site import content_id_of
from foresight.settings import Settings
from producers.logline import format_line

from .conftest import replay_settings, settings_env

T0 = 1_717_200_000.0
VISITORS = 60
REPLAYED = 10
#: Each visitor's walk; the last step goes back to a page the visitor's agent already holds.
WALK = ["/", "/products", "/products/lamp", "/products"]
#: Each page's own bytes, and what it loads (every view loads the same here).
PAGES = {"/": 30_000, "/products": 45_000, "/products/lamp": 60_000}
ASSETS = {"/": [("/site.css", 20_000)], "/products": [("/img/a.jpg", 15_000)]}
ASSETS["/products/lamp"] = [("/img/lamp.jpg", 40_000), ("/img/lamp-2.jpg", 25_000)]
RTT_MS, DOWN_MBPS = 170.0, 9.0  # the 4g profile (WebPageTest's)


def write_log(path: Path) -> dict[str, int]:
    """Visitors ten minutes apart walking WALK, 20 s a page; the sizes the replay should use."""
    lines = []
    for v in range(VISITORS):
        host, start = f"10.1.{v // 200}.{v % 200}", T0 + 600 * v
        for step, page in enumerate(WALK):
            t = start + 20 * step
            lines.append(format_line(host, t, page, size=PAGES[page], agent="Firefox"))
            for asset, size in ASSETS[page]:
                referer = f"https://shop.example{page}"
                line = format_line(host, t + 1, asset, size=size, referer=referer, agent="Firefox")
                lines.append(line)
        lines.append(format_line("10.9.9.9", start, "/healthz", size=2, agent="UptimeRobot/2.0"))
    path.write_text("\n".join(lines) + "\n")
    return {
        content_id_of(page): size + sum(s for _, s in ASSETS[page]) for page, size in PAGES.items()
    }


def test_a_log_replayed_over_4g_accounts_for_every_page_view_at_the_logs_sizes(
    settings: Settings, tmp_path: Path
) -> None:
    sizes = write_log(tmp_path / "access.log")
    out = tmp_path / "run"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "foresight", "replay", "--log", str(tmp_path / "access.log")),
            *("--network", "4g", "--sessions", str(REPLAYED), "--clients", "10"),
            *("--speed", "50", "--json", str(tmp_path / "result.json"), "--out", str(out)),
        ],
        env=settings_env(replay_settings(settings)) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "result.json").read_text())

    events = REPLAYED * len(WALK)
    assert (summary["events"], summary["landings"], summary["errors"]) == (events, REPLAYED, 0)
    assert summary["lost_events"] == 0 and summary["processed_events"] == events
    assert summary["duplicate_pushes"] == 0
    assert summary["network"] == {"profile": "4g", "rtt_ms": RTT_MS, "down_mbps": DOWN_MBPS}
    log = summary["log"]
    assert log["pages"] == VISITORS * len(WALK) and log["filtered"]["robots"] == VISITORS
    assert log["train_sessions"] + log["test_sessions"] == VISITORS
    assert json.loads((out / "log" / "sizes.json").read_text()) == sizes

    with (out / "report" / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == events
    for row in rows:
        # the origin served each page at the size the log recorded for it and what it loads
        size = sizes[row["content_id"]]
        assert int(row["bytes"]) == size
        over_4g = RTT_MS + size * 8 / (DOWN_MBPS * 1e6) * 1000
        # without prefetching every page view is a fetch over the link; with it, a fetch is
        # at least as slow (pushes may be ahead of it), a local answer may be instant
        assert float(row["latency_without_ms"]) >= over_4g
        if row["hit"] == "0":
            assert float(row["latency_ms"]) >= over_4g
    hits = sum(row["hit"] == "1" for row in rows)
    assert hits >= REPLAYED  # each walk's last step goes back to a page its agent holds

    saved = summary["savings"]
    assert saved["page_views"] == events and saved["sessions"] == REPLAYED
    assert saved["answered_locally"] == hits
    assert saved["answered_locally_share"] == round(hits / events, 4)
    latency = summary["latency_ms"]
    per_request = latency["without"]["mean"] - latency["with"]["mean"]
    assert abs(saved["saved_ms_per_request"] - per_request) < 0.01
    total_saved = sum(float(r["latency_without_ms"]) - float(r["latency_ms"]) for r in rows)
    assert abs(saved["saved_ms_per_session"] - total_saved / REPLAYED) < 0.01
    wasted = summary["wasted_bytes"]
    assert saved["wasted_bytes_per_session"] == round(wasted / REPLAYED)
    pages = saved["top_pages"]
    assert {p["page"] for p in pages} == set(PAGES)
    assert sum(p["views"] for p in pages) == events
    assert [p["views"] for p in pages] == sorted((p["views"] for p in pages), reverse=True)
    assert next(p for p in pages if p["page"] == "/products")["answered_locally_share"] >= 0.5
    report = (out / "report" / "index.html").read_text()
    assert "Top pages by views" in report and "Latency saved per session" in report
    assert "Top pages by views" in result.stdout and "4g: 170 ms round trip" in result.stdout
