"""The push protocol between a cache node and its agents, spoken over ``/v1/agents/ws``.

Every frame is one JSON object whose ``type`` names the message; one decoder over the union of
the tagged Structs reads any frame and rejects an unknown type, a missing field or another
``protocol_version`` with a one-line reason. Bodies are bytes, which JSON carries as base64.
Unknown fields are ignored, so a node or agent may add an optional field inside a protocol
version; anything an older peer cannot safely ignore needs a new ``protocol_version``.
The specification, with the handshake and the close codes, is docs/push-protocol.md.

Examples
--------
>>> msg = Push(content_id="p/1", version=3, digest=digest(b"hi"), content_type="text/plain",
...            body=b"hi", pushed_at=1.0)
>>> decode_message(encode_message(msg)) == msg
True
>>> decode_message(b'{"type": "teleport"}')
Traceback (most recent call last):
...
schemas.validation.InvalidRecord: invalid message: Invalid value 'teleport' - at `$.type`
"""

from __future__ import annotations

import hashlib
import json
from enum import IntEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from schemas.records import (
    FeedbackOutcome,
    Identifier,
    Probability,
    Timestamp,
    check_identifiers,
    is_identifier,
)
from schemas.validation import InvalidRecord

PROTOCOL_VERSION = 1
#: The agents' WebSocket endpoint on every cache node.
WS_PATH = "/v1/agents/ws"
#: Where an agent without a socket posts the feedback and views it still holds (a JSON array of
#: agent messages, the token as on the socket): any node records them, owner or not.
BEACON_PATH = "/v1/agents/beacon"
#: The most messages one beacon may carry.
BEACON_MAX = 1000
#: aiohttp's default max_msg_size; both ends keep it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Largest body a push may carry: base64 makes it 4/3 larger, and the envelope needs room too.
MAX_BODY_BYTES = 3 * 1024 * 1024 - 64 * 1024
#: Most holdings a hello may list; an agent holding more sends its most recently used first.
MAX_HOLDINGS = 10_000
#: Most ids one ack may carry.
MAX_ACK_IDS = 256
#: How long a node waits for the hello after the upgrade.
HELLO_TIMEOUT_S = 10.0
#: Bad frames a node answers with an error after the welcome; one more closes the connection.
MAX_BAD_FRAMES = 10
#: Longest close reason in UTF-8 bytes (RFC 6455: a control frame's payload is at most 125
#: bytes, two of them the code).
MAX_CLOSE_REASON_BYTES = 123
#: Longest reason of an error message.
MAX_ERROR_REASON = 1024
#: The request header that gives a request's id (a view's ``id``): the node acks it on the
#: agent's socket once Kafka holds the interaction.
EVENT_HEADER = "X-Foresight-Event"
#: The response header of a node with no socket of the agent's to ack on: "1" when Kafka
#: already holds the request's interaction, so the agent expects no ack for it.
ACKED_HEADER = "X-Foresight-Acked"

ViewKind = Literal["view", "request"]


def agent_event_id(client_id: str, agent_id: str) -> str:
    """The interaction's event id for an agent's view or request id: the same for a copy
    the agent sends again, and no client can name another client's events."""
    return "a-" + hashlib.sha256(f"{client_id}\x1f{agent_id}".encode()).hexdigest()[:32]


class CloseCode(IntEnum):
    """WebSocket close codes of the protocol; docs/push-protocol.md says what the agent does."""

    #: The node is shutting down and no other node takes the client; reconnect after a
    #: short backoff (an agent that closes with it is leaving: its page went away).
    GOING_AWAY = 1001
    #: A frame broke the WebSocket framing rules (aiohttp closes with this by itself).
    PROTOCOL_ERROR = 1002
    #: A text frame that is not UTF-8 (aiohttp closes with this by itself).
    INVALID_TEXT = 1007
    #: A frame exceeded MAX_MESSAGE_BYTES (aiohttp closes with this by itself).
    MESSAGE_TOO_BIG = 1009
    #: An unexpected error in the node's handler of this connection; reconnect with backoff.
    INTERNAL_ERROR = 1011
    #: The agent read too slowly: its bounded queue overflowed or a send timed out; reconnect
    #: with backoff.
    TRY_AGAIN_LATER = 1013
    #: The token is missing, malformed or its signature is wrong.
    UNAUTHORIZED = 4001
    #: A newer connection for the same client took over; do not reconnect.
    SUPERSEDED = 4002
    #: The token is valid but for another client than the hello names.
    FORBIDDEN = 4003
    #: The token has expired (or is not valid yet); get a new one.
    TOKEN_EXPIRED = 4004
    #: Policy: no hello within HELLO_TIMEOUT_S, or frames faster than the node's rate limit.
    POLICY = 4008
    #: A first frame that is not a valid hello, a frame of another protocol_version, or more
    #: than MAX_BAD_FRAMES frames that do not decode (or come in the wrong direction or state).
    BAD_MESSAGE = 4009
    #: The client moved to another node; reconnect to the url of the preceding redirect.
    MOVED = 4010


Digest = Annotated[
    str,
    Meta(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the body, 64 lowercase hex digits."),
]
ContentVersion = Annotated[int, Meta(ge=0)]
ProtocolVersion = Annotated[int, Meta(ge=PROTOCOL_VERSION, le=PROTOCOL_VERSION)]
ContentType = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[!-~][ -~]*$")]
Body = Annotated[bytes, Meta(max_length=MAX_BODY_BYTES)]
ShortText = Annotated[str, Meta(min_length=1, max_length=256)]
WebSocketUrl = Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^wss?://")]
CodeNumber = Annotated[int, Meta(ge=1000, le=4999)]


def digest(body: bytes) -> str:
    """The digest the protocol uses: SHA-256 of the body as lowercase hex."""
    return hashlib.sha256(body).hexdigest()


def _check_optional(record: Struct, *fields: str) -> None:
    present = [name for name in fields if getattr(record, name) is not None]
    check_identifiers(record, *present)


class _Message(Struct, tag_field="type", kw_only=True, frozen=True):
    """Fields every message has; ``type`` is written from each subclass's tag."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION


class Holding(Struct, kw_only=True, frozen=True):
    """One item an agent holds, so that the node does not push it again."""

    content_id: Identifier
    version: ContentVersion
    digest: Digest

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")


class Resume(Struct, kw_only=True, frozen=True):
    """Where a reconnecting agent comes from."""

    #: The node the agent was connected to last, if any.
    node_id: Identifier | None = None
    #: True when this connection follows a redirect from that node.
    redirected: bool = False
    disconnected_at: Timestamp | None = None

    def __post_init__(self) -> None:
        _check_optional(self, "node_id")


class Hello(_Message, tag="hello", kw_only=True, frozen=True):
    """Agent -> node, first frame: who the agent is and what it already holds."""

    client_id: Identifier
    holdings: Annotated[list[Holding], Meta(max_length=MAX_HOLDINGS)] = []
    #: Name/version of the agent software, e.g. ``foresight-python/0.1.0``.
    agent: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[!-~][ -~]*$")]
    #: The agent's local cache capacity, so the node does not push more than fits.
    cache_max_bytes: Annotated[int, Meta(ge=0)] | None = None
    resume: Resume | None = None

    def __post_init__(self) -> None:
        check_identifiers(self, "client_id")


class Welcome(_Message, tag="welcome", kw_only=True, frozen=True):
    """Node -> agent, answer to hello: the session is open."""

    node_id: Identifier
    client_id: Identifier
    server_time: Timestamp
    #: How often the agent sends ping; silence for twice this long means the peer is gone.
    heartbeat_s: Annotated[float, Meta(gt=0, le=3600)]
    max_message_bytes: Annotated[int, Meta(ge=1)] = MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        check_identifiers(self, "node_id", "client_id")


class _Content(_Message, kw_only=True, frozen=True):
    """The fields push and update share: one version of one content item, body included."""

    content_id: Identifier
    version: ContentVersion
    digest: Digest
    content_type: ContentType
    body: Body
    #: The prefetch command behind the push, if any (feedback and dedupe may refer to it).
    command_id: Identifier | None = None
    probability: Probability | None = None
    pushed_at: Timestamp

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")
        _check_optional(self, "command_id")


class Push(_Content, tag="push", kw_only=True, frozen=True):
    """Node -> agent: a predicted item, to keep until it is asked for."""

    #: When the click behind the prediction happened (the command's event time), so an agent
    #: can tell how long a click takes to become a push.
    event_ts: Timestamp | None = None


class Update(_Content, tag="update", kw_only=True, frozen=True):
    """Node -> agent: a newer version of an item the agent holds; replaces the older one."""

    previous_version: ContentVersion | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.previous_version is not None and self.previous_version >= self.version:
            raise ValueError("`previous_version` must be lower than `version`")


class Invalidate(_Message, tag="invalidate", kw_only=True, frozen=True):
    """Node -> agent: drop the item if held at ``version`` or older (any version if None)."""

    content_id: Identifier
    version: ContentVersion | None = None
    reason: ShortText | None = None

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")


class Redirect(_Message, tag="redirect", kw_only=True, frozen=True):
    """Node -> agent: the client now belongs to another node; reconnect to ``url``."""

    url: WebSocketUrl
    node_id: Identifier
    reason: ShortText

    def __post_init__(self) -> None:
        check_identifiers(self, "node_id")


class Feedback(_Message, tag="feedback", kw_only=True, frozen=True):
    """Agent -> node: what became of one item. The client is the connection's, never a field."""

    content_id: Identifier
    version: ContentVersion
    outcome: FeedbackOutcome
    latency_ms: Annotated[float, Meta(ge=0, le=86_400_000)]
    ts: Timestamp

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")


class View(_Message, tag="view", kw_only=True, frozen=True):
    """Agent -> node: the person asked for an item and the agent answered from its cache.

    The node records it as an interaction, as it records a request it serves, so the model
    learns from every request whether or not it reached a node.
    """

    content_id: Identifier
    version: ContentVersion
    ts: Timestamp
    #: The agent's id for this request. The node answers with an Ack once Kafka holds the
    #: interaction; the agent keeps the view until then and sends it again after a reconnect
    #: (the worker drops a second copy by its id). None: fire and forget.
    id: Identifier | None = None
    #: "view": answered from the agent's cache. "request": a node served it over HTTP (with
    #: the id in X-Foresight-Event) and its ack never came, so the agent sends it again.
    kind: ViewKind = "view"

    def __post_init__(self) -> None:
        check_identifiers(self, "content_id")
        _check_optional(self, "id")


class Ack(_Message, tag="ack", kw_only=True, frozen=True):
    """Node -> agent: Kafka holds the interactions of these view or request ids; the agent
    may forget them."""

    ids: Annotated[list[Identifier], Meta(min_length=1, max_length=MAX_ACK_IDS)]

    def __post_init__(self) -> None:
        for event_id in self.ids:
            if not is_identifier(event_id):
                raise ValueError(f"`ids` holds an invalid identifier {event_id[:40]!r}")


class Ping(_Message, tag="ping", kw_only=True, frozen=True):
    """Either direction: are you there? Answered by a pong carrying the same ``ts``."""

    ts: Timestamp


class Pong(_Message, tag="pong", kw_only=True, frozen=True):
    """Either direction: the answer to a ping, echoing its ``ts``."""

    ts: Timestamp


class Error(_Message, tag="error", kw_only=True, frozen=True):
    """Either direction: a message was refused; a close with the same code may follow."""

    code: CodeNumber
    reason: Annotated[str, Meta(min_length=1, max_length=1024)]


Message = (
    Hello
    | Welcome
    | Push
    | Update
    | Invalidate
    | Redirect
    | Ack
    | Feedback
    | View
    | Ping
    | Pong
    | Error
)
AgentMessage = Hello | Feedback | View | Ping | Pong | Error
NodeMessage = Welcome | Push | Update | Invalidate | Redirect | Ack | Ping | Pong | Error

_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "message": msgspec.json.Decoder(Message),
    "agent message": msgspec.json.Decoder(AgentMessage),
    "node message": msgspec.json.Decoder(NodeMessage),
}


class UnsupportedVersion(InvalidRecord):
    """A frame of another ``protocol_version``: the peer speaks a protocol this side does not,
    so nothing it sends next can be trusted to mean what this side reads (close 4009)."""


class _Envelope(Struct):
    """Only the version of a frame, read when the frame does not decode as a message."""

    protocol_version: Any = PROTOCOL_VERSION


_envelope = msgspec.json.Decoder(_Envelope)


def _other_version(raw: bytes | str) -> str | None:
    """The frame's protocol_version (as JSON, shortened) when it is a JSON object naming
    another one than this side's, else None."""
    try:
        version = _envelope.decode(raw).protocol_version
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    if type(version) is int and version == PROTOCOL_VERSION:
        return None
    return json.dumps(version)[:20]


def encode_message(message: Message) -> bytes:
    """One frame's JSON bytes (UTF-8; send them as a text frame)."""
    return _encoder.encode(message)


def _decode(kind: str, raw: bytes | str) -> Any:
    try:
        return _decoders[kind].decode(raw)
    except msgspec.ValidationError as exc:
        version = _other_version(raw)
        if version is not None:
            raise UnsupportedVersion(
                f"unsupported protocol_version {version}, this side speaks {PROTOCOL_VERSION}"
            ) from None
        raise InvalidRecord(f"invalid {kind}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRecord(f"malformed JSON: {exc}") from None


def decode_message(raw: bytes | str) -> Message:
    """Read one frame of any type; raise InvalidRecord with a one-line reason."""
    message: Message = _decode("message", raw)
    return message


def decode_from_agent(raw: bytes | str) -> AgentMessage:
    """Read a frame on the node: only what an agent may send (a push from an agent is refused)."""
    message: AgentMessage = _decode("agent message", raw)
    return message


def decode_from_node(raw: bytes | str) -> NodeMessage:
    """Read a frame on the agent: only what a node may send."""
    message: NodeMessage = _decode("node message", raw)
    return message


def decode_hello(raw: bytes | str) -> Hello:
    """Read the first frame of a connection, which must be a hello; raise InvalidRecord (or
    UnsupportedVersion) with a reason naming what is wrong with it."""
    message = decode_message(raw)
    if not isinstance(message, Hello):
        raise InvalidRecord(f"expected hello, got {type(message).__struct_config__.tag}")
    return message


def close_reason(text: str) -> bytes:
    """A close frame's reason: one line of ``text``, at most MAX_CLOSE_REASON_BYTES of UTF-8,
    never cut inside a character (a peer fails a connection whose reason is not UTF-8).

    >>> close_reason("é" * 100)[-4:].decode()
    'éé'
    >>> len(close_reason("é" * 100))
    122
    """
    line = " ".join(text.split()) or "closing"
    return line.encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()
