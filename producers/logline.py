"""The lines of a web server's access log: read from a file (plain or gzip), parsed (Common
and Combined Log Format) and written.

Common: ``host ident user [time] "request" status bytes``; Combined (Apache's and nginx's
default ``combined``) adds ``"referer" "user-agent"``. Fields after those (nginx's request time,
say) are ignored. Quotes and backslashes inside a quoted field are backslash-escaped, as both
servers write them. The reader is strict where a wrong value would mislead (the date, the
status, the byte count) and says why a line is refused rather than raising.

>>> hit = parse_line('127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a%20b?q HTTP/1.0" 200 -')
>>> hit.time, hit.status, hit.size, item_of(hit.target, keep_query=False)
(971211336.0, 200, 0, '/a b')
>>> parse_line('127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 2OO 5')
"bad status '2OO'"
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name.lower(): number for number, name in enumerate(_MONTH_NAMES, 1)}
# "..." with backslash escapes, as an unrolled loop: (?:[^"\\]|\\.)* is five times slower
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_LINE = re.compile(
    rf"(\S+) \S+ \S+ \[([^\]]*)\] {_QUOTED} (\S+) (\S+)(?: {_QUOTED} {_QUOTED})?(?:\s.*)?\Z",
    re.ASCII | re.DOTALL,
)
_TIME = re.compile(r"(\d\d)/([A-Za-z]{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z", re.A)
_STATUS = re.compile(r"[1-5][0-9][0-9]\Z")
_SIZE = re.compile(r"(?:-|[0-9]+)\Z")
_METHOD = re.compile(r"[A-Z]+\Z")
GZIP_MAGIC = b"\x1f\x8b"


class Hit(NamedTuple):
    """One parsed line. ``method`` is "" when the request line is not METHOD TARGET [PROTOCOL]."""

    host: str
    time: float  # epoch seconds
    method: str
    target: str
    status: int
    size: int  # bytes of the body; "-" (Apache's way of writing 0) is 0
    referer: str | None  # None when absent or "-"
    agent: str | None  # None in Common Log Format


def parse_line(line: str) -> Hit | str:
    """The line's fields, or the reason it is not an access-log line."""
    match = _LINE.match(line)
    if match is None:
        return "not in Common or Combined Log Format"
    host, stamp, request, status, size, referer, agent = match.groups()
    when = parse_time(stamp)
    if when is None:
        return f"bad date [{stamp[:40]}]"
    if not _STATUS.match(status):
        return f"bad status {status[:20]!r}"
    if not _SIZE.match(size):
        return f"bad size {size[:20]!r}"
    parts = request.split(" ")
    good_request = len(parts) in (2, 3) and _METHOD.match(parts[0])
    method, target = (parts[0], parts[1]) if good_request else ("", "")
    return Hit(
        host,
        when,
        method,
        target,
        int(status),
        0 if size == "-" else int(size),
        None if referer in (None, "-", "") else referer,
        agent,
    )


@lru_cache(maxsize=4096)  # a busy log repeats each second's stamp on many lines
def parse_time(stamp: str) -> float | None:
    """Epoch seconds of ``10/Oct/2000:13:55:36 -0700``, or None."""
    match = _TIME.match(stamp)
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        return None
    day, _, year, hour, minute, second, sign, tz_h, tz_m = match.groups()
    offset = timedelta(hours=int(tz_h), minutes=int(tz_m)) * (-1 if sign == "-" else 1)
    try:
        zone = timezone(offset)
        moment = datetime(int(year), month, int(day), int(hour), int(minute), int(second))
    except ValueError:  # day 32, hour 25, an offset of a day or more
        return None
    return moment.replace(tzinfo=zone).timestamp()


def format_line(
    host: str,
    time: float,
    path: str,
    *,
    method: str = "GET",
    status: int = 200,
    size: int = 0,
    referer: str | None = None,
    agent: str | None = None,
    tz: int = 0,
) -> str:
    """A log line, Combined when ``agent`` is given, else Common; ``tz`` in minutes east of UTC.

    For tests and synthetic logs: the values are written as given, not escaped.
    """
    local = datetime.fromtimestamp(int(time), UTC) + timedelta(minutes=tz)
    sign, tz_abs = ("-" if tz < 0 else "+"), abs(tz)
    stamp = f"{local:%d}/{_MONTH_NAMES[local.month - 1]}/{local:%Y:%H:%M:%S}"
    stamp += f" {sign}{tz_abs // 60:02d}{tz_abs % 60:02d}"
    text = f'{host} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size}'
    return text if agent is None else f'{text} "{referer or "-"}" "{agent}"'


def item_of(target: str, keep_query: bool) -> str | None:
    """The item a request target (or a Referer URL) names: its path, percent-decoded, and its
    query if ``keep_query``; None when it is not a URL."""
    if target.startswith("/") and not target.startswith("//"):  # the common case, fast
        path, _, query = target.partition("#")[0].partition("?")
    else:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. an unclosed IPv6 bracket in an absolute URL
            return None
        path, query = parts.path, parts.query
    if "%" in path:
        path = unquote(path, errors="replace")
    path = path or "/"
    return f"{path}?{query}" if keep_query and query else path


def extension_of(item: str) -> str:
    """The lower-case extension of the item's last path segment, "" when it has none."""
    name = item.partition("?")[0].rpartition("/")[2]
    return name.rpartition(".")[2].lower() if "." in name else ""


def read_lines(
    path: Path,
    damaged: Callable[[int, str], None],
    advance: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The lines of a file, gunzipped when its first bytes say gzip (whatever its name).

    A gzip stream cut short ends the lines with ``damaged(line number, reason)``.
    ``advance(n)``: n more bytes of the file read (never called on a pipe: it has no position).
    """
    with path.open("rb") as raw:
        is_gzip = raw.peek(2)[:2] == GZIP_MAGIC  # peek, not seek: a pipe cannot seek back
        stream = gzip.GzipFile(fileobj=raw) if is_gzip else raw
        if not raw.seekable():  # nor tell where it is
            advance = None
        done = number = 0
        try:
            for number, line in enumerate(stream, 1):
                yield line.decode("utf-8", "replace").rstrip("\r\n")
                if advance is not None and number % 4096 == 0:
                    advance(raw.tell() - done)
                    done = raw.tell()
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            damaged(number + 1, f"gzip stream damaged, reading stopped ({exc})")
        if advance is not None:
            advance(raw.tell() - done)
