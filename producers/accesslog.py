"""Web server access logs read as visitors' sessions of page views, streaming.

Lines (Common or Combined Log Format, plain or gzip) are read and parsed by
producers/logline.py. A client is the host, plus a hash of the user agent where the line has one.
Kept: GET requests answered 2xx or 304, not from a robot or health check. A request whose path
ends in a subresource extension (stylesheet, script, image, font, media) belongs to the page
view that loaded it: the page its Referer names (directly, or through a stylesheet), else the
client's latest page view if within ``attach_window_s``. Pages split into sessions at an
inactivity gap per client. A bad line is counted with ``file:line``, never raised.

Memory: the clients' open sessions (a session is emitted once its client has been idle for the
gap) and a bounded sample of sizes per item. docs/access-logs.md explains every choice.

>>> from producers.logline import format_line
>>> log = AccessLog()
>>> lines = [format_line("10.0.0.1", 0.0, "/", size=512, agent="Firefox"),
...          format_line("10.0.0.1", 1.0, "/site.css", size=90, agent="Firefox"), "garbage"]
>>> [(p.path, [r.path for r in p.subresources]) for s in log.sessions(lines) for p in s.pages]
[('/', ['/site.css'])]
>>> log.counts.bad_locations
['-:3: not in Common or Combined Log Format']
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

from producers.logline import Hit, extension_of, item_of, parse_line, read_lines

#: Extensions of a page's subresources; any other path (none, .html, .php, .pdf) is a page.
SUBRESOURCE_EXTENSIONS = frozenset(
    {
        *("css", "js", "mjs", "map", "json", "wasm"),
        *("png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp"),
        *("woff", "woff2", "ttf", "otf", "eot"),
        *("mp4", "webm", "mp3", "ogg", "wav"),
    }
)
#: Robots and health checks: an entry starting with "/" is a path (it and what lies under it),
#: any other a case-insensitive substring of the user agent.
ROBOTS = (
    *("bot", "crawl", "spider", "slurp", "mediapartners", "facebookexternalhit"),
    *("headlesschrome", "lighthouse", "pingdom", "uptime", "monitor", "kube-probe"),
    *("healthcheck", "googlehc", "curl/", "wget/", "python-", "go-http-client", "java/"),
    *("libwww", "httpclient"),
    *("/healthz", "/health", "/ping", "/robots.txt", "/server-status", "/.well-known"),
)
SWEEP_EVERY = 1000  # kept requests between two looks for idle sessions to emit
SAMPLE = 63  # sizes kept per item for its median (exact up to this many full responses)


class AccessLogError(ValueError):
    """The file holds no access-log line at all; the message says which and why."""


@dataclass(frozen=True)
class LogOptions:
    """How lines become sessions; the defaults are argued in docs/access-logs.md."""

    session_gap_s: float = 1800.0
    attach_window_s: float = 10.0
    subresource_extensions: frozenset[str] = SUBRESOURCE_EXTENSIONS
    robots: tuple[str, ...] = ROBOTS
    keep_query: bool = False
    bad_locations: int = 20  # first bad lines kept with their file:line

    def __post_init__(self) -> None:
        if self.session_gap_s <= 0 or self.attach_window_s < 0 or self.bad_locations < 0:
            raise ValueError("the session gap must be > 0, the window and bad_locations >= 0")


@dataclass
class LogCounts:
    """What reading saw. lines = good + bad; the filtered ones are among the good."""

    lines: int = 0
    good: int = 0
    bad: int = 0
    robots: int = 0
    method: int = 0
    status: int = 0
    pages: int = 0
    subresources: int = 0
    orphans: int = 0  # subresources with no page view to belong to
    sessions: int = 0
    bad_locations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        fields = asdict(self)
        fields["filtered"] = {k: fields.pop(k) for k in ("robots", "method", "status")}
        return fields


@dataclass(frozen=True, slots=True)
class Subresource:
    path: str
    time: float
    size: int


@dataclass(slots=True)
class PageView:
    """A page and what it loaded, in log order, with the bytes of each response."""

    path: str
    time: float
    size: int
    subresources: list[Subresource] = field(default_factory=list)


@dataclass(slots=True)
class Session:
    """A client's page views, by time; ``serial`` numbers sessions in the order they opened."""

    client: str
    serial: int
    pages: list[PageView]

    @property
    def id(self) -> str:
        return f"{self.client}/{self.serial}"


class ItemSizes:
    """Median bytes per item over its full (status 200) responses, from a bounded sample."""

    def __init__(self, seed: int = 0) -> None:
        self._samples: dict[str, list[int]] = {}
        self._seen: dict[str, int] = {}
        self._random = random.Random(seed)

    def add(self, item: str, size: int) -> None:
        sample = self._samples.setdefault(item, [])
        seen = self._seen[item] = self._seen.get(item, 0) + 1
        if len(sample) < SAMPLE:
            sample.append(size)
        elif (slot := self._random.randrange(seen)) < SAMPLE:  # reservoir sampling
            sample[slot] = size

    def median(self, item: str) -> int | None:
        """The item's median size, None when it never had a full response."""
        sample = self._samples.get(item)
        return int(statistics.median_low(sample)) if sample else None

    def medians(self) -> dict[str, int]:
        return {item: int(statistics.median_low(s)) for item, s in self._samples.items()}


@dataclass
class _Open:
    session: Session
    last: float
    owner: dict[str, PageView] = field(default_factory=dict)  # path -> page that loaded it


class AccessLog:
    """Reads lines into sessions; ``counts`` and ``sizes`` accumulate over every read."""

    def __init__(self, options: LogOptions | None = None) -> None:
        self.options = options or LogOptions()
        self.counts = LogCounts()
        self.sizes = ItemSizes()
        agents = tuple(r.lower() for r in self.options.robots if not r.startswith("/"))
        paths = [re.escape(r.rstrip("/")) for r in self.options.robots if r.startswith("/")]
        # a log repeats a few hundred user agents: look each up once
        self._robot_agent = lru_cache(maxsize=4096)(lambda a: any(r in a.lower() for r in agents))
        self._robot_path = re.compile(f"(?:{'|'.join(paths)})(?:[/?]|$)", re.I) if paths else None
        self._open: dict[str, _Open] = {}  # in order of last activity, oldest first
        self._serial = 0
        self._kept = 0
        self._recent: deque[float] = deque(maxlen=5)  # times of the last kept requests

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def read(self, path: Path, advance: Callable[[int], None] | None = None) -> Iterator[Session]:
        """Sessions of a plain or gzip file; ``advance(n)`` as n more bytes of it are read."""
        source = str(path)
        yield from self.sessions(read_lines(path, partial(self._bad, source), advance), source)

    def sessions(self, lines: Iterable[str], source: str = "-") -> Iterator[Session]:
        """Sessions of ``lines`` (from ``source``, for bad lines' locations), as they close."""
        for number, line in enumerate(lines, 1):
            self.counts.lines += 1
            hit = parse_line(line)
            if isinstance(hit, str):
                self._bad(source, number, hit)
                continue
            self.counts.good += 1
            yield from self._take(hit)
        yield from self._sweep(float("inf"))
        if not self.counts.good:
            first = self.counts.bad_locations[:1]
            raise AccessLogError(
                f"{source}: no line in Common or Combined Log Format among "
                f"{self.counts.lines:,} (the first: {first[0]})"
                if first
                else f"{source}: empty, no access-log line"
            )

    def _bad(self, source: str, number: int, reason: str) -> None:
        self.counts.bad += 1
        if len(self.counts.bad_locations) < self.options.bad_locations:
            self.counts.bad_locations.append(f"{source}:{number}: {reason}")

    def _take(self, hit: Hit) -> Iterator[Session]:
        counts, options = self.counts, self.options
        item = item_of(hit.target, options.keep_query) if hit.method else None
        if self._is_robot(hit.agent, item):
            counts.robots += 1
        elif hit.method != "GET" or item is None:
            counts.method += 1
        elif not (200 <= hit.status < 300 or hit.status == 304):
            counts.status += 1
        else:
            if hit.status == 200:
                self.sizes.add(item, hit.size)
            client = hit.host if hit.agent is None else f"{hit.host}#{_agent_tag(hit.agent)}"
            if extension_of(item) in options.subresource_extensions:
                self._attach(client, item, hit)
            else:
                yield from self._page(client, item, hit)
            self._kept += 1
            self._recent.append(hit.time)
            if self._kept % SWEEP_EVERY == 0:
                # The clock is the median of the last few lines' times, not the latest seen:
                # one line stamped in the future would otherwise close every open session.
                clock = statistics.median(self._recent)
                yield from self._sweep(clock - options.session_gap_s)

    def _is_robot(self, agent: str | None, item: str | None) -> bool:
        if agent and self._robot_agent(agent):
            return True
        return bool(item and self._robot_path and self._robot_path.match(item))

    def _page(self, client: str, item: str, hit: Hit) -> Iterator[Session]:
        state = self._open.pop(client, None)
        if state is not None and hit.time - state.last > self.options.session_gap_s:
            yield self._close(state)
            state = None
        if state is None:
            self._serial += 1
            state = _Open(Session(client, self._serial, []), hit.time)
        page = PageView(item, hit.time, hit.size)
        state.session.pages.append(page)
        state.owner[item] = page
        state.last = max(state.last, hit.time)
        self._open[client] = state  # (re)inserted last: the dict stays oldest first
        self.counts.pages += 1

    def _attach(self, client: str, item: str, hit: Hit) -> None:
        state = self._open.get(client)
        page = None
        if state is not None and hit.time - state.last <= self.options.session_gap_s:
            referer = item_of(hit.referer, self.options.keep_query) if hit.referer else None
            page = state.owner.get(referer) if referer else None
            latest = state.session.pages[-1]
            if page is None and hit.time - latest.time <= self.options.attach_window_s:
                page = latest
        if state is None or page is None:
            self.counts.orphans += 1
            return
        page.subresources.append(Subresource(item, hit.time, hit.size))
        state.owner[item] = page
        state.last = max(state.last, hit.time)
        self._open[client] = self._open.pop(client)
        self.counts.subresources += 1

    def _sweep(self, horizon: float) -> Iterator[Session]:
        """Emit the sessions idle since before ``horizon`` (all of them at +inf)."""
        while self._open:
            client, state = next(iter(self._open.items()))
            if state.last >= horizon:
                break
            del self._open[client]
            yield self._close(state)

    def _close(self, state: _Open) -> Session:
        self.counts.sessions += 1
        state.session.pages.sort(key=lambda page: page.time)
        return state.session


@lru_cache(maxsize=1024)
def _agent_tag(agent: str) -> str:
    """A short stable tag of a user agent, to tell apart browsers behind one address."""
    return hashlib.blake2b(agent.encode(), digest_size=4).hexdigest()


class Split(NamedTuple):
    train: list[Session]
    test: list[Session]
    cut: float  # sessions whose first page view is at or after it are the test


def split_sessions(sessions: Iterable[Session], test_fraction: float = 0.2) -> Split:
    """Sessions by first page view, the last ``test_fraction`` of the time span as the test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("the test fraction must lie between 0 and 1")
    ordered = sorted((s for s in sessions if s.pages), key=lambda s: s.pages[0].time)
    if not ordered:
        return Split([], [], 0.0)
    first = ordered[0].pages[0].time
    last = max(s.pages[-1].time for s in ordered)
    cut = first + (last - first) * (1.0 - test_fraction)
    train = [s for s in ordered if s.pages[0].time < cut]
    return Split(train, ordered[len(train) :], cut)
