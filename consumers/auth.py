"""Which client a request to a cache node speaks for: the agent token it carries, verified.

The token comes in the Authorization header or as ``?token=`` (browsers cannot set headers on a
WebSocket); docs/push-protocol.md ("Tokens") says what is checked. A token signed by an old
secret is logged, so an operator rotating secrets sees who still uses it.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from foresight import tokens

log = logging.getLogger(__name__)


def claims(request: web.Request, secrets: tokens.Secrets) -> tokens.TokenClaims:
    """The claims of the request's token (header or ``?token=``), or a TokenError."""
    token = tokens.token_from(request.headers.get("Authorization"), request.query.get("token"))
    verified = tokens.verify(secrets, token, None, time.time())
    if verified.key_index > 0:
        log.info(
            "token of client %s (id %s) is signed by old secret #%d",
            verified.client_id,
            verified.token_id,
            verified.key_index,
        )
    return verified


def client_of(request: web.Request, secrets: tokens.Secrets) -> str:
    """The client a request's token proves, or an HTTP error (401, or 403 for another
    client's)."""
    try:
        return claims(request, secrets).client_id
    except tokens.WrongClient as exc:
        raise web.HTTPForbidden(reason=exc.reason) from None
    except tokens.TokenError as exc:
        raise web.HTTPUnauthorized(reason=exc.reason) from None
