"""What prefetching saves a site's visitors and what it costs them: overall, and per top page.

The figures a site owner asks for, from the with-prefetching pass's clicks and each one's
latency without prefetching (both under the replay's network profile):

- ``saved_ms_per_request``: the mean latency saved over the requests (each click after a
  session's landing, the headline's denominator); ``saved_ms_per_session``: the latency saved
  over all of a session's clicks, its landing included, summed, averaged over the sessions;
- ``answered_locally_share``: the share of page views (every click) the agent answered;
- the bytes it costs: pushed and wasted (pushed, never used) bytes per session and per page
  view: wasted bytes are what the visitor's link carried for nothing;
- ``top_pages``: the same per page for the ``TOP_PAGES`` pages with the most views (which pages
  gain most), each with its views, the share answered locally, mean latency with and without,
  ms saved per view and in all, its size, and the bytes pushed and wasted for it.

Without a "without" pass (``--no-baseline``) the latency figures are None.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from foresight.replay.measure import Request, request_indices
from foresight.replay.site import path_of

TOP_PAGES = 10


def savings(
    clicks: Sequence[Request],
    without_ms: Sequence[float],
    pushed_by_item: Mapping[str, int],
    used_by_item: Mapping[str, int],
    label: Callable[[str], str] = path_of,
) -> dict[str, Any]:
    """The savings block of a replay's summary (see the module's docstring).

    ``without_ms[i]`` is ``clicks[i]``'s latency without prefetching (empty: no such pass).
    """
    sessions = len({c.client_id for c in clicks})
    saved = [without_ms[i] - c.latency_ms for i, c in enumerate(clicks)] if without_ms else []
    pushed = sum(pushed_by_item.values())
    wasted = sum(_wasted(pushed_by_item, used_by_item, item) for item in pushed_by_item)
    local = sum(c.hit for c in clicks)
    requests = request_indices(clicks)
    by_page: defaultdict[str, list[int]] = defaultdict(list)
    for i, click in enumerate(clicks):
        by_page[click.content_id].append(i)
    views = Counter({item: len(indices) for item, indices in by_page.items()})
    top = sorted(views, key=lambda item: (-views[item], item))[:TOP_PAGES]

    def page(item: str) -> dict[str, Any]:
        indices = by_page[item]
        return {
            "page": label(item),
            "content_id": item,
            "views": len(indices),
            "answered_locally_share": _share(sum(clicks[i].hit for i in indices), len(indices)),
            "latency_ms_with": _mean([clicks[i].latency_ms for i in indices]),
            "latency_ms_without": _mean([without_ms[i] for i in indices]) if saved else None,
            "saved_ms_per_view": _mean([saved[i] for i in indices]) if saved else None,
            "saved_ms_total": round(sum(saved[i] for i in indices), 1) if saved else None,
            "bytes": clicks[indices[0]].size,
            "prefetched_bytes": pushed_by_item.get(item, 0),
            "wasted_bytes": _wasted(pushed_by_item, used_by_item, item),
        }

    return {
        "page_views": len(clicks),
        "sessions": sessions,
        "answered_locally": local,
        "answered_locally_share": _share(local, len(clicks)),
        "saved_ms_per_request": _mean([saved[i] for i in requests]) if saved else None,
        "saved_ms_per_session": round(sum(saved) / sessions, 2) if saved and sessions else None,
        "prefetched_bytes_per_session": round(pushed / sessions) if sessions else 0,
        "wasted_bytes_per_session": round(wasted / sessions) if sessions else 0,
        "wasted_bytes_per_page_view": round(wasted / len(clicks)) if clicks else 0,
        "top_pages": [page(item) for item in top],
    }


def _wasted(pushed: Mapping[str, int], used: Mapping[str, int], item: str) -> int:
    return max(0, pushed.get(item, 0) - used.get(item, 0))


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
