"""Fetch content from the origin, safely: allow-listed URLs only, bounded, one fetch per item.

A content id never becomes an arbitrary URL. It is checked, percent-encoded into the
configured URL template, and the result must still be on an allow-listed host under the
template's path; redirects are followed only to allow-listed hosts. Bodies are read with a size
cap and a time limit, conditional requests use If-None-Match, prefetches carry
``Sec-Purpose: prefetch`` so that the origin can tell them from real views, and concurrent
requests for the same item share one fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from yarl import URL

_BAD_ID = re.compile(r"(^|/)\.\.?(/|$)|[\\%?#\s]|^/|//")


class FetchRefused(ValueError):
    """The content id or the URL it leads to is not allowed; nothing was fetched."""


class FetchFailed(RuntimeError):
    """The origin did not give the content (status, size, time or transport)."""


class NotAtOrigin(FetchRefused):
    """The origin has no such content (404 or 410): a request for it is answered 404, as a
    refused id is, not as an origin failure."""


@dataclass(frozen=True)
class FetcherConfig:
    url_template: str = "http://127.0.0.1:8701/content/{content_id}"
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    no_prefetch_patterns: tuple[str, ...] = (r"(^|/)(logout|signout|cart|checkout|delete)",)
    max_bytes: int = 2 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3


@dataclass(frozen=True)
class Fetched:
    content_id: str
    status: int  # 200, or 304 when the held ETag is still current
    body: bytes
    etag: str | None
    content_type: str
    version: int | None  # the origin's X-Content-Version, when it sends one

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


class Fetcher:
    """One per cache node: an aiohttp session and the single-flight table."""

    def __init__(self, config: FetcherConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session
        self._no_prefetch = [re.compile(p) for p in config.no_prefetch_patterns]
        self._base = URL(config.url_template.split("{content_id}")[0])
        self._in_flight: dict[tuple[str, str | None, bool], asyncio.Future[Fetched]] = {}

    def url_for(self, content_id: str) -> URL:
        """The origin URL of an item, or FetchRefused when the id could escape the template."""
        if not content_id or len(content_id) > 256 or _BAD_ID.search(content_id):
            raise FetchRefused(f"content id {content_id!r} is not a safe path")
        encoded = quote(content_id, safe="/-._~:@+=")
        url = URL(self.config.url_template.replace("{content_id}", encoded), encoded=True)
        self._check(url)
        return url

    def _check(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or url.host not in self.config.allowed_hosts:
            raise FetchRefused(f"{url} is not on an allow-listed origin")
        if url.host != self._base.host or url.port != self._base.port:
            raise FetchRefused(f"{url} left the configured origin")
        if not url.raw_path.startswith(self._base.raw_path):
            raise FetchRefused(f"{url} is outside {self._base.raw_path}")

    def may_prefetch(self, content_id: str) -> bool:
        """False for side-effect URLs (logout, cart, ...): those are never prefetched."""
        return not any(p.search(content_id) for p in self._no_prefetch)

    async def fetch(
        self, content_id: str, *, etag: str | None = None, prefetch: bool = True
    ) -> Fetched:
        """Fetch one item; concurrent calls for the same item share the same request."""
        if prefetch and not self.may_prefetch(content_id):
            raise FetchRefused(f"{content_id!r} matches a no-prefetch pattern")
        url = self.url_for(content_id)
        key = (content_id, etag, prefetch)
        running = self._in_flight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._get(content_id, url, etag, prefetch)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._in_flight[key]

    async def _get(self, content_id: str, url: URL, etag: str | None, prefetch: bool) -> Fetched:
        headers = {"Accept": "*/*"}
        if prefetch:
            headers["Sec-Purpose"] = "prefetch"
        if etag:
            headers["If-None-Match"] = etag
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            for _hop in range(self.config.max_redirects + 1):
                async with self._session.get(
                    url, headers=headers, allow_redirects=False, timeout=timeout
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location", "")
                        url = url.join(URL(location))
                        self._check(url)
                        continue
                    return await self._read(content_id, response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchFailed(f"{content_id}: {type(exc).__name__}: {exc}") from exc
        raise FetchFailed(f"{content_id}: more than {self.config.max_redirects} redirects")

    async def _read(self, content_id: str, response: aiohttp.ClientResponse) -> Fetched:
        etag = response.headers.get("ETag")
        version_header = response.headers.get("X-Content-Version")
        version = int(version_header) if version_header and version_header.isdigit() else None
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        if response.status == 304:
            return Fetched(content_id, 304, b"", etag, content_type, version)
        if response.status in (404, 410):
            raise NotAtOrigin(f"{content_id}: origin answered {response.status}")
        if response.status != 200:
            raise FetchFailed(f"{content_id}: origin answered {response.status}")
        declared = response.content_length
        if declared is not None and declared > self.config.max_bytes:
            raise FetchFailed(f"{content_id}: {declared} bytes is over {self.config.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.config.max_bytes:
                raise FetchFailed(f"{content_id}: body is over {self.config.max_bytes} bytes")
            chunks.append(chunk)
        return Fetched(content_id, 200, b"".join(chunks), etag, content_type, version)
