"""Agent tokens: a signed, expiring proof of the client an agent speaks for.

A token is two base64url segments (no padding) joined by a dot::

    base64url(claims JSON) "." base64url(HMAC-SHA256(secret, DOMAIN + first segment))

with claims ``{"v": 1, "sub": client_id, "iat": issued, "exp": expires, "jti": nonce}`` (whole
seconds since the epoch). The MAC covers the payload exactly as sent, so nothing is
re-serialised before checking it, and the claims are only parsed once the MAC is good.
``DOMAIN`` keeps a MAC made with the same secret for another purpose from passing as a token.

Checks, in order: present, well formed, signed by one of the secrets, claims well formed, for
the expected client, lifetime within ``max_ttl_s``, inside ``[iat - leeway, exp + leeway)``.
Each failure is its own ``TokenError`` subclass carrying the WebSocket close code to use.

Key rotation: pass the secrets current first. ``issue`` signs with the first; ``verify``
accepts any and says which one matched (``key_index`` > 0 means an old key: re-issue). Drop an
old key once the longest lifetime has passed since the rotation.

A token is a bearer credential: anyone holding it may connect as its client until it expires,
but never as another client. Revoking one token early means rotating the secret. Nothing here
reads the clock (``now`` is passed in), and no secret ever reaches a message or a repr.

>>> secret = b"k" * 32
>>> token = issue(secret, "client-42", ttl_s=3600, now=1_700_000_000, nonce="n0nce-n0nce")
>>> verify(secret, token, "client-42", now=1_700_000_100).client_id
'client-42'
>>> verify(secret, token, "client-7", now=1_700_000_100)
Traceback (most recent call last):
...
foresight.tokens.WrongClient: token is for another client
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets as _random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from pydantic import SecretBytes, SecretStr

from schemas.protocol import CloseCode
from schemas.records import IDENTIFIER_PATTERN

TOKEN_VERSION = 1
#: Lifetime `foresight token issue` gives a token unless told otherwise.
DEFAULT_TTL_S = 24 * 3600.0
#: Longest lifetime a token may have; a longer one is refused even when correctly signed.
DEFAULT_MAX_TTL_S = 7 * 24 * 3600.0
#: Clock difference tolerated between the issuer and the verifier.
DEFAULT_LEEWAY_S = 60.0
#: HMAC-SHA256 wants a key at least as long as its output.
MIN_SECRET_BYTES = 32
#: Longer input is refused before any decoding; a real token is a few hundred characters.
MAX_TOKEN_CHARS = 1024

Secret: TypeAlias = str | bytes | SecretStr | SecretBytes
#: One secret, or several with the current one first.
Secrets: TypeAlias = Secret | Sequence[Secret]

_DOMAIN = b"foresight-agent-token\x00"
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A token names a client the way every record does (schemas.records.IDENTIFIER_PATTERN).
_CLIENT = re.compile(f"(?=.{{1,256}}$){IDENTIFIER_PATTERN}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_CLAIMS = frozenset({"v", "sub", "iat", "exp", "jti"})
_SIGNATURE_BYTES = hashlib.sha256().digest_size


class TokenError(Exception):
    """A token was refused; ``reason`` is one short line, safe to send in a close frame."""

    close_code: ClassVar[CloseCode] = CloseCode.UNAUTHORIZED
    default_reason: ClassVar[str] = "token refused"

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason or self.default_reason
        super().__init__(self.reason)


class MalformedToken(TokenError):
    """Not a token this module issues: bad shape, encoding, claims or lifetime."""

    default_reason = "token malformed"


class MissingToken(MalformedToken):
    """No token at all."""

    default_reason = "token missing"


class BadSignature(TokenError):
    """Well formed, but signed by none of the secrets (forged, tampered or an unknown key)."""

    default_reason = "token signature invalid"


class ExpiredToken(TokenError):
    """Past its expiry, leeway included."""

    close_code = CloseCode.TOKEN_EXPIRED
    default_reason = "token expired"


class TokenNotYetValid(TokenError):
    """Issued in the future by more than the leeway: the issuer's clock is off."""

    close_code = CloseCode.TOKEN_EXPIRED
    default_reason = "token not valid yet"


class WrongClient(TokenError):
    """A genuine token, but for another client than the one the agent claims to be."""

    close_code = CloseCode.FORBIDDEN
    default_reason = "token is for another client"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says."""

    client_id: str
    issued_at: int
    expires_at: int
    token_id: str
    #: Which of the secrets signed it: 0 is the current one.
    key_index: int

    def expires_in(self, now: float) -> float:
        """Seconds left before expiry (negative once expired)."""
        return self.expires_at - now


def _key(secret: Secret) -> bytes:
    if isinstance(secret, SecretStr):
        key = secret.get_secret_value().encode()
    elif isinstance(secret, SecretBytes):
        key = secret.get_secret_value()
    elif isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise TypeError("a token secret must be str, bytes, SecretStr or SecretBytes")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes long")
    return key


def check_secrets(secrets: Secrets) -> None:
    """Raise ValueError (naming no secret) when ``secrets`` cannot sign or verify tokens.

    Call it at start-up so that a missing or short secret stops the process, not a connection.
    """
    _keys(secrets)


def _keys(secrets: Secrets) -> list[bytes]:
    if isinstance(secrets, str | bytes | SecretStr | SecretBytes):
        return [_key(secrets)]
    keys = [_key(secret) for secret in secrets]
    if not keys:
        raise ValueError("no token secret configured")
    return keys


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    if _SEGMENT.fullmatch(segment) is None:
        raise MalformedToken()
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken() from None
    # One encoding per value: otherwise the unused low bits of the last character would give
    # each token several spellings, and a log or a deny list keyed by token could be fooled.
    if _b64encode(data) != segment:
        raise MalformedToken()
    return data


def _mac(key: bytes, payload_segment: str) -> bytes:
    return hmac.new(key, _DOMAIN + payload_segment.encode("ascii"), hashlib.sha256).digest()


def _check_time(value: float, name: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number of seconds")


def issue(
    secrets: Secrets,
    client_id: str,
    ttl_s: float,
    now: float,
    *,
    nonce: str | None = None,
    max_ttl_s: float = DEFAULT_MAX_TTL_S,
) -> str:
    """A token for ``client_id``, valid from ``now`` for ``ttl_s`` seconds, signed with the
    current (first) secret. ``nonce`` defaults to 96 random bits."""
    key = _keys(secrets)[0]
    if _CLIENT.fullmatch(client_id) is None:
        raise ValueError(
            "client_id must be 1 to 256 letters, digits and ._:@/+=-, "
            "starting with a letter or digit"
        )
    _check_time(now, "now")
    _check_time(ttl_s, "ttl_s")
    issued = math.floor(now)
    expires = math.floor(now + ttl_s)
    if ttl_s < 1 or expires - issued > max_ttl_s:
        raise ValueError(f"ttl_s must be between 1 and {max_ttl_s:g} seconds")
    if nonce is None:
        nonce = _b64encode(_random.token_bytes(12))
    elif _NONCE.fullmatch(nonce) is None:
        raise ValueError("nonce must be 8 to 64 characters of [A-Za-z0-9_-]")
    claims = {"v": TOKEN_VERSION, "sub": client_id, "iat": issued, "exp": expires, "jti": nonce}
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode("ascii"))
    return f"{payload}.{_b64encode(_mac(key, payload))}"


def _claims(payload: bytes) -> tuple[str, int, int, str]:
    """``(sub, iat, exp, jti)`` of a payload whose MAC has been checked already."""
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        raise MalformedToken() from None
    if not isinstance(claims, dict) or set(claims) != _CLAIMS:
        raise MalformedToken()
    version, sub, iat, exp, jti = (claims[name] for name in ("v", "sub", "iat", "exp", "jti"))
    if type(version) is not int or version != TOKEN_VERSION:
        raise MalformedToken("token version unsupported")
    if not (isinstance(sub, str) and _CLIENT.fullmatch(sub)):
        raise MalformedToken()
    # type() rather than isinstance(): a JSON true must not pass as the integer 1.
    if not (type(iat) is int and type(exp) is int and 0 <= iat < exp):
        raise MalformedToken()
    if not (isinstance(jti, str) and _NONCE.fullmatch(jti)):
        raise MalformedToken()
    return sub, iat, exp, jti


def verify(
    secrets: Secrets,
    token: str | None,
    client_id: str | None,
    now: float,
    *,
    leeway_s: float = DEFAULT_LEEWAY_S,
    max_ttl_s: float = DEFAULT_MAX_TTL_S,
) -> TokenClaims:
    """The claims of a good token for ``client_id``; a TokenError subclass otherwise.

    ``client_id=None`` skips the binding check: the node then compares ``client_id`` of the
    result with the hello's. A bad ``secrets``, ``now`` or ``leeway_s`` is the caller's bug
    and raises ValueError.
    """
    keys = _keys(secrets)
    _check_time(now, "now")
    _check_time(leeway_s, "leeway_s")
    if not token:
        raise MissingToken()
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise MalformedToken()
    payload_segment, signature_segment = token.split(".")
    payload = _b64decode(payload_segment)
    signature = _b64decode(signature_segment)
    if len(signature) != _SIGNATURE_BYTES:
        raise MalformedToken()
    matches = [hmac.compare_digest(_mac(key, payload_segment), signature) for key in keys]
    if not any(matches):
        raise BadSignature()
    sub, iat, exp, jti = _claims(payload)
    if client_id is not None and sub != client_id:
        raise WrongClient()
    if exp - iat > max_ttl_s:
        raise MalformedToken("token lifetime too long")
    if now + leeway_s < iat:
        raise TokenNotYetValid()
    if now >= exp + leeway_s:
        raise ExpiredToken()
    return TokenClaims(
        client_id=sub, issued_at=iat, expires_at=exp, token_id=jti, key_index=matches.index(True)
    )


def token_from(authorization: str | None, query_token: str | None) -> str | None:
    """The token of a WebSocket request: ``Authorization: Bearer T`` or ``?token=T``.

    Browsers cannot set headers on a WebSocket, hence the query parameter. Two different
    tokens, or another authorization scheme, are a MalformedToken; none at all is None.
    """
    header_token = None
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise MalformedToken("authorization must be: Bearer TOKEN")
        header_token = value.strip()
    if header_token and query_token and header_token != query_token:
        raise MalformedToken("two different tokens")
    return header_token or query_token or None
