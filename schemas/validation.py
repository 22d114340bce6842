"""Validation at the boundary: bytes or plain objects in, a typed record or a reason out."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)


class InvalidRecord(ValueError):
    """A record that failed validation; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(record_type: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _decoders.get(record_type)
    if decoder is None:
        decoder = _decoders[record_type] = msgspec.json.Decoder(record_type)
    return decoder


def decode(record_type: type[T], raw: bytes | str) -> T:
    """Parse and validate JSON bytes as ``record_type``; raise InvalidRecord with the reason."""
    try:
        return _decoder(record_type).decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(f"invalid {record_type.__name__}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRecord(f"malformed JSON: {exc}") from None


def convert(record_type: type[T], obj: Any) -> T:
    """Validate an already-parsed object (a dict from a JSON array, say) as ``record_type``."""
    if isinstance(obj, record_type):
        return obj
    try:
        return msgspec.convert(obj, record_type)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(f"invalid {record_type.__name__}: {exc}") from None
