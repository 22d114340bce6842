"""The origin serving a site's own catalogue: each item at exactly the size it is given (an
access log's replay), any other id 404, and the sizes file read and refused as it should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from foresight.settings import Settings
from origin.catalog import Catalog, SizesFileError, read_sizes
from origin.server import OriginConfig, config_from, create_app
from schemas import ContentUpdate

SIZES = {"p/=": 24_513, "p/news/1": 187_002, "p/tiny": 40, "p/empty": 0}


class Publisher:
    async def publish(self, update: ContentUpdate) -> None:
        return None


@pytest.mark.parametrize(("content_id", "size"), sorted(SIZES.items()))
def test_each_item_is_exactly_its_size_in_every_version(content_id: str, size: int) -> None:
    catalog = Catalog(sizes=SIZES)
    first = catalog.get(content_id)
    assert first is not None and first.size == size and first.kind == "html"
    bumped = catalog.bump(content_id)
    assert bumped is not None and bumped.size == size and bumped.version == 2
    if size > 1000:  # a whole page names its item and version; a tiny one is cut short
        assert first.body != bumped.body and first.etag != bumped.etag


def test_an_id_outside_the_sites_catalogue_is_no_item() -> None:
    catalog = Catalog(missing={"p/tiny"}, sizes=SIZES)
    assert catalog.get("214536502") is None and catalog.bump("214536502") is None
    assert catalog.get("p/tiny") is None  # missing still wins


def test_the_sizes_file_is_read_and_anything_else_refused(tmp_path: Path) -> None:
    good = tmp_path / "sizes.json"
    good.write_text(json.dumps(SIZES))
    assert read_sizes(good) == SIZES
    for text in ("[1, 2]", '{"p/a": -1}', '{"p/a": 1.5}', '{"../etc": 1}', '{"p/a": 1', ""):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(SizesFileError, match=r"bad\.json"):
            read_sizes(bad)
    with pytest.raises(SizesFileError, match="nowhere"):
        read_sizes(tmp_path / "nowhere.json")


async def test_the_origin_serves_the_sizes_its_setting_names(tmp_path: Path) -> None:
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps(SIZES))
    config = config_from(Settings(origin_sizes_file=sizes, origin_latency_ms=0))
    assert config.sizes == SIZES
    assert config_from(Settings()).sizes is None
    client = TestClient(TestServer(create_app(config, Publisher())))
    await client.start_server()
    try:
        page = await client.get("/content/p/news/1")
        assert page.status == 200 and len(await page.read()) == SIZES["p/news/1"]
        assert (await client.get("/content/214536502")).status == 404
    finally:
        await client.close()


def test_without_sizes_the_synthetic_catalogue_is_served() -> None:
    assert OriginConfig().sizes is None
    assert Catalog().get("214536502") is not None
