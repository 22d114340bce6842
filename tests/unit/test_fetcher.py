"""The origin fetcher refuses escapes and enforces its limits, against a loopback origin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from consumers.fetcher import Fetcher, FetcherConfig, FetchFailed, FetchRefused, NotAtOrigin


class Origin:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []

    async def content(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        item = request.match_info["id"]
        if item == "slow":
            await asyncio.sleep(2)
        if item == "huge":
            return web.Response(body=b"x" * 5000)
        if item == "gone":
            raise web.HTTPNotFound()
        if item == "broken":
            raise web.HTTPServiceUnavailable()
        if item == "away":
            raise web.HTTPFound("http://example.com/steal")
        if item == "hop":
            raise web.HTTPFound("/content/page-1")
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        await asyncio.sleep(0.05)
        return web.Response(
            body=b"<html>" + item.encode() + b"</html>",
            content_type="text/html",
            headers={"ETag": '"v1"', "X-Content-Version": "3"},
        )


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Fetcher, Origin]]:
    origin = Origin()
    app = web.Application()
    app.router.add_get("/content/{id:.*}", origin.content)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        config = FetcherConfig(
            url_template=f"http://127.0.0.1:{server.port}/content/{{content_id}}",
            allowed_hosts=("127.0.0.1",),
            max_bytes=4096,
            timeout_s=0.5,
        )
        yield Fetcher(config, session), origin


async def test_fetches_with_version_etag_and_prefetch_header(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, origin = setup
    got = await fetcher.fetch("page-1")
    assert got.status == 200 and got.body == b"<html>page-1</html>"
    assert got.etag == '"v1"' and got.version == 3 and got.content_type.startswith("text/html")
    assert origin.requests[0].headers["Sec-Purpose"] == "prefetch"
    view = await fetcher.fetch("page-2", prefetch=False)
    assert view.status == 200 and "Sec-Purpose" not in origin.requests[1].headers


async def test_if_none_match_gives_304(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, _ = setup
    assert (await fetcher.fetch("page-1", etag='"v1"')).status == 304


async def test_one_fetch_in_flight_per_item(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, origin = setup
    results = await asyncio.gather(*(fetcher.fetch("popular") for _ in range(10)))
    assert len(origin.requests) == 1
    assert {r.body for r in results} == {b"<html>popular</html>"}


@pytest.mark.parametrize(
    "content_id",
    [
        "../secret",
        "a/../../etc/passwd",
        "/etc/passwd",
        "a/./b",
        "a%2F..%2Fb",
        "http://evil/x",
        "a\\b",
        "a?b=c",
        "a#frag",
        "a b",
        "",
        "x" * 300,
        "a//b",
    ],
)
async def test_ids_that_could_escape_are_refused(
    setup: tuple[Fetcher, Origin], content_id: str
) -> None:
    fetcher, origin = setup
    with pytest.raises(FetchRefused):
        await fetcher.fetch(content_id)
    assert origin.requests == []


async def test_redirect_to_another_host_is_refused(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, _ = setup
    with pytest.raises(FetchRefused, match="allow-listed"):
        await fetcher.fetch("away")


async def test_redirect_within_the_origin_is_followed(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, _ = setup
    assert (await fetcher.fetch("hop")).body == b"<html>page-1</html>"


async def test_size_and_time_limits_hold(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, _ = setup
    with pytest.raises(FetchFailed, match="over 4096"):
        await fetcher.fetch("huge")
    with pytest.raises(FetchFailed, match="Timeout"):
        await fetcher.fetch("slow")


async def test_side_effect_urls_are_never_prefetched(setup: tuple[Fetcher, Origin]) -> None:
    fetcher, origin = setup
    with pytest.raises(FetchRefused, match="no-prefetch"):
        await fetcher.fetch("account/logout")
    assert origin.requests == []


async def test_content_the_origin_does_not_have_is_refused_not_failed(
    setup: tuple[Fetcher, Origin],
) -> None:
    fetcher, _ = setup
    # A node answers a refused id 404 and a failed fetch 502: a missing page is the former.
    with pytest.raises(NotAtOrigin):
        await fetcher.fetch("gone", prefetch=False)
    with pytest.raises(FetchFailed):
        await fetcher.fetch("broken", prefetch=False)
