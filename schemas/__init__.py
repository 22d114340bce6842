"""Foresight's records, their JSON Schemas and the Cassandra DDL: the bottom layer.

Nothing here imports any other Foresight package.
"""

from schemas.records import (
    SCHEMA_VERSION,
    ContentUpdate,
    Context,
    DeadLetter,
    Feedback,
    Interaction,
    Location,
    PrefetchCommand,
    RingMember,
    SecurityAlert,
    encode,
)
from schemas.validation import InvalidRecord, convert, decode

__all__ = [
    "SCHEMA_VERSION",
    "ContentUpdate",
    "Context",
    "DeadLetter",
    "Feedback",
    "Interaction",
    "InvalidRecord",
    "Location",
    "PrefetchCommand",
    "RingMember",
    "SecurityAlert",
    "convert",
    "decode",
    "encode",
]
