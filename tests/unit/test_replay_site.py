"""An access log as a replay's input: pages as content ids the whole system accepts, sessions
as the replay's session files, and each page's size as the log recorded it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from foresight.replay.run import sessions_of
from foresight.replay.site import content_id_of, path_of, write_site
from foresight.settings import Settings
from origin.catalog import is_content_id
from producers.accesslog import LogOptions
from producers.logline import format_line

T0 = 1_700_000_000.0
HOUR = 3600.0

ODD_PATHS = [
    "/",
    "/news/",
    "/news//1",
    "/a/./b",
    "/a/../b",
    "/.",
    "/..",
    "/café au lait",
    "/article.php?id=4&x=y",
    "/a=b",
    "/a=3D",
    "/%zz",
    "/" + "x" * 300,
    "page-without-slash",
    "/page-without-slash",
]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_every_path_becomes_a_content_id_the_origin_serves(path: str) -> None:
    assert is_content_id(content_id_of(path))


def test_two_paths_never_share_a_content_id_and_a_page_id_reads_back() -> None:
    ids = [content_id_of(p) for p in ODD_PATHS]
    assert len(set(ids)) == len(ODD_PATHS)
    for path, content_id in zip(ODD_PATHS, ids, strict=True):
        if content_id.startswith("p/"):
            assert path_of(content_id) == path


@pytest.mark.parametrize("path", ["/cart", "/shop/checkout/", "/logout?next=/", "/news/lamps"])
def test_the_no_prefetch_patterns_see_a_page_id_as_they_see_its_path(path: str) -> None:
    patterns = [re.compile(p) for p in Settings().no_prefetch_patterns]
    on_path = [bool(p.search(path)) for p in patterns]
    assert [bool(p.search(content_id_of(path))) for p in patterns] == on_path


def _visit(
    host: str, t: float, page: str, page_size: int, assets: list[tuple[str, int, int]]
) -> Iterator[str]:
    """A page view and its subresources (path, status, bytes), with the page as Referer."""
    yield format_line(host, t, page, size=page_size, status=200 if page_size else 304, agent="FF")
    for n, (asset, status, size) in enumerate(assets):
        yield format_line(
            host, t + 1 + n, asset, status=status, size=size, referer=f"https://x{page}", agent="FF"
        )


def site_log(path: Path) -> Path:
    """Ten visitors an hour apart, each "/" then "/news"; /news's views load different things."""
    news_views = [
        (1000, [("/site.css", 200, 500), ("/img/news.jpg", 200, 300)]),  # 800 bytes of assets
        (1200, [("/site.css", 304, 0), ("/img/news.jpg", 200, 300)]),  # 300: css from cache
        (1100, [("/img/news.jpg", 200, 300)]),  # 300
        (0, [("/img/news.jpg", 200, 300)]),  # the page itself from the browser's cache (304)
    ]
    lines: list[str] = []
    for v in range(10):
        host, t = f"10.0.0.{v}", T0 + v * HOUR
        lines += _visit(host, t, "/", 2000, [("/site.css", 200, 500)])
        size, assets = news_views[v % len(news_views)]
        lines += _visit(host, t + 60, "/news", size, assets)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_pages_size_is_its_median_response_plus_the_median_its_views_loaded(
    tmp_path: Path,
) -> None:
    site = write_site(site_log(tmp_path / "access.log"), LogOptions(), 0.2, tmp_path, 10**6)
    sizes = json.loads(site.sizes.read_text())
    # /news: its 200s' median (1000, 1100, 1200...) 1100; its views' assets 800, 300, 300,
    # 300, 800, ...: median 300. "/": 2000 and the stylesheet's 500 every time.
    assert sizes == {content_id_of("/news"): 1100 + 300, content_id_of("/"): 2000 + 500}
    assert site.summary["items"] == 2 and site.summary["capped_items"] == 0


def test_the_sessions_are_split_by_time_into_the_replays_session_files(tmp_path: Path) -> None:
    site = write_site(site_log(tmp_path / "access.log"), LogOptions(), 0.2, tmp_path, 10**6)
    train, test = sessions_of(site.train), sessions_of(site.test)
    counts = site.summary
    assert (len(train), len(test)) == (counts["train_sessions"], counts["test_sessions"])
    assert len(train) + len(test) == 10 and len(test) >= 1
    first = test[0]
    assert [e.content_id for e in first] == [content_id_of("/"), content_id_of("/news")]
    assert first[0].client_id.startswith("log-") and "10.0.0" not in first[0].client_id
    assert max(e.ts for s in train for e in s) < min(e.ts for s in test for e in s)


def test_a_page_larger_than_a_node_fetches_is_served_at_that_size_and_counted(
    tmp_path: Path,
) -> None:
    site = write_site(site_log(tmp_path / "access.log"), LogOptions(), 0.2, tmp_path, 2000)
    assert json.loads(site.sizes.read_text()) == {content_id_of("/news"): 1400, "p/=": 2000}
    assert site.summary["capped_items"] == 1


def test_a_log_with_nothing_to_replay_is_one_error(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(format_line("66.249.66.1", T0, "/", size=10, agent="Googlebot/2.1") + "\n")
    with pytest.raises(ValueError, match="no session to replay"):
        write_site(log, LogOptions(), 0.2, tmp_path, 10**6)
