"""An access log as a replay's input: its visitors' page views as sessions, its pages' sizes.

The log is read by :mod:`producers.accesslog` and split by time as ``foresight eval --log``
splits it (the earlier sessions train the model, the later ones are played by agents). What
the replay needs is written into its run folder, so the rest of the replay reads it as it
reads any session file:

- ``train.tsv`` and ``test.tsv``: SessionId ItemId Time, a session's client id ``log-<n>``
  (its number in the log: no address reaches Kafka) and each page as a content id;
- ``sizes.json``: each page's content id and the bytes the origin serves for it.

A page view is one request whose bytes are what loading the page took: the page's median
full response (the reader's median over its 200s) plus the median, over the page's views, of
the bytes its subresources took in that view as logged (a stylesheet the browser already held
and revalidated, a 304, took none). Prefetching a page then carries the page and what it
loads, which is what its visitor waits for. The alternative, subresources as requests of
their own, would need the worker to push them with their page, which it cannot know.

An item is at most ``max_bytes`` (what a cache node fetches); larger pages are counted.

A content id must be an identifier that is a safe path (``origin.catalog.is_content_id``), so
a path is written ``p/`` + its segments, each byte outside ``[A-Za-z0-9._:@+-]`` as ``=XX``
and an empty segment as ``=``; paths too long for an id are ``h/`` + a hash. Segments stay
``/``-separated, so patterns on paths (``FORESIGHT_NO_PREFETCH_PATTERNS``) still apply.

>>> content_id_of("/"), content_id_of("/news/1/"), content_id_of("/article.php?id=4")
('p/=', 'p/news/1/=', 'p/article.php=3Fid=3D4')
>>> path_of("p/article.php=3Fid=3D4"), path_of("214536502")
('/article.php?id=4', '214536502')
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from origin.catalog import MAX_ID_LENGTH
from producers.accesslog import AccessLog, ItemSizes, LogOptions, PageView, Session, split_sessions

_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+-")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")


def _segment(text: str) -> str:
    if text in ("", ".", ".."):
        return {"": "=", ".": "=2E", "..": "=2E=2E"}[text]
    return "".join(chr(byte) if byte in _KEPT else f"={byte:02X}" for byte in text.encode("utf-8"))


def content_id_of(path: str) -> str:
    """The content id of a page's path (an injective mapping, see the module's docstring)."""
    if path.startswith("/"):
        content_id = "p/" + "/".join(_segment(s) for s in path[1:].split("/"))
        if len(content_id) <= MAX_ID_LENGTH:
            return content_id
    # too long, or a request target that is no path (``GET page``, which "p/" would confuse
    # with ``GET /page``)
    return "h/" + hashlib.blake2b(path.encode("utf-8"), digest_size=16).hexdigest()


def path_of(content_id: str) -> str:
    """The path a content id stands for: itself when it is no page's id (or a hashed one)."""
    if not content_id.startswith("p/"):
        return content_id
    segments = content_id[2:].split("/")

    def unescape(segment: str) -> str:
        if segment == "=":
            return ""
        raw = _ESCAPED.sub(lambda m: chr(int(m[1], 16)), segment)
        return raw.encode("latin-1").decode("utf-8", "replace")

    return "/" + "/".join(unescape(s) for s in segments)


class PageWeights:
    """Per page, a bounded sample of the bytes its views' subresources took."""

    def __init__(self) -> None:
        self._loads = ItemSizes(seed=1)

    def add(self, page: PageView) -> None:
        self._loads.add(page.path, sum(sub.size for sub in page.subresources))

    def size(self, page: str, page_median: int | None) -> int:
        """The page's median full response (0 when it never had one) plus its median load."""
        return (page_median or 0) + (self._loads.median(page) or 0)


@dataclass(frozen=True)
class SiteFiles:
    """What :func:`write_site` wrote, and what reading the log counted."""

    train: Path
    test: Path
    sizes: Path
    summary: dict[str, Any]


def write_site(
    log: Path,
    options: LogOptions,
    test_fraction: float,
    out_dir: Path,
    max_bytes: int,
    advance: Callable[[int], None] | None = None,
) -> SiteFiles:
    """Read ``log`` and write the replay's input into ``out_dir`` (see the module's docstring).

    Raises ValueError (an AccessLogError among them) when the log has no test session.
    """
    reader = AccessLog(options)
    weights = PageWeights()

    def weighed(sessions: Iterable[Session]) -> Iterator[Session]:
        for session in sessions:
            for page in session.pages:
                weights.add(page)
            yield session

    split = split_sessions(weighed(reader.read(log, advance)), test_fraction)
    if not split.test:
        raise ValueError(f"{log}: no session to replay (the test part is empty)")
    pages = {page.path for s in (*split.train, *split.test) for page in s.pages}
    medians = reader.sizes.medians()
    sizes = {content_id_of(p): weights.size(p, medians.get(p)) for p in sorted(pages)}
    capped = sum(size > max_bytes for size in sizes.values())
    sizes = {item: min(size, max_bytes) for item, size in sizes.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = SiteFiles(
        out_dir / "train.tsv", out_dir / "test.tsv", out_dir / "sizes.json", reader.counts.as_dict()
    )
    _write_sessions(split.train, files.train)
    _write_sessions(split.test, files.test)
    files.sizes.write_text(json.dumps(sizes, indent=0, sort_keys=True) + "\n")
    files.summary.update(
        test_fraction=test_fraction,
        split_time=split.cut,
        train_sessions=len(split.train),
        test_sessions=len(split.test),
        items=len(sizes),
        # Pages larger than a cache node fetches, served at that size.
        capped_items=capped,
        item_bytes_median=sorted(sizes.values())[len(sizes) // 2] if sizes else 0,
    )
    return files


def _write_sessions(sessions: Iterable[Session], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(["SessionId", "ItemId", "Time"])
        for session in sessions:
            for page in session.pages:
                out.writerow([f"log-{session.serial}", content_id_of(page.path), page.time])
