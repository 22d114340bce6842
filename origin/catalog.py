"""A deterministic synthetic content catalogue: what the demo origin serves.

Every well-formed content id names an item. The SHA-256 of the id picks the item's type and
size, so every process and every run agrees on them without storing anything; the body is a
function of the id and the version, so one version always has the same bytes and the same
ETag. Only the versions that were bumped are kept, in memory.

The mix is roughly that of a shop: half HTML pages, 30 % JSON records, 20 % images (PNG and
JPEG), with log-normal sizes (a few KB typical, a long tail) clipped to 2 KiB .. 300 KiB.
Bodies are built from cached blocks by repetition, so a 300 KiB body costs well under 1 ms.

A catalogue can also be a site's own: ``Catalog(sizes={id: bytes})`` serves exactly those
items, each an HTML page of exactly its size (a replay of an access log gives each page the
bytes the log recorded for it, ``foresight.replay.site``); any other id answers 404.
``read_sizes`` reads such a map from the JSON file ``FORESIGHT_ORIGIN_SIZES_FILE`` names.

>>> catalog = Catalog()
>>> first = catalog.get("214536502")
>>> first.version, first.size == spec_of("214536502").size
(1, True)
>>> catalog.bump("214536502").version
2
>>> site = Catalog(sizes={"p/news": 50_000})
>>> site.get("p/news").size, site.get("p/news").media_type, site.get("214536502")
(50000, 'text/html; charset=utf-8', None)
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Literal

import msgspec

from schemas.records import IDENTIFIER_PATTERN

Kind = Literal["html", "json", "png", "jpeg"]

MIN_SIZE = 2 * 1024
MAX_SIZE = 300 * 1024
MAX_ID_LENGTH = 256

MEDIA_TYPES: dict[Kind, str] = {
    "html": "text/html; charset=utf-8",
    "json": "application/json",
    "png": "image/png",
    "jpeg": "image/jpeg",
}

# Cumulative shares: HTML 50 %, JSON 30 %, PNG 10 %, JPEG 10 %.
_MIX: tuple[tuple[Kind, float], ...] = (("html", 0.5), ("json", 0.8), ("png", 0.9), ("jpeg", 1.0))

# Log-normal sizes per kind, as (median in bytes, sigma of the log): API records are small,
# pages tens of KB, photos the heaviest; sigma around 1 gives the long tail real sites have.
_SIZES: dict[Kind, tuple[float, float]] = {
    "html": (24_000.0, 0.9),
    "json": (6_000.0, 1.0),
    "png": (40_000.0, 1.1),
    "jpeg": (60_000.0, 0.9),
}

_identifier = re.compile(IDENTIFIER_PATTERN).fullmatch
_STANDARD_NORMAL = NormalDist()


def is_content_id(value: str) -> bool:
    """Whether ``value`` is an id the origin serves: a schema identifier that is also a safe
    relative path (no empty, ``.`` or ``..`` segment), so it can never climb out of a URL."""
    if not value or len(value) > MAX_ID_LENGTH or _identifier(value) is None:
        return False
    return all(segment not in ("", ".", "..") for segment in value.split("/"))


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """What an item is, independent of its version."""

    content_id: str
    kind: Kind
    size: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]


@dataclass(frozen=True, slots=True)
class Content:
    """One version of one item, as the origin serves it."""

    content_id: str
    version: int
    kind: Kind
    body: bytes
    etag: str  # strong and quoted, as it goes in the ETag header

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]


def _unit(digest: bytes, start: int) -> float:
    """A uniform number in (0, 1) from eight bytes of a digest."""
    return (int.from_bytes(digest[start : start + 8], "big") + 0.5) / 2.0**64


def spec_of(content_id: str) -> ItemSpec:
    """The item's type and size, seeded by the SHA-256 of its id."""
    digest = hashlib.sha256(content_id.encode()).digest()
    pick = _unit(digest, 0)
    kind = next(k for k, share in _MIX if pick < share)
    median, sigma = _SIZES[kind]
    size = median * math.exp(sigma * _STANDARD_NORMAL.inv_cdf(_unit(digest, 8)))
    return ItemSpec(content_id, kind, min(MAX_SIZE, max(MIN_SIZE, round(size))))


def strong_etag(body: bytes) -> str:
    """A strong entity tag for ``body``: its SHA-256, quoted."""
    return '"' + hashlib.sha256(body).hexdigest() + '"'


def _seed(content_id: str, version: int) -> bytes:
    return hashlib.sha256(f"{content_id}\x00{version}".encode()).digest()


@functools.lru_cache(maxsize=64)
def render(content_id: str, version: int) -> Content:
    """The bytes of ``version`` of the item: the same for the same arguments, every time."""
    spec = spec_of(content_id)
    body = _BUILDERS[spec.kind](content_id, version, spec.size, _seed(content_id, version))
    return Content(content_id, version, spec.kind, body, strong_etag(body))


@functools.lru_cache(maxsize=64)
def render_sized(content_id: str, version: int, size: int) -> Content:
    """``version`` of a page of exactly ``size`` bytes (a skeleton cut short below ~700)."""
    body = _html(content_id, version, size, _seed(content_id, version))[:size]
    return Content(content_id, version, "html", body, strong_etag(body))


class SizesFileError(ValueError):
    """The sizes file is not a JSON object of content ids and byte counts; says where."""


def read_sizes(path: Path) -> dict[str, int]:
    """A site's sizes map from a JSON object ``{content_id: bytes}``."""
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SizesFileError(f"{path}: {exc}") from None
    if not isinstance(sizes, dict):
        raise SizesFileError(f"{path}: expected a JSON object of content ids and sizes")
    for content_id, size in sizes.items():
        if not is_content_id(content_id) or type(size) is not int or size < 0:
            raise SizesFileError(f"{path}: {content_id!r}: {size!r} is no content id and size")
    return sizes


class Catalog:
    """The origin's items and their current versions (all start at 1).

    ``missing`` ids answer as if they did not exist, so demos and tests can exercise 404s.
    ``sizes``: a site's own items and their sizes instead of the synthetic catalogue.
    """

    def __init__(self, missing: Iterable[str] = (), sizes: Mapping[str, int] | None = None) -> None:
        self.missing = frozenset(missing)
        self.sizes = None if sizes is None else dict(sizes)
        self._versions: dict[str, int] = {}

    def has(self, content_id: str) -> bool:
        if self.sizes is not None and content_id not in self.sizes:
            return False
        return is_content_id(content_id) and content_id not in self.missing

    def _render(self, content_id: str, version: int) -> Content:
        if self.sizes is None:
            return render(content_id, version)
        return render_sized(content_id, version, self.sizes[content_id])

    def version(self, content_id: str) -> int:
        return self._versions.get(content_id, 1)

    def get(self, content_id: str) -> Content | None:
        """The current version of the item, or None when there is no such item."""
        if not self.has(content_id):
            return None
        return self._render(content_id, self.version(content_id))

    def bump(self, content_id: str) -> Content | None:
        """Make a new version of the item current and return it (None: no such item)."""
        if not self.has(content_id):
            return None
        self._versions[content_id] = self.version(content_id) + 1
        return self._render(content_id, self._versions[content_id])


# --- Bodies ----------------------------------------------------------------------------------

_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Everyday", "Lightweight", "Premium", "Rugged")
_NOUNS = ("Backpack", "Headphones", "Kettle", "Lamp", "Sneakers", "Watch", "Jacket", "Blender")
_COLOURS = ("black", "white", "sand", "forest green")
_CATEGORIES = ("home", "outdoor", "audio", "kitchen", "fashion", "sport", "office", "garden")
_PARAGRAPHS = (
    "Designed for daily use, it balances durability with a light, comfortable build.",
    "Every unit is inspected before it ships and comes with a two-year warranty.",
    "The materials are sourced from certified suppliers and are fully recyclable.",
    "Customers praise its finish, its quiet operation and how easy it is to clean.",
    "Free returns within thirty days; the box doubles as the return packaging.",
    "Pairs well with the rest of the collection, sold separately in four colours.",
    "Dimensions and weight are listed below; check them against your space first.",
    "Our support team answers questions about setup and care seven days a week.",
)
_REVIEWS = tuple(
    {"rating": 3 + i % 3, "author": f"customer-{i}", "text": text}
    for i, text in enumerate(_PARAGRAPHS)
)


def _product(content_id: str, seed: bytes) -> tuple[str, float, list[str]]:
    spec_digest = hashlib.sha256(content_id.encode()).digest()
    adjective, noun = spec_digest[16] % len(_ADJECTIVES), spec_digest[17] % len(_NOUNS)
    name = f"{_ADJECTIVES[adjective]} {_NOUNS[noun]}"
    price = 5 + int.from_bytes(seed[:4], "big") % 50_000 / 100
    categories = [_CATEGORIES[b % len(_CATEGORIES)] for b in spec_digest[18:20]]
    return name, price, categories


def _fill(units: tuple[bytes, ...], budget: int) -> bytes:
    """As many whole units as fit in ``budget`` bytes, repeating the sequence as needed."""
    block = b"".join(units)
    whole, rest = divmod(budget, len(block))
    parts = [block * whole]
    for unit in units:
        if len(unit) > rest:
            break
        parts.append(unit)
        rest -= len(unit)
    return b"".join(parts)


def _padded(head: bytes, units: tuple[bytes, ...], tail: bytes, size: int) -> bytes:
    """``head``, filler units, whitespace and ``tail``, exactly ``size`` bytes in all."""
    budget = max(0, size - len(head) - len(tail))
    filler = _fill(units, budget)
    return b"".join((head, filler, b" " * (budget - len(filler)), tail))


@functools.cache
def _html_units(rotation: int) -> tuple[bytes, ...]:
    units = [f'<p class="detail">{text}</p>\n'.encode() for text in _PARAGRAPHS]
    return tuple(units[rotation:] + units[:rotation])


def _html(content_id: str, version: int, size: int, seed: bytes) -> bytes:
    # No escaping needed: an identifier holds none of < > & " '
    name, price, categories = _product(content_id, seed)
    head = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{name} - item {content_id}</title>\n"
        f'<meta name="foresight-version" content="{version}">\n'
        "<style>body{font-family:sans-serif;margin:2rem}.price{font-weight:bold}</style>\n"
        "</head>\n<body>\n"
        f'<main class="product" data-content-id="{content_id}" data-version="{version}">\n'
        f"<h1>{name}</h1>\n"
        f'<p class="price">{price:.2f} EUR</p>\n'
        f'<p class="categories">{" / ".join(categories)}</p>\n'
        f'<p class="version">Version {version}</p>\n'
        '<section class="details">\n'
    ).encode()
    tail = b"</section>\n</main>\n</body>\n</html>\n"
    return _padded(head, _html_units(seed[4] % len(_PARAGRAPHS)), tail, size)


@functools.cache
def _json_units(rotation: int) -> tuple[bytes, ...]:
    units = [b"," + msgspec.json.encode(review) for review in _REVIEWS]
    return tuple(units[rotation:] + units[:rotation])


def _json(content_id: str, version: int, size: int, seed: bytes) -> bytes:
    name, price, categories = _product(content_id, seed)
    record = {
        "content_id": content_id,
        "version": version,
        "name": name,
        "price": price,
        "currency": "EUR",
        "in_stock": seed[5] % 4 != 0,
        "categories": categories,
        "attributes": {"weight_g": 100 + seed[6] * 10, "colour": _COLOURS[seed[7] % 4]},
    }
    # The record's closing brace gives way to the reviews list: first review, then filler.
    head = msgspec.json.encode(record)[:-1] + b',"reviews":[' + msgspec.json.encode(_REVIEWS[0])
    return _padded(head, _json_units(seed[4] % len(_REVIEWS)), b"]}\n", size)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FIXED = len(PNG_SIGNATURE) + 4 * 12 + 13  # signature, four chunks' framing, IHDR's data
_STORED_BLOCK = 65_535  # the most bytes one stored (uncompressed) deflate block holds

Buffer = bytes | memoryview


def _png_chunk(kind: bytes, *data: Buffer) -> list[Buffer]:
    length = sum(len(part) for part in data)
    crc = zlib.crc32(kind)
    for part in data:
        crc = zlib.crc32(part, crc)
    return [struct.pack(">I", length), kind, *data, struct.pack(">I", crc)]


def _stored_zlib_size(raw_size: int) -> int:
    return 2 + raw_size + 5 * max(1, math.ceil(raw_size / _STORED_BLOCK)) + 4


def _stored_zlib(raw: bytes) -> list[Buffer]:
    """A zlib stream of ``raw`` in stored deflate blocks: exactly sized, and no compressor
    pass over the data (zlib.compress at level 0 still costs a copy through its window)."""
    view = memoryview(raw)
    parts: list[Buffer] = [b"\x78\x01"]
    for start in range(0, len(raw), _STORED_BLOCK):
        piece = view[start : start + _STORED_BLOCK]
        last = start + _STORED_BLOCK >= len(raw)
        parts += [struct.pack("<BHH", last, len(piece), 0xFFFF ^ len(piece)), piece]
    parts.append(struct.pack(">I", zlib.adler32(raw)))
    return parts


def _png(content_id: str, version: int, size: int, seed: bytes) -> bytes:
    """An RGB PNG of two alternating gradient stripes.

    The pixel data is stored uncompressed so that, as in a real image, it makes up the bulk of
    the file; a tEXt comment naming the item pads the file to the exact size.
    """
    text = f"Comment\x00Foresight synthetic image {content_id} version {version}".encode()
    room = size - _PNG_FIXED - len(text)  # for the zlib stream of the pixels
    width = max(1, math.isqrt(max(3, room) // 3))
    row_size = 1 + 3 * width  # a filter-type byte (0, None) then RGB
    height = max(1, room // row_size)
    while height > 1 and _stored_zlib_size(height * row_size) > room:
        height -= 1
    rows = [b"\x00" + _ramp(seed[8:11], width), b"\x00" + _ramp(seed[11:14], width)]
    raw = b"".join(rows[(y // 16) % 2] for y in range(height))
    idat = _stored_zlib(raw)
    text += b" " * max(0, room - _stored_zlib_size(len(raw)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join(
        [
            PNG_SIGNATURE,
            *_png_chunk(b"IHDR", header),
            *_png_chunk(b"IDAT", *idat),
            *_png_chunk(b"tEXt", text),
            *_png_chunk(b"IEND"),
        ]
    )


@functools.lru_cache(maxsize=256)
def _ramp(colour: bytes, width: int) -> bytes:
    """One row of RGB pixels fading from ``colour``."""
    return bytes((channel + x) % 256 for x in range(width) for channel in colour)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


@functools.cache
def _jpeg_filler() -> bytes:
    return b"".join(text.encode() + b" " for text in _PARAGRAPHS) * 32


_JPEG_DIMENSIONS = ((320, 240), (480, 360), (640, 480), (800, 600))


def _jpeg(content_id: str, version: int, size: int, seed: bytes) -> bytes:
    """A baseline greyscale JPEG of one flat grey (a different grey per version), padded to
    the exact size with comment segments.

    The smallest honest entropy-coded image: the first block's DC difference sets the grey,
    every later block repeats it (difference 0, then end of block: three bits a block), so any
    decoder shows a grey rectangle.
    """
    # The scan costs 3 bits per 8x8 block: only sizes whose scan fits in a third of the file.
    fitting = [(w, h) for w, h in _JPEG_DIMENSIONS if w * h * 3 // 64 // 8 <= size // 3]
    width, height = (fitting or _JPEG_DIMENSIONS[:1])[seed[8] % max(1, len(fitting))]
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    shift = (seed[9] % 192 - 96) or 1  # grey level = 128 + shift, as DC quantiser 8 gives
    category = abs(shift).bit_length()
    extra = shift if shift > 0 else shift + (1 << category) - 1  # JPEG's one's complement
    # First block: DC code 01, the extra bits, AC code 0 (end of block); then 000 per block.
    bits = 3 + category + 3 * (blocks - 1)
    pad = -bits % 8
    first = (0b01 << (category + 1)) | (extra << 1)
    value = (first << (3 * (blocks - 1) + pad)) | ((1 << pad) - 1)  # padded with 1 bits
    scan = value.to_bytes((bits + pad) // 8, "big").replace(b"\xff", b"\xff\x00")
    dc_codes = bytes([0, 2] + [0] * 14) + bytes([0, category])  # two codes of length 2
    ac_codes = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1: end of block
    tables = b"".join(
        (
            _jpeg_segment(0xDB, b"\x00\x08" + b"\x01" * 63),  # DQT: DC 8, every AC 1
            _jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
            _jpeg_segment(0xC4, b"\x00" + dc_codes),  # DHT: DC table 0
            _jpeg_segment(0xC4, b"\x10" + ac_codes),  # DHT: AC table 0
            _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # SOS: 1 component, 0..63
        )
    )
    head = b"\xff\xd8" + _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    tail = tables + scan + b"\xff\xd9"
    return head + _jpeg_comments(content_id, version, size - len(head) - len(tail)) + tail


def _jpeg_comments(content_id: str, version: int, room: int) -> bytes:
    """Comment (COM) segments of exactly ``room`` bytes in all, the first naming the item.

    A segment holds at most 65533 payload bytes (plus 4 of marker and length), so the room is
    split into as few segments as that allows, of near-equal sizes.
    """
    label = f"Foresight {content_id} version {version}\n".encode()
    count = max(1, math.ceil(room / (_JPEG_MAX_PAYLOAD + 4)))
    filler = _jpeg_filler()
    segments = []
    for index in range(count):
        payload_len = room // count + (index < room % count) - 4
        payload = label if index == 0 else b""
        whole, rest = divmod(payload_len - len(payload), len(filler))
        segments.append(_jpeg_segment(0xFE, payload + filler * whole + filler[:rest]))
    return b"".join(segments)


_JPEG_MAX_PAYLOAD = 65_533


_BUILDERS = {"html": _html, "json": _json, "png": _png, "jpeg": _jpeg}
