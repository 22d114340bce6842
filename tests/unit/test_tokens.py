"""Agent tokens: a good one verifies; forged, tampered, expired, foreign, malformed ones do not."""

from __future__ import annotations

import base64
import doctest
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretBytes, SecretStr

import foresight.tokens
from foresight.tokens import (
    DEFAULT_LEEWAY_S,
    DEFAULT_MAX_TTL_S,
    BadSignature,
    ExpiredToken,
    MalformedToken,
    MissingToken,
    Secret,
    TokenError,
    TokenNotYetValid,
    WrongClient,
    check_secrets,
    issue,
    token_from,
    verify,
)
from schemas.protocol import CloseCode

SECRET = "s3cret-" + "x" * 32
OLD_SECRET = b"old-secret-" + b"y" * 32
NOW = 1_700_000_000.0
CLIENT = "client-42"
TOKEN = issue(SECRET, CLIENT, ttl_s=3600, now=NOW)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: object, secret: bytes = SECRET.encode(), raw: bytes | None = None) -> str:
    """A token over any payload, made as docs/push-protocol.md describes the format."""
    payload = b64(raw if raw is not None else json.dumps(claims).encode())
    mac = hmac.new(secret, b"foresight-agent-token\x00" + payload.encode(), hashlib.sha256)
    return f"{payload}.{b64(mac.digest())}"


GOOD_CLAIMS = {"v": 1, "sub": CLIENT, "iat": int(NOW), "exp": int(NOW) + 60, "jti": "abcdefgh"}


def test_the_examples_in_the_module_docstring_hold() -> None:
    assert doctest.testmod(foresight.tokens).failed == 0


def test_a_good_token_verifies_and_says_what_it_claims() -> None:
    claims = verify(SECRET, TOKEN, CLIENT, now=NOW + 10)
    assert claims.client_id == CLIENT
    assert claims.issued_at == int(NOW)
    assert claims.expires_at == int(NOW) + 3600
    assert claims.key_index == 0
    assert claims.expires_in(NOW + 10) == 3590
    assert len(TOKEN) < 200
    assert set(TOKEN) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_the_client_check_can_be_left_to_the_caller() -> None:
    assert verify(SECRET, TOKEN, None, now=NOW).client_id == CLIENT


def test_the_hand_made_format_matches_the_issued_one() -> None:
    assert verify(SECRET, signed(GOOD_CLAIMS), CLIENT, now=NOW).token_id == "abcdefgh"


def test_two_tokens_for_one_client_differ() -> None:
    assert issue(SECRET, CLIENT, 60, NOW) != issue(SECRET, CLIENT, 60, NOW)


def test_a_forged_signature_is_refused() -> None:
    forged = issue("attacker-" + "z" * 32, CLIENT, 3600, NOW)
    with pytest.raises(BadSignature) as info:
        verify(SECRET, forged, CLIENT, now=NOW)
    assert info.value.close_code == CloseCode.UNAUTHORIZED
    assert int(info.value.close_code) == 4001


def test_a_tampered_payload_is_refused() -> None:
    payload, signature = TOKEN.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "client-7"
    with pytest.raises(BadSignature):
        verify(SECRET, f"{b64(json.dumps(claims).encode())}.{signature}", "client-7", now=NOW)
    claims["sub"], claims["exp"] = CLIENT, claims["exp"] + 10**6
    with pytest.raises(BadSignature):
        verify(SECRET, f"{b64(json.dumps(claims).encode())}.{signature}", CLIENT, now=NOW)


def test_a_token_for_another_client_is_forbidden() -> None:
    with pytest.raises(WrongClient) as info:
        verify(SECRET, TOKEN, "client-7", now=NOW)
    assert info.value.close_code == CloseCode.FORBIDDEN
    assert int(info.value.close_code) == 4003


def test_a_token_expires_after_its_lifetime_and_the_leeway() -> None:
    expires = int(NOW) + 3600
    assert verify(SECRET, TOKEN, CLIENT, now=expires + DEFAULT_LEEWAY_S - 0.001)
    with pytest.raises(ExpiredToken) as info:
        verify(SECRET, TOKEN, CLIENT, now=expires + DEFAULT_LEEWAY_S)
    assert info.value.close_code == CloseCode.TOKEN_EXPIRED
    assert int(info.value.close_code) == 4004
    with pytest.raises(ExpiredToken):
        verify(SECRET, TOKEN, CLIENT, now=expires, leeway_s=0)


def test_a_token_from_the_future_is_refused_beyond_the_leeway() -> None:
    assert verify(SECRET, TOKEN, CLIENT, now=NOW - DEFAULT_LEEWAY_S)
    with pytest.raises(TokenNotYetValid) as info:
        verify(SECRET, TOKEN, CLIENT, now=NOW - DEFAULT_LEEWAY_S - 1)
    assert info.value.close_code == CloseCode.TOKEN_EXPIRED


def test_a_foreign_token_is_refused_even_when_it_has_expired() -> None:
    with pytest.raises(WrongClient):
        verify(SECRET, TOKEN, "client-7", now=NOW + 10**6)


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_unauthorized(token: str | None) -> None:
    with pytest.raises(MissingToken, match="token missing") as info:
        verify(SECRET, token, CLIENT, now=NOW)
    assert isinstance(info.value, MalformedToken)
    assert info.value.close_code == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b.c",
        ".",
        TOKEN + ".",
        "." + TOKEN.split(".")[1],
        TOKEN.split(".")[0] + ".",
        TOKEN + "==",
        TOKEN.replace("-", "+").replace("_", "/") if set("-_") & set(TOKEN) else TOKEN + "+",
        " " + TOKEN,
        TOKEN.split(".")[0] + ".é" + TOKEN.split(".")[1][1:],
        TOKEN.split(".")[0] + "." + TOKEN.split(".")[1][:-2],
        TOKEN.split(".")[0] + "." + TOKEN.split(".")[1] + "AAAA",
        TOKEN.split(".")[0] + "." + "A",
        "x" * 5000 + "." + TOKEN.split(".")[1],
        "Bearer " + TOKEN,
    ],
)
def test_a_malformed_token_is_unauthorized(token: str) -> None:
    with pytest.raises(MalformedToken) as info:
        verify(SECRET, token, CLIENT, now=NOW)
    assert info.value.close_code == CloseCode.UNAUTHORIZED


def test_a_second_spelling_of_the_signature_is_refused() -> None:
    payload, signature = TOKEN.split(".")
    # 32 bytes take 43 characters: the last one has 2 unused bits, so 4 spellings decode alike.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    for low_bits in range(1, 4):
        twin = signature[:-1] + alphabet[last ^ low_bits]
        assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(signature + "=")
        with pytest.raises(MalformedToken):
            verify(SECRET, f"{payload}.{twin}", CLIENT, now=NOW)


@pytest.mark.parametrize(
    ("claims", "raw", "reason"),
    [
        (GOOD_CLAIMS | {"v": 2}, None, "token version unsupported"),
        (GOOD_CLAIMS | {"v": True}, None, "token version unsupported"),
        (GOOD_CLAIMS | {"admin": True}, None, "token malformed"),
        ({k: v for k, v in GOOD_CLAIMS.items() if k != "jti"}, None, "token malformed"),
        (GOOD_CLAIMS | {"exp": int(NOW)}, None, "token malformed"),
        (GOOD_CLAIMS | {"iat": True}, None, "token malformed"),
        (GOOD_CLAIMS | {"exp": NOW + 60.5}, None, "token malformed"),
        (GOOD_CLAIMS | {"sub": "client 42"}, None, "token malformed"),
        (GOOD_CLAIMS | {"sub": ""}, None, "token malformed"),
        (GOOD_CLAIMS | {"jti": "x"}, None, "token malformed"),
        ([1, 2], None, "token malformed"),
        (None, b"not json", "token malformed"),
        (None, b"\xff\xfe", "token malformed"),
        (None, b"[" * 5000, "token malformed"),
    ],
)
def test_signed_but_malformed_claims_are_refused(
    claims: object, raw: bytes | None, reason: str
) -> None:
    with pytest.raises(MalformedToken) as info:
        verify(SECRET, signed(claims, raw=raw), CLIENT, now=NOW)
    assert info.value.reason == reason


def test_a_lifetime_beyond_the_limit_is_refused_even_when_signed() -> None:
    too_long = DEFAULT_MAX_TTL_S + 1
    token = issue(SECRET, CLIENT, too_long, NOW, max_ttl_s=too_long)
    with pytest.raises(MalformedToken, match="token lifetime too long"):
        verify(SECRET, token, CLIENT, now=NOW)
    assert verify(SECRET, token, CLIENT, now=NOW, max_ttl_s=too_long)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"ttl_s": DEFAULT_MAX_TTL_S + 1}, "ttl_s"),
        ({"ttl_s": 0.5}, "ttl_s"),
        ({"ttl_s": float("inf")}, "ttl_s"),
        ({"now": float("nan")}, "now"),
        ({"now": -1.0}, "now"),
        ({"client_id": ""}, "client_id"),
        ({"client_id": "a b"}, "client_id"),
        ({"client_id": "x" * 257}, "client_id"),
        ({"nonce": "short"}, "nonce"),
        ({"secrets": "too short"}, "at least 32 bytes"),
        ({"secrets": []}, "no token secret"),
    ],
)
def test_issue_refuses_what_would_make_a_bad_token(
    change: dict[str, object], fragment: str
) -> None:
    args: dict[str, object] = {"secrets": SECRET, "client_id": CLIENT, "ttl_s": 60, "now": NOW}
    with pytest.raises(ValueError, match=fragment):
        issue(**(args | change))  # type: ignore[arg-type]


def test_verify_refuses_a_clock_that_is_not_a_number() -> None:
    # NaN compares false with everything, so it would pass every expiry check.
    with pytest.raises(ValueError, match="now"):
        verify(SECRET, TOKEN, CLIENT, now=float("nan"))


def test_rotated_secrets_current_first() -> None:
    old_token = issue(OLD_SECRET, CLIENT, 3600, NOW)
    rotated: list[Secret] = [SECRET, OLD_SECRET]
    assert verify(rotated, old_token, CLIENT, now=NOW).key_index == 1
    new_token = issue(rotated, CLIENT, 3600, NOW)
    assert verify(rotated, new_token, CLIENT, now=NOW).key_index == 0
    assert verify(SECRET, new_token, CLIENT, now=NOW).key_index == 0
    with pytest.raises(BadSignature):
        verify(SECRET, old_token, CLIENT, now=NOW)
    with pytest.raises(BadSignature):
        verify(OLD_SECRET, new_token, CLIENT, now=NOW)


def test_pydantic_secret_types_are_accepted() -> None:
    assert verify(SecretStr(SECRET), TOKEN, CLIENT, now=NOW)
    assert verify([SecretBytes(SECRET.encode())], TOKEN, CLIENT, now=NOW)
    check_secrets((SecretStr(SECRET), OLD_SECRET))
    with pytest.raises(TypeError):
        check_secrets(42)  # type: ignore[arg-type]


def test_no_error_carries_the_secret_or_the_token() -> None:
    forged = issue("attacker-" + "z" * 32, CLIENT, 60, NOW)
    attempts = [
        (forged, CLIENT, NOW),
        (TOKEN, "client-7", NOW),
        (TOKEN, CLIENT, NOW + 10**6),
        (TOKEN, CLIENT, NOW - 10**6),
        (TOKEN + "x", CLIENT, NOW),
        ("", CLIENT, NOW),
        (signed(GOOD_CLAIMS | {"v": 2}), CLIENT, NOW),
    ]
    errors: list[Exception] = []
    for token, client, now in attempts:
        with pytest.raises(TokenError) as info:
            verify([SECRET, OLD_SECRET], token, client, now=now)
        errors.append(info.value)
    for secret in ("short", SECRET[:20]):
        with pytest.raises(ValueError) as value_error:
            issue(secret, CLIENT, 60, NOW)
        errors.append(value_error.value)
    for error in errors:
        assert error.__cause__ is None
        assert error.__suppress_context__ or error.__context__ is None
        for text in (str(error), repr(error), *map(str, error.args)):
            for secret in (SECRET, OLD_SECRET.decode(), "short", SECRET[:20], TOKEN, forged):
                assert secret not in text
    assert SECRET not in repr(verify(SECRET, TOKEN, CLIENT, now=NOW))


@pytest.mark.parametrize(
    "error", [MissingToken, MalformedToken, BadSignature, ExpiredToken, TokenNotYetValid]
)
def test_reasons_fit_in_a_close_frame(error: type[TokenError]) -> None:
    # RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
    assert len(error().reason.encode()) <= 123
    assert len(WrongClient().reason.encode()) <= 123


@given(st.text(max_size=300))
def test_random_text_never_verifies_and_only_raises_token_errors(token: str) -> None:
    with pytest.raises(TokenError):
        verify(SECRET, token, CLIENT, now=NOW)


@given(st.from_regex(r"[A-Za-z0-9_-]{0,120}\.[A-Za-z0-9_-]{0,60}", fullmatch=True))
def test_random_two_part_tokens_never_verify(token: str) -> None:
    with pytest.raises(TokenError):
        verify(SECRET, token, None, now=NOW)


@given(st.data())
def test_changing_any_one_character_breaks_the_token(data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(TOKEN) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != TOKEN[position]))
    with pytest.raises(TokenError):
        verify(SECRET, TOKEN[:position] + replacement + TOKEN[position + 1 :], CLIENT, now=NOW)


@pytest.mark.parametrize(
    ("authorization", "query", "expected"),
    [
        (f"Bearer {TOKEN}", None, TOKEN),
        (f"bearer   {TOKEN} ", None, TOKEN),
        (None, TOKEN, TOKEN),
        (f"Bearer {TOKEN}", TOKEN, TOKEN),
        (None, None, None),
        ("", "", None),
    ],
)
def test_the_token_comes_from_the_header_or_the_query(
    authorization: str | None, query: str | None, expected: str | None
) -> None:
    assert token_from(authorization, query) == expected


@pytest.mark.parametrize(
    ("authorization", "query"),
    [(f"Basic {TOKEN}", None), ("Bearer", None), ("Bearer  ", None), ("Bearer a", "b")],
)
def test_a_confusing_authorization_is_malformed(authorization: str, query: str | None) -> None:
    with pytest.raises(MalformedToken):
        token_from(authorization, query)
