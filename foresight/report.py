"""The results report of a replay run: one self-contained HTML page and four PNG plots.

The page is meant to be opened from disk or attached to a ticket, so it carries its own CSS, no
script and nothing fetched from the network; the plots sit beside it and are linked by relative
path. Plots are drawn with matplotlib's object-oriented Figure API, which renders with Agg and
never touches pyplot's global state or a display.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Latencies are drawn on a log axis, which cannot show zero; a microsecond is far below any hit.
_LATENCY_FLOOR_MS = 1e-3
_LOAD_METRICS = ("ring_share", "clients", "commands", "pushes")
_CAPTIONS = {
    "hit_ratio.png": "Share of requests (each session's clicks after its landing) served from "
    "the local cache, per time bucket and cumulatively; the dashed line is the predictor's "
    "online HR@5, for comparison.",
    "latency.png": "Empirical CDF of request latency (clicks after a session's landing): the "
    "further left a curve sits, the faster; the height of the first step of the prefetching "
    "curve is the share served locally.",
    "tradeoff.png": "Each sweep point is one prediction threshold: up and to the left is better "
    "(more hits for fewer wasted bytes); the star is this run.",
    "node_load.png": "Each node's share of every load measure; bars of one node close in height "
    "mean the ring spreads that load as it spreads keys.",
}


@dataclass(frozen=True)
class ReportData:
    """Everything a replay run measured that the report shows."""

    summary: Mapping[str, Any]
    hit_timeline: Sequence[tuple[float, int, int]]
    latency_with_ms: Sequence[float]
    latency_without_ms: Sequence[float]
    sweep: Sequence[Mapping[str, float]]
    node_load: Mapping[str, Mapping[str, float]]
    title: str = "Foresight replay"


def write_report(data: ReportData, out_dir: Path) -> Path:
    """Write index.html and the PNGs into out_dir (created if missing); return the index path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Callable[[Axes, ReportData], None]] = {
        "hit_ratio.png": _plot_hit_ratio,
        "latency.png": _plot_latency,
        "tradeoff.png": _plot_tradeoff,
        "node_load.png": _plot_node_load,
    }
    for name, draw in plots.items():
        figure = Figure(figsize=(8, 4.5), layout="constrained")
        draw(figure.add_subplot(), data)
        figure.savefig(out_dir / name, dpi=100)
    index = out_dir / "index.html"
    index.write_text(_render_html(data), encoding="utf-8")
    log.info("wrote the replay report to %s", index)
    return index


def _render_html(data: ReportData) -> str:
    """The report page; images are referenced by the file names write_report gives them."""
    rows = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in _summary_rows(data.summary)
    )
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in _CAPTIONS.items()
    )
    raw = json.dumps(data.summary, indent=2, sort_keys=True, default=str)
    title = html.escape(data.title)
    pages = _top_pages_html(data.summary)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ padding: .3rem .8rem; border-bottom: 1px solid #ddd; }}
th {{ text-align: left; font-weight: 500; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 0 0 2rem; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: .9rem; }}
pre {{ background: #f6f6f6; padding: 1rem; overflow-x: auto; }}
</style></head>
<body><h1>{title}</h1>
<h2>Summary</h2>
<table>
{rows}
</table>
{pages}<h2>Plots</h2>
{figures}
<h2>Full result</h2>
<pre>{html.escape(raw, quote=False)}</pre>
</body></html>
"""


def _summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) for each key number the summary holds, in reading order."""
    percent, ms, count = "{:.1%}".format, "{:,.2f} ms".format, "{:,.0f}".format
    fields: list[tuple[str, tuple[str, ...], Callable[[float], str]]] = [
        ("Events (clicks)", ("events",), count),
        ("Landings (sessions' first clicks)", ("landings",), count),
        ("Requests (each next item)", ("requests",), count),
        ("Hit ratio", ("hit_ratio",), percent),
        ("Online HR@5", ("online_hr@5",), percent),
        ("Latency reduction", ("latency_reduction",), percent),
    ]
    for side in ("with", "without"):
        for stat in ("mean", "p50", "p99"):
            label = f"Latency {stat} {side} prefetching"
            fields.append((label, ("latency_ms", side, stat), ms))
    fields += [
        ("Prefetched", ("prefetched_bytes",), _format_bytes),
        ("Wasted", ("wasted_bytes",), _format_bytes),
        ("Wasted bytes per requested byte", ("wasted_per_requested_byte",), "{:.3f}".format),
        ("Click to push p50", ("click_to_push_ms", "p50"), ms),
        ("Click to push p99", ("click_to_push_ms", "p99"), ms),
        ("Lost events", ("lost_events",), count),
        ("Duplicate pushes", ("duplicate_pushes",), count),
        ("Hit ratio, landings counted as requests", ("all_clicks", "hit_ratio"), percent),
        (
            "Latency reduction, landings counted as requests",
            ("all_clicks", "latency_reduction"),
            percent,
        ),
        (
            "Wasted per requested byte, landings counted as requests",
            ("all_clicks", "wasted_per_requested_byte"),
            "{:.3f}".format,
        ),
        ("Latency saved per request", ("savings", "saved_ms_per_request"), ms),
        ("Latency saved per session", ("savings", "saved_ms_per_session"), ms),
        ("Page views answered locally", ("savings", "answered_locally_share"), percent),
        ("Pushed per session", ("savings", "prefetched_bytes_per_session"), _format_bytes),
        ("Wasted per session", ("savings", "wasted_bytes_per_session"), _format_bytes),
    ]
    rows = []
    network = summary.get("network")
    if isinstance(network, Mapping) and (network.get("rtt_ms") or network.get("down_mbps")):
        down = network.get("down_mbps")
        rate = "unlimited downlink" if down is None else f"{down:g} Mbit/s down"
        rows.append(("Network", f"{network.get('profile')}: {network.get('rtt_ms'):g} ms, {rate}"))
    for label, path, fmt in fields:
        value: Any = summary
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        rows.append((label, fmt(value) if is_number else str(value)))
    return rows


def _format_bytes(n: float) -> str:
    """Bytes in the largest of B, KiB, MiB that keeps the number at least one."""
    if abs(n) < 1024:
        return f"{n:,.0f} B"
    if abs(n) < 1024**2:
        return f"{n / 1024:,.2f} KiB"
    return f"{n / 1024**2:,.2f} MiB"


#: The top pages' table: (heading, key, format); None values show as "-".
_PAGE_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("Page", "page", str),
    ("Views", "views", "{:,}".format),
    ("Answered locally", "answered_locally_share", "{:.1%}".format),
    ("Latency with", "latency_ms_with", "{:,.1f} ms".format),
    ("Latency without", "latency_ms_without", "{:,.1f} ms".format),
    ("Saved per view", "saved_ms_per_view", "{:,.1f} ms".format),
    ("Size", "bytes", _format_bytes),
    ("Pushed", "prefetched_bytes", _format_bytes),
    ("Wasted", "wasted_bytes", _format_bytes),
)


def _top_pages_html(summary: Mapping[str, Any]) -> str:
    """The top pages by views and what each gained (foresight.replay.savings), or nothing."""
    savings = summary.get("savings")
    pages = savings.get("top_pages") if isinstance(savings, Mapping) else None
    if not pages:
        return ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _, _ in _PAGE_COLUMNS)
    body = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape('-' if page.get(key) is None else fmt(page[key]))}</td>"
            for _, key, fmt in _PAGE_COLUMNS
        )
        + "</tr>"
        for page in pages
    )
    return (
        f"<h2>Top pages by views</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>\n"
        "<p>Latencies are means over the page's views, under the replay's network; saved is "
        "without minus with.</p>\n"
    )


def _percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile, the same rule bench/e2e.py reports p50 and p99 with."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _number(summary: Mapping[str, Any], key: str) -> float | None:
    value = summary.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _no_data(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=16, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_hit_ratio(ax: Axes, data: ReportData) -> None:
    title = "Local-cache hit ratio over the replay"
    if not data.hit_timeline:
        _no_data(ax, title)
        return
    seconds = [t for t, _, _ in data.hit_timeline]
    per_bucket = [hits / reqs if reqs else math.nan for _, reqs, hits in data.hit_timeline]
    total_reqs = accumulate(reqs for _, reqs, _ in data.hit_timeline)
    total_hits = accumulate(hits for _, _, hits in data.hit_timeline)
    cumulative = [h / r if r else math.nan for h, r in zip(total_hits, total_reqs, strict=True)]
    ax.plot(seconds, per_bucket, ".-", color="tab:blue", alpha=0.5, lw=1, label="per bucket")
    ax.plot(seconds, cumulative, color="tab:blue", linewidth=2, label="cumulative")
    online = _number(data.summary, "online_hr@5")
    if online is not None:
        ax.axhline(online, color="tab:red", linestyle="--", label=f"online HR@5 {online:.1%}")
    ax.set(title=title, xlabel="seconds since replay start", ylabel="hit ratio", ylim=(0, 1))
    ax.legend(loc="lower right")


def _plot_latency(ax: Axes, data: ReportData) -> None:
    title = "Request latency, with and without prefetching"
    series = {"with prefetching": data.latency_with_ms, "without": data.latency_without_ms}
    if not any(series.values()):
        _no_data(ax, title)
        return
    for label, values in series.items():
        if not values:
            continue
        xs = sorted(max(v, _LATENCY_FLOOR_MS) for v in values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        mean = sum(values) / len(values)
        p50, p99 = _percentile(values, 0.5), _percentile(values, 0.99)
        stats = f"mean {mean:.2f}, p50 {p50:.2f}, p99 {p99:.2f} ms"
        ax.step(xs, ys, where="post", linewidth=2, label=f"{label}: {stats}")
    ax.set_xscale("log")
    ax.set(title=title, xlabel="latency (ms, log scale)", ylabel="share of requests", ylim=(0, 1))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)


def _plot_tradeoff(ax: Axes, data: ReportData) -> None:
    title = "Hit ratio against wasted bytes per threshold"
    if not data.sweep:
        title += " (no sweep)"
    here_x, here_y = (
        _number(data.summary, "wasted_per_requested_byte"),
        _number(data.summary, "hit_ratio"),
    )
    if not data.sweep and (here_x is None or here_y is None):
        _no_data(ax, title)
        return
    points = sorted(data.sweep, key=lambda p: p["threshold"])
    wasted = [p["wasted_per_requested_byte"] for p in points]
    hits = [p["hit_ratio"] for p in points]
    if points:
        ax.plot(wasted, hits, marker="o", color="tab:blue", label="threshold sweep")
    for point, x, y in zip(points, wasted, hits, strict=True):
        ax.annotate(f"t={point['threshold']:g}", (x, y), textcoords="offset points", xytext=(5, 5))
    if here_x is not None and here_y is not None:
        ax.scatter(here_x, here_y, marker="*", s=250, color="tab:red", zorder=3, label="this run")
    ax.set(title=title, xlabel="wasted bytes per requested byte", ylabel="hit ratio", ylim=(0, 1))
    ax.legend(loc="lower right")


def _plot_node_load(ax: Axes, data: ReportData) -> None:
    title = "Load per node, as a share of each total"
    if not data.node_load:
        _no_data(ax, title)
        return
    nodes = sorted(data.node_load)
    width = 0.8 / len(_LOAD_METRICS)
    for i, metric in enumerate(_LOAD_METRICS):
        amounts = [data.node_load[node].get(metric, 0.0) for node in nodes]
        total = sum(amounts)
        shares = [a / total if total else 0.0 for a in amounts]
        offsets = [n + (i - (len(_LOAD_METRICS) - 1) / 2) * width for n in range(len(nodes))]
        ax.bar(offsets, shares, width, label=metric.replace("_", " "))
    ax.set_xticks(range(len(nodes)), nodes)
    # Headroom above the tallest bar keeps the one-row legend off the bars.
    ax.set(title=title, ylabel="share of total", ylim=(0, ax.get_ylim()[1] * 1.2))
    ax.legend(loc="upper center", ncols=len(_LOAD_METRICS))
