"""The synthetic catalogue: deterministic, realistically mixed and sized, and valid bodies."""

from __future__ import annotations

import hashlib
import json
import statistics
import struct
import zlib
from collections import Counter
from html.parser import HTMLParser

import pytest

from origin.catalog import (
    MAX_ID_LENGTH,
    MAX_SIZE,
    MIN_SIZE,
    PNG_SIGNATURE,
    Catalog,
    Content,
    Kind,
    is_content_id,
    render,
    spec_of,
)

# Item ids like the datasets' (numeric) and like other catalogues' (prefixed, with slashes).
IDS = [str(214_536_502 + 7919 * i) for i in range(2000)] + [f"sku/{i}-a" for i in range(2000)]


def fresh(content_id: str, version: int) -> Content:
    """Render without the cache, so that a second call really builds the body again."""
    return render.__wrapped__(content_id, version)


def first_of(kind: Kind, prefix: str = "") -> str:
    return next(f"{prefix}{n}" for n in range(100_000) if spec_of(f"{prefix}{n}").kind == kind)


KINDS: tuple[Kind, ...] = ("html", "json", "png", "jpeg")


# --- Determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_id_and_version_give_the_same_bytes_etag_type_and_size(kind: Kind) -> None:
    content_id = first_of(kind, "item-")
    one, two = fresh(content_id, 3), fresh(content_id, 3)
    assert one == two
    assert one.body is not two.body  # really built twice, not one cached object
    assert spec_of(content_id) == spec_of(content_id)


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_version_changes_the_body_and_etag_but_not_the_type_or_size(kind: Kind) -> None:
    content_id = first_of(kind, "item-")
    one, two = fresh(content_id, 1), fresh(content_id, 2)
    assert one.body != two.body and one.etag != two.etag
    assert (one.kind, one.size) == (two.kind, two.size) == (kind, spec_of(content_id).size)


def test_etag_is_the_quoted_sha256_of_the_body() -> None:
    content = fresh("214536502", 1)
    assert content.etag == f'"{hashlib.sha256(content.body).hexdigest()}"'


def test_bodies_are_exactly_the_size_of_their_spec() -> None:
    for content_id in IDS[::10]:
        assert fresh(content_id, 1).size == spec_of(content_id).size


@pytest.mark.parametrize("kind", KINDS)
def test_the_longest_ids_still_fit_the_smallest_size(kind: Kind) -> None:
    content_id = first_of(kind, "x" * (MAX_ID_LENGTH - 6))
    for version in (1, 10**9):
        content = fresh(content_id, version)
        assert content.size == spec_of(content_id).size >= MIN_SIZE


# --- Mix and sizes ---------------------------------------------------------------------------


def test_type_mix_is_half_html_then_json_then_images() -> None:
    shares = Counter(spec_of(content_id).kind for content_id in IDS)
    n = len(IDS)
    assert abs(shares["html"] / n - 0.5) < 0.03
    assert abs(shares["json"] / n - 0.3) < 0.03
    assert abs(shares["png"] / n - 0.1) < 0.02
    assert abs(shares["jpeg"] / n - 0.1) < 0.02


def test_sizes_are_between_2_kib_and_300_kib_with_a_heavy_tail() -> None:
    sizes = sorted(spec_of(content_id).size for content_id in IDS)
    assert sizes[0] == MIN_SIZE and sizes[-1] == MAX_SIZE  # both clips are reached
    median = statistics.median(sizes)
    assert 8_000 < median < 40_000  # a typical item is some tens of KB
    deciles = statistics.quantiles(sizes, n=10)
    assert deciles[-1] / deciles[0] > 8  # spread over an order of magnitude
    big = sum(size > 100 * 1024 for size in sizes) / len(sizes)
    assert 0.02 < big < 0.2  # a tail of heavy items, but not most of them


def test_images_are_heavier_than_json_records() -> None:
    by_kind: dict[str, list[int]] = {}
    for content_id in IDS:
        spec = spec_of(content_id)
        by_kind.setdefault(spec.kind, []).append(spec.size)
    medians = {kind: statistics.median(sizes) for kind, sizes in by_kind.items()}
    assert medians["json"] < medians["html"] < medians["png"] <= medians["jpeg"]


# --- Bodies ----------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attributes: dict[str, str | None] = {}
        self.open_tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.update(attrs)
        if tag not in ("meta",):
            self.open_tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open_tags.pop() == tag


def test_html_is_a_well_formed_page_naming_the_item_and_version() -> None:
    content_id = first_of("html", "sku/")
    content = fresh(content_id, 7)
    text = content.body.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert parser.open_tags == []
    assert parser.attributes["data-content-id"] == content_id
    assert parser.attributes["data-version"] == "7"
    assert content.media_type.startswith("text/html")


def test_json_is_a_product_record() -> None:
    content_id = first_of("json")
    record = json.loads(fresh(content_id, 4).body)
    assert record["content_id"] == content_id and record["version"] == 4
    assert isinstance(record["price"], float) and record["reviews"]


def _png_chunks(body: bytes) -> list[tuple[bytes, bytes]]:
    assert body.startswith(PNG_SIGNATURE)
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(body):
        (length,) = struct.unpack(">I", body[at : at + 4])
        kind, data = body[at + 4 : at + 8], body[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", body[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        chunks.append((kind, data))
        at += 12 + length
    assert at == len(body)
    return chunks


@pytest.mark.parametrize("nth", [0, 1, 2])
def test_png_is_valid(nth: int) -> None:
    content_id = first_of("png", f"img{nth}-")
    chunks = _png_chunks(fresh(content_id, 2).body)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    pixels = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    row = 1 + 3 * width
    assert len(pixels) == height * row
    assert all(pixels[y * row] == 0 for y in range(height))  # a known filter type per row
    assert width > 1 and height > 1


def test_jpeg_is_a_sequence_of_well_formed_segments() -> None:
    content_id = first_of("jpeg")
    body = fresh(content_id, 5).body
    assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
    at, markers = 2, []
    while body[at + 1] != 0xDA:  # up to the start of scan
        assert body[at] == 0xFF
        markers.append(body[at + 1])
        (length,) = struct.unpack(">H", body[at + 2 : at + 4])
        if body[at + 1] == 0xC0:
            _, height, width, components = struct.unpack(">BHHB", body[at + 4 : at + 10])
            assert (width, height, components) != (0, 0, 0)
        at += 2 + length
    assert {0xE0, 0xDB, 0xC0, 0xC4}.issubset(markers)  # JFIF, tables, frame, Huffman
    (length,) = struct.unpack(">H", body[at + 2 : at + 4])
    scan = body[at + 2 + length : -2]
    assert scan and all(scan[i + 1] == 0 for i in range(len(scan) - 1) if scan[i] == 0xFF)
    assert b"version 5" in body


# --- Ids and versions ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["214536502", "a/b", "a..b", "x:y@z+1=2-3.4", "A" * 256])
def test_well_formed_ids(value: str) -> None:
    assert is_content_id(value)


UNSAFE_IDS = ["", "a/../b", "a/..", "a/./b", "a//b", "a/", "../a", "/a", ".a", "a\\b", "a b"]


@pytest.mark.parametrize("value", [*UNSAFE_IDS, "é", "A" * 257])
def test_unsafe_or_malformed_ids(value: str) -> None:
    assert not is_content_id(value)


def test_versions_start_at_1_and_bump_one_item_only() -> None:
    catalog = Catalog()
    before = catalog.get("42")
    assert before is not None and before.version == 1
    bumped = catalog.bump("42")
    assert bumped is not None and bumped.version == 2 and bumped.etag != before.etag
    assert catalog.get("42") == bumped
    assert catalog.version("43") == 1
    assert Catalog().version("42") == 1  # state is per catalogue


def test_missing_and_malformed_ids_have_no_content_and_no_version() -> None:
    catalog = Catalog(missing={"gone"})
    for content_id in ("gone", "a/../b"):
        assert catalog.get(content_id) is None
        assert catalog.bump(content_id) is None
        assert catalog.version(content_id) == 1
