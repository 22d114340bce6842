"""Readers that turn files into Interaction events: JSONL, and session-click TSV datasets."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from schemas import Interaction, InvalidRecord, convert

YOOCHOOSE_HEADER = ("SessionId", "ItemId", "Time")
CLIENT_COLUMN = "ClientId"  # optional fourth column: the client a session belongs to


class DatasetError(ValueError):
    """The file is not in the expected format; the message says where."""


def count_lines(path: Path) -> int:
    """Lines in a file, for a progress bar's total."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def read_jsonl(stream: IO[bytes]) -> Iterator[bytes]:
    """Each non-blank line of a JSON Lines stream, as raw bytes (validated by the publisher)."""
    for line in stream:
        stripped = line.strip()
        if stripped:
            yield stripped


def read_yoochoose(path: Path) -> Iterator[Interaction]:
    """Interaction events from a TSV with header ``SessionId ItemId Time`` and optionally a
    fourth column, ``ClientId``.

    The client id is the ClientId when the file has one (a client's sessions are one client
    that comes back), else the session id (every session a new client); each row is one
    click. The event id is derived from the file position, so a re-run publishes the same ids
    and consumers can deduplicate.
    """
    try:
        yield from _read_yoochoose(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _read_yoochoose(path: Path) -> Iterator[Interaction]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        names = tuple(h.strip() for h in header or ())
        if names not in (YOOCHOOSE_HEADER, (*YOOCHOOSE_HEADER, CLIENT_COLUMN)):
            raise DatasetError(
                f"{path}: expected a TSV header {' '.join(YOOCHOOSE_HEADER)} "
                f"[{CLIENT_COLUMN}], got {header!r}"
            )
        columns = len(names)
        for line_no, row in enumerate(reader, start=2):
            if len(row) != columns:
                raise DatasetError(f"{path}:{line_no}: expected {columns} columns, got {len(row)}")
            session, item, time_s, *client = (cell.strip() for cell in row)
            try:
                ts = float(time_s)
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: Time {time_s!r} is not a number") from None
            if not 0 <= ts <= 32503680000:
                raise DatasetError(f"{path}:{line_no}: Time {time_s!r} is out of range")
            try:
                event = convert(
                    Interaction,
                    {
                        "event_id": f"{path.stem}-{line_no}",
                        "client_id": client[0] if client else session,
                        "content_id": item,
                        "kind": "click",
                        "ts": ts,
                    },
                )
            except InvalidRecord as exc:
                raise DatasetError(f"{path}:{line_no}: {exc.reason}") from None
            yield event
