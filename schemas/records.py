"""The versioned records that flow through Foresight's Kafka topics.

Each record is a msgspec Struct: decoding validates types and constraints in one pass and is
fast enough to run on every event. ``schema_version`` is part of every record so that a
consumer can tell which version a producer wrote; a record of an unknown version fails
validation instead of being half-read.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = 1

IDENTIFIER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*"
_identifier = re.compile(IDENTIFIER_PATTERN).fullmatch

# The pattern is published in the JSON Schema and checked in __post_init__ with one compiled
# regex per field: msgspec's own pattern check costs three times as much on the hot path.
Identifier = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=256,
        extra_json_schema={"pattern": f"^{IDENTIFIER_PATTERN}$"},
        description="An opaque id: letters, digits and ._:@/+=- only, at most 256 characters.",
    ),
]


def is_identifier(value: str) -> bool:
    return len(value) <= 256 and _identifier(value) is not None


def check_identifiers(record: Struct, *fields: str) -> None:
    """Raise ValueError naming the first field that is not a well-formed identifier."""
    for name in fields:
        if _identifier(getattr(record, name)) is None:
            raise ValueError(f"`{name}` must match ^{IDENTIFIER_PATTERN}$")


Timestamp = Annotated[
    float,
    Meta(ge=0, le=32503680000, description="Seconds since the Unix epoch (UTC)."),
]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Version = Annotated[int, Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]

InteractionKind = Literal["view", "click", "purchase", "request"]
ConnectionClass = Literal["4g", "3g", "2g", "slow-2g"]
FeedbackOutcome = Literal["hit", "miss", "unused", "expired"]
MemberState = Literal["up", "leaving", "down"]


class Location(Struct, frozen=True, forbid_unknown_fields=True):
    """A coarse position; only ever kept when the event carries the person's consent."""

    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class Context(Struct, kw_only=True, forbid_unknown_fields=True):
    """What the device says about itself when the event happened."""

    device: Annotated[str, Meta(max_length=64)] | None = None
    connection: ConnectionClass | None = None
    save_data: bool = False
    hour: Annotated[int, Meta(ge=0, le=23)] | None = None
    location_consent: bool = False
    location: Location | None = None

    def __post_init__(self) -> None:
        # Privacy by construction: a location without consent never survives decoding, so
        # nothing downstream can store or use it.
        if not self.location_consent and self.location is not None:
            self.location = None


class Interaction(Struct, kw_only=True, forbid_unknown_fields=True):
    """One click, view, purchase or request by a client (topic ``interactions``)."""

    schema_version: Version = SCHEMA_VERSION
    event_id: Identifier
    client_id: Identifier
    content_id: Identifier
    kind: InteractionKind
    ts: Timestamp
    context: Context | None = None

    def __post_init__(self) -> None:
        check_identifiers(self, "event_id", "client_id", "content_id")


class PrefetchCommand(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Ask the owning cache node to prefetch one item for one client (``prefetch-commands``)."""

    schema_version: Version = SCHEMA_VERSION
    command_id: Identifier
    client_id: Identifier
    content_id: Identifier
    probability: Probability
    rank: Annotated[int, Meta(ge=1, le=1000)]
    model: Annotated[str, Meta(min_length=1, max_length=64)]
    issued_at: Timestamp
    expires_at: Timestamp
    event_ts: Timestamp | None = None

    def __post_init__(self) -> None:
        check_identifiers(self, "command_id", "client_id", "content_id")
        if self.expires_at < self.issued_at:
            raise ValueError("expires_at is before issued_at")


class Feedback(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What became of a prefetched item, relayed from the agent (topic ``feedback``)."""

    schema_version: Version = SCHEMA_VERSION
    client_id: Identifier
    content_id: Identifier
    version: Annotated[int, Meta(ge=0)]
    outcome: FeedbackOutcome
    latency_ms: Annotated[float, Meta(ge=0)]
    ts: Timestamp

    def __post_init__(self) -> None:
        check_identifiers(self, "client_id", "content_id")


class ContentUpdate(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A new version of a content item at the origin (topic ``content-updates``)."""

    schema_version: Version = SCHEMA_VERSION
    content_id: Identifier
    version: Annotated[int, Meta(ge=0)]
    etag: Annotated[str, Meta(max_length=256)] | None = None
    ts: Timestamp

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")


class RingMember(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A cache node's membership and heartbeat (compacted topic ``ring-membership``)."""

    schema_version: Version = SCHEMA_VERSION
    node_id: Identifier
    url: Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^https?://")]
    weight: Annotated[float, Meta(gt=0, le=1000)]
    slot: Annotated[int, Meta(ge=0, le=100_000)]
    state: MemberState
    heartbeat_ts: Timestamp

    def __post_init__(self) -> None:
        check_identifiers(self, "node_id")


class SecurityAlert(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The abuse guard flagged a client; its prefetches stop (topic ``security-alerts``)."""

    schema_version: Version = SCHEMA_VERSION
    client_id: Identifier
    score: Annotated[float, Meta(ge=0)]
    reason: Annotated[str, Meta(min_length=1, max_length=1024)]
    ts: Timestamp
    detector: Annotated[str, Meta(max_length=64)] = "half-space-trees"

    def __post_init__(self) -> None:
        check_identifiers(self, "client_id")


#: What a dead letter keeps of the rejected record: its first bytes, enough to see what it
#: was. Its size and digest identify the whole, which stays in the source topic at
#: topic/partition/offset until retention removes it. With these bounds every dead letter
#: encodes to under 100 KiB, far below Kafka's 1 MiB, however big the record.
DEAD_LETTER_VALUE_BYTES = 64 * 1024
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_REASON_CHARS = 1024


class DeadLetter(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A rejected record with the reason it was rejected (topics ``TOPIC-dlq``).

    ``value`` and ``key`` are the record's bytes (base64 in JSON), whole when small, else
    their first 64 KiB and 1 KiB, so that a letter always fits where the record did;
    ``value_size``, ``value_sha256`` and ``key_size`` describe the whole originals, and
    topic/partition/offset say where to find them. Letters written before those three
    fields existed decode with them null.
    """

    schema_version: Version = SCHEMA_VERSION
    topic: Annotated[str, Meta(min_length=1, max_length=249)]
    partition: int | None = None
    offset: int | None = None
    key: (
        Annotated[bytes, Meta(description=f"The key, or its first {DEAD_LETTER_KEY_BYTES} bytes.")]
        | None
    ) = None
    value: Annotated[
        bytes, Meta(description=f"The value, or its first {DEAD_LETTER_VALUE_BYTES} bytes.")
    ]
    reason: Annotated[
        str,
        Meta(
            min_length=1,
            description=f"Why it was rejected; at most {DEAD_LETTER_REASON_CHARS} characters.",
        ),
    ]
    rejected_by: Annotated[str, Meta(min_length=1, max_length=128)]
    ts: Timestamp
    value_size: (
        Annotated[int, Meta(ge=0, description="Length of the whole original value, in bytes.")]
        | None
    ) = None
    value_sha256: (
        Annotated[
            str,
            Meta(
                pattern="^[0-9a-f]{64}$",
                description="SHA-256 of the whole original value, lowercase hex.",
            ),
        ]
        | None
    ) = None
    key_size: (
        Annotated[int, Meta(ge=0, description="Length of the whole original key, in bytes.")] | None
    ) = None

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        rejected_by: str,
        ts: float,
    ) -> DeadLetter:
        """The dead letter of one record: every dead-letter path builds it here, so that each
        one fits in a Kafka message whatever the record's size.

        >>> letter = DeadLetter.of(topic="interactions", partition=0, offset=7, key=None,
        ...     value=b"x" * 100_000, reason="too big", rejected_by="doc", ts=0.0)
        >>> len(letter.value), letter.value_size, letter.value_sha256[:12]
        (65536, 100000, 'd69e68988157')
        """
        value = value or b""
        if len(reason) > DEAD_LETTER_REASON_CHARS:
            reason = reason[: DEAD_LETTER_REASON_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else key[:DEAD_LETTER_KEY_BYTES],
            value=value[:DEAD_LETTER_VALUE_BYTES],
            reason=reason or "no reason given",
            rejected_by=rejected_by[:128],
            ts=ts,
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            key_size=None if key is None else len(key),
        )


RECORD_TYPES: dict[str, type[Struct]] = {
    "interaction": Interaction,
    "prefetch-command": PrefetchCommand,
    "feedback": Feedback,
    "content-update": ContentUpdate,
    "ring-member": RingMember,
    "security-alert": SecurityAlert,
    "dead-letter": DeadLetter,
}

encode = msgspec.json.Encoder().encode
