"""Access logs read as sessions of page views: formats, gzip, bad lines, filters, attachment.

The logs are written here, line by line, both with literal Apache and nginx lines (so the
reader is not only checked against its own writer) and with :func:`format_line`.
"""

from __future__ import annotations

import doctest
import gzip
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import producers.accesslog
import producers.logline
from producers.accesslog import AccessLog, AccessLogError, LogOptions, Session, split_sessions
from producers.logline import Hit, format_line, item_of, parse_line

#: The example of Apache's log documentation (Combined Log Format).
APACHE = (
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
    '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
)
#: nginx's default `combined`, a body of 0 bytes, and a field appended after the user agent.
NGINX = (
    '203.0.113.9 - - [02/Mar/2024:23:59:59 +0100] "GET /caf%C3%A9?x=1 HTTP/2.0" 304 0 "-" '
    '"Mozilla/5.0 (X11; Linux x86_64)" 0.004'
)
T0 = 1_700_000_000.0
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/120.0"


def line(
    t: float, path: str, host: str = "10.0.0.1", agent: str | None = BROWSER, **kw: Any
) -> str:
    return format_line(host, T0 + t, path, agent=agent, **kw)


def read(lines: list[str], options: LogOptions | None = None) -> tuple[list[Session], AccessLog]:
    log = AccessLog(options or LogOptions())
    return list(log.sessions(lines, "access.log")), log


def pages(sessions: list[Session]) -> list[list[str]]:
    return [[p.path for p in s.pages] for s in sessions]


def test_apache_documentation_example_is_read_field_by_field() -> None:
    hit = parse_line(APACHE)
    assert isinstance(hit, Hit)
    assert hit.host == "127.0.0.1" and hit.method == "GET" and hit.target == "/apache_pb.gif"
    assert hit.time == 971_211_336.0  # 2000-10-10 20:55:36 UTC
    assert (hit.status, hit.size) == (200, 2326)
    assert hit.referer == "http://www.example.com/start.html"
    assert hit.agent == "Mozilla/4.08 [en] (Win98; I ;Nav)"


def test_common_log_format_has_no_referer_nor_agent_and_dash_bytes_are_zero() -> None:
    hit = parse_line('192.0.2.4 - - [10/Oct/2000:13:55:36 +0000] "GET /index.html HTTP/1.1" 200 -')
    assert isinstance(hit, Hit)
    assert (hit.size, hit.referer, hit.agent) == (0, None, None)


def test_nginx_default_line_with_a_trailing_field_is_read() -> None:
    hit = parse_line(NGINX)
    assert isinstance(hit, Hit)
    assert (hit.status, hit.size, hit.referer) == (304, 0, None)
    assert hit.agent == "Mozilla/5.0 (X11; Linux x86_64)"
    assert hit.time == 1_709_420_399.0  # 22:59:59 UTC


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "not in Common or Combined"),
        ("hello world", "not in Common or Combined"),
        ('1.2.3.4 - - [10/Foo/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1', "date"),
        ('1.2.3.4 - - [32/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1', "date"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 +9900] "GET / HTTP/1.0" 200 1', "date"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 2x0 1', "status"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 999 1', "status"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 12k', "size"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 -5', "size"),
        ('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 -x', "size"),
        ('1.2.3.4 - - [1\u0661/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1', "date"),
    ],
)
def test_a_bad_line_gives_its_reason(bad: str, reason: str) -> None:
    result = parse_line(bad)
    assert isinstance(result, str) and reason in result


def test_bad_lines_are_counted_with_file_and_line_and_the_good_ones_still_read() -> None:
    lines = [line(0, "/")] + ["garbage"] * 30 + [line(5, "/about")]
    sessions, log = read(lines, LogOptions(bad_locations=3))
    assert pages(sessions) == [["/", "/about"]]
    counts = log.counts
    assert (counts.lines, counts.good, counts.bad) == (32, 2, 30)
    assert [loc.split(": ")[0] for loc in counts.bad_locations] == [
        "access.log:2",
        "access.log:3",
        "access.log:4",
    ]


def test_a_log_without_one_good_line_is_one_clear_error() -> None:
    with pytest.raises(AccessLogError, match=r"access\.log: no line .*access\.log:1"):
        read(["nope", "still nope"])
    with pytest.raises(AccessLogError, match="empty"):
        read([])


def test_robots_and_health_checks_are_filtered_by_agent_or_path() -> None:
    lines = [
        line(0, "/", agent="Mozilla/5.0 (compatible; Googlebot/2.1)"),
        line(1, "/healthz"),
        line(2, "/health/live"),
        line(3, "/health-insurance"),  # a page whose name starts like a health check
        line(4, "/pricing", agent="curl/8.5.0"),
    ]
    sessions, log = read(lines)
    assert pages(sessions) == [["/health-insurance"]]
    assert log.counts.robots == 4


def test_the_robot_list_is_settable_and_can_be_empty() -> None:
    lines = [line(0, "/", agent="Googlebot"), line(1, "/healthz", agent="Googlebot")]
    sessions, log = read(lines, LogOptions(robots=()))
    assert pages(sessions) == [["/", "/healthz"]]
    assert log.counts.robots == 0


def test_only_get_with_2xx_or_304_is_kept() -> None:
    lines = [
        line(0, "/a"),
        line(1, "/b", method="POST"),
        line(2, "/c", method="HEAD"),
        line(3, "/d", status=404),
        line(4, "/e", status=500),
        line(5, "/f", status=301),
        line(6, "/g", status=304),
        line(7, "/h", status=206),
        '10.0.0.1 - - [14/Nov/2023:22:13:28 +0000] "\\x16\\x03\\x01" 400 150 "-" "-"',
    ]
    sessions, log = read(lines)
    assert pages(sessions) == [["/a", "/g", "/h"]]
    assert (log.counts.method, log.counts.status) == (3, 3)


def test_subresources_are_attached_to_the_page_that_loaded_them() -> None:
    lines = [
        line(0, "/", size=5000),
        line(0.2, "/static/site.css", size=900),
        line(0.3, "/img/hero.jpg", size=40_000),
        # a font asked for by the stylesheet: its Referer is the CSS, not the page
        line(0.5, "/fonts/a.woff2", size=20_000, referer="https://example.com/static/site.css"),
        line(30, "/blog", size=7000),
        # lazy-loaded long after its page, but the Referer names the page
        line(50, "/img/late.png", size=300, referer="https://example.com/"),
        line(60, "/img/orphan.png"),  # no Referer, 30 s after the last page: not attached
    ]
    sessions, log = read(lines)
    home, blog = sessions[0].pages
    assert [(r.path, r.size) for r in home.subresources] == [
        ("/static/site.css", 900),
        ("/img/hero.jpg", 40_000),
        ("/fonts/a.woff2", 20_000),
        ("/img/late.png", 300),
    ]
    assert (home.size, blog.subresources) == (5000, [])
    assert (log.counts.pages, log.counts.subresources, log.counts.orphans) == (2, 4, 1)


def test_without_a_referer_the_window_decides() -> None:
    clf = [
        format_line("10.0.0.2", T0, "/"),
        format_line("10.0.0.2", T0 + 1, "/app.js"),
        format_line("10.0.0.2", T0 + 25, "/logo.svg"),
    ]
    sessions, log = read(clf, LogOptions(attach_window_s=30))
    assert [r.path for r in sessions[0].pages[0].subresources] == ["/app.js", "/logo.svg"]
    _, log = read(clf, LogOptions(attach_window_s=10))
    assert log.counts.orphans == 1


def test_the_subresource_extensions_are_settable() -> None:
    lines = [line(0, "/"), line(1, "/report.pdf"), line(2, "/style.css")]
    sessions, _ = read(lines)
    assert pages(sessions) == [["/", "/report.pdf"]]  # a PDF is a document one clicks to
    sessions, _ = read(lines, LogOptions(subresource_extensions=frozenset({"pdf"})))
    assert pages(sessions) == [["/", "/style.css"]]


def test_sessions_are_split_by_the_inactivity_gap_per_client() -> None:
    lines = [
        line(0, "/a"),
        line(29 * 60, "/b"),  # 29 minutes later: same session
        line(29 * 60 + 31 * 60, "/c"),  # 31 minutes after /b: a new one
        line(10, "/x", agent="Safari"),  # same host, another browser: another client
    ]
    sessions, _ = read(lines)
    by_id = {s.id: [p.path for p in s.pages] for s in sessions}
    assert sorted(by_id.values()) == [["/a", "/b"], ["/c"], ["/x"]]
    assert len(set(by_id)) == 3
    sessions, _ = read(lines, LogOptions(session_gap_s=3600))
    assert sorted(pages(sessions)) == [["/a", "/b", "/c"], ["/x"]]


def test_items_drop_the_query_and_are_percent_decoded() -> None:
    assert item_of("/caf%C3%A9?utm=1", keep_query=False) == "/café"
    assert item_of("/caf%c3%a9", keep_query=False) == item_of("/café", keep_query=False)
    assert item_of("/a?b=1#frag", keep_query=True) == "/a?b=1"
    assert item_of("http://example.com/x?y", keep_query=False) == "/x"
    assert item_of("", keep_query=False) == "/"
    sessions, _ = read([line(0, "/p?id=1"), line(1, "/p?id=2")], LogOptions(keep_query=True))
    assert pages(sessions) == [["/p?id=1", "/p?id=2"]]


def test_the_median_size_counts_full_responses_only() -> None:
    lines = [line(i, "/", size=size) for i, size in enumerate([100, 300, 200])]
    lines += [line(10, "/", status=304, size=0), line(11, "/", size=0, status=206)]
    lines += [line(12, "/never-200", status=304)]
    _, log = read(lines)
    assert log.sizes.median("/") == 200
    assert log.sizes.median("/never-200") is None
    assert log.sizes.median("/unknown") is None


def test_the_median_of_a_much_requested_item_stays_close() -> None:
    lines = [line(i, "/big", size=1000 + (i % 101)) for i in range(5000)]
    _, log = read(lines)
    median = log.sizes.median("/big")
    assert median is not None and 1030 <= median <= 1070


def test_reading_is_streaming_memory_is_bounded_by_open_sessions() -> None:
    consumed = 0
    log = AccessLog(LogOptions(session_gap_s=60))

    def visitors() -> Iterator[str]:
        nonlocal consumed
        for n in range(20_000):  # a new visitor every second, one page each
            consumed += 1
            yield line(n, "/", host=f"10.1.{n // 256 % 256}.{n % 256}")

    largest = 0
    sessions = log.sessions(visitors(), "stream")
    first = next(sessions)
    assert first.pages[0].path == "/" and consumed < 20_000  # out before the end of the input
    for _ in sessions:
        largest = max(largest, log.open_sessions)
    assert largest < 2000  # about gap + sweep interval, never the 20,000 visitors


def test_one_line_stamped_in_the_future_does_not_cut_every_open_session() -> None:
    """A line with a wild date (a skewed clock in a merged log) must not close open sessions:
    here it is the 1,000th kept request, where the reader looks for idle sessions."""
    lines = [line(10 * (n // 10), f"/p{n}", host=f"10.3.0.{n % 10}") for n in range(3600)]
    lines[999] = line(10 * 365 * 86400, "/from-the-future", host="10.9.9.9")
    sessions, _ = read(lines)
    assert len(sessions) == 11  # the ten visitors' one session each, and the stray line


def test_gzip_is_told_by_its_magic_bytes_not_its_name(tmp_path: Path) -> None:
    lines = [line(0, "/"), line(1, "/app.js"), line(2, "/b")]
    text = "\n".join(lines) + "\n"
    zipped = tmp_path / "access.log"  # gzip without the .gz
    zipped.write_bytes(gzip.compress(text.encode()))
    plain = tmp_path / "access.log.gz"  # plain text with the .gz
    plain.write_text(text)
    for path in (zipped, plain):
        log = AccessLog()
        assert pages(list(log.read(path))) == [["/", "/b"]]
        assert log.counts.bad == 0


def test_a_pipe_is_read_too(tmp_path: Path) -> None:
    """`zstdcat access.log.zst | foresight eval --log /dev/stdin`: a file that cannot seek."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = gzip.compress(("\n".join([line(0, "/"), line(1, "/app.js"), line(2, "/b")])).encode())
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    log = AccessLog()
    seen: list[int] = []
    assert pages(list(log.read(fifo, advance=seen.append))) == [["/", "/b"]]
    writer.join()
    assert log.counts.bad == 0


def test_a_truncated_gzip_keeps_what_it_read_and_counts_the_damage(tmp_path: Path) -> None:
    lines = [line(i, f"/p{i}") for i in range(2000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    log = AccessLog()
    sessions = list(log.read(path))
    assert 0 < sum(len(s.pages) for s in sessions) < 2000
    assert log.counts.bad >= 1
    assert any("gzip" in loc and loc.startswith(f"{path}:") for loc in log.counts.bad_locations)


def test_progress_reports_the_bytes_of_the_file_read(tmp_path: Path) -> None:
    path = tmp_path / "a.log.gz"
    path.write_bytes(gzip.compress("\n".join(line(i, "/") for i in range(10_000)).encode()))
    seen: list[int] = []
    list(AccessLog().read(path, advance=seen.append))
    assert sum(seen) == path.stat().st_size


def test_the_split_puts_the_last_part_of_the_time_span_in_test() -> None:
    lines = [line(h * 3600, f"/p{h}", host=f"10.2.0.{h}") for h in range(10)]
    sessions, _ = read(lines)
    split = split_sessions(sessions, test_fraction=0.2)
    assert [s.pages[0].path for s in split.train] == [f"/p{h}" for h in range(8)]
    assert [s.pages[0].path for s in split.test] == ["/p8", "/p9"]
    assert split.cut == pytest.approx(T0 + 7.2 * 3600)


def test_a_session_that_starts_before_the_cut_stays_whole_in_train() -> None:
    lines = [line(0, "/a"), line(100, "/b"), line(200, "/c"), line(300, "/d")]
    lines.append(line(400, "/z", host="10.9.9.9"))
    split = split_sessions(read(lines)[0], test_fraction=0.5)
    assert pages(split.train) == [["/a", "/b", "/c", "/d"]]
    assert pages(split.test) == [["/z"]]


@given(st.text(max_size=300))
def test_any_line_is_read_or_refused_never_raises(text: str) -> None:
    assert isinstance(parse_line(text), Hit | str)


FIELDS = ["10.0.0.1", "-", "-", "[10/Oct/2000:13:55:36 -0700]", '"GET / HTTP/1.0"', "200", "2326"]
FIELDS += ['"https://example.com/"', '"Mozilla/5.0"']


@given(st.integers(0, len(FIELDS) - 1), st.text(max_size=40))
def test_a_line_with_any_field_replaced_is_read_or_refused(at: int, text: str) -> None:
    fields = list(FIELDS)
    fields[at] = text
    result = parse_line(" ".join(fields))
    assert isinstance(result, Hit | str)
    if isinstance(result, Hit):
        assert result.size >= 0 and 100 <= result.status <= 599


@given(st.lists(st.text(max_size=200), max_size=30), st.integers(0, 30))
def test_garbage_among_good_lines_never_raises_and_every_line_is_counted(
    garbage: list[str], at: int
) -> None:
    lines = [g.replace("\n", " ") for g in garbage]
    lines.insert(min(at, len(lines)), line(0, "/"))
    _, log = read(lines)
    assert log.counts.lines == len(lines) == log.counts.good + log.counts.bad
    assert log.counts.good >= 1


@given(
    st.integers(0, 2_000_000_000),
    st.sampled_from(["/", "/a/b", "/x.css", "/q?z=1"]),
    st.integers(100, 599),
    st.integers(0, 10**9),
    st.one_of(st.none(), st.text(st.characters(codec="ascii", exclude_characters='"\\\n\r'))),
    st.integers(-12 * 60, 14 * 60),
)
def test_what_the_writer_writes_the_reader_reads(
    t: int, path: str, status: int, size: int, agent: str | None, tz_minutes: int
) -> None:
    text = format_line("h", float(t), path, status=status, size=size, agent=agent, tz=tz_minutes)
    hit = parse_line(text)
    assert isinstance(hit, Hit), text
    assert (hit.time, hit.target, hit.status, hit.size) == (t, path, status, size)
    assert hit.agent == agent


def test_the_module_examples_run() -> None:
    assert doctest.testmod(producers.accesslog).failed == 0
    assert doctest.testmod(producers.logline).failed == 0
