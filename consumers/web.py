"""A cache node's HTTP handlers: content on demand, the agents' beacon, /healthz and /metrics.

``GET /v1/content/{id}`` answers an agent's miss from memory, Cassandra or the origin and
records it as an interaction (docs/push-protocol.md, "Fetching a miss over HTTP");
``POST /v1/agents/beacon`` records what an agent without a socket still holds ("Feedback");
``/healthz`` answers 503, naming what failed, once a supervised task of the node has ended.
The agents' WebSocket is consumers.agent_socket's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.auth import client_of
from consumers.fetcher import FetchFailed, FetchRefused
from consumers.metrics import BEACONS, REQUESTS
from consumers.process import NODE
from schemas import InvalidRecord
from schemas.protocol import (
    ACKED_HEADER,
    BEACON_MAX,
    EVENT_HEADER,
    Feedback,
    View,
    decode_from_agent,
)
from schemas.records import is_identifier

#: How long a request from an agent with no socket here waits for Kafka's ack before the
#: answer goes without it (the agent then keeps the request until an ack or its close).
ACK_IN_RESPONSE_S = 5.0


async def get_content(request: web.Request) -> web.StreamResponse:
    with request.app[NODE].gate.serving_request():
        return await _get_content(request)


async def _get_content(request: web.Request) -> web.StreamResponse:
    process = request.app[NODE]
    client_id = client_of(request, process.secrets)
    content_id = request.match_info["content_id"]
    agent_id = request.headers.get(EVENT_HEADER)
    if agent_id is not None and not is_identifier(agent_id):
        REQUESTS.labels("refused").inc()
        raise web.HTTPBadRequest(reason=f"{EVENT_HEADER} must be an identifier")
    owner = process.ownership.owner_url(client_id)
    if owner is not None:
        REQUESTS.labels("misdirected").inc()
        return web.Response(status=421, headers={"Location": owner})
    try:
        item = await process.node.ensure(content_id, prefetch=False)
    except FetchRefused as exc:
        REQUESTS.labels("refused").inc()
        raise web.HTTPNotFound(reason=str(exc)[:120]) from None
    except FetchFailed as exc:
        REQUESTS.labels("failed").inc()
        raise web.HTTPBadGateway(reason=str(exc)[:120]) from None
    headers = {
        "Content-Type": item.content_type,
        "ETag": item.etag or f'"{item.digest}"',
        "X-Content-Version": str(item.version),
        "X-Content-Digest": item.digest,
    }
    # Global Privacy Control: served, never recorded for the model.
    if request.headers.get("Sec-GPC") != "1":
        if agent_id is not None and process.sessions.get(client_id) is None:
            # No socket here to ack the request on: answer once Kafka holds it.
            delivered = asyncio.get_running_loop().create_future()
            process.outbox.record_request(
                client_id, content_id, agent_id=agent_id, ack=False, delivered=delivered
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_IN_RESPONSE_S):
                    if await delivered:
                        headers[ACKED_HEADER] = "1"
        else:
            process.outbox.record_request(client_id, content_id, agent_id=agent_id)
    session = process.sessions.get(client_id)
    if session is not None and session.holdings.get(content_id, -1) < item.version:
        # The agent keeps what it fetched: pushing it later would only waste its bytes.
        session.holdings[content_id] = item.version
    REQUESTS.labels("served").inc()
    return web.Response(body=item.body, headers=headers)


async def beacon(request: web.Request) -> web.Response:
    """Feedback and views an agent could not send on a socket (it is closing, or its node is
    gone): recorded like the socket's, by any node. 202 when all were recorded; 400 with a
    reason per refused message (the others are still recorded)."""
    process = request.app[NODE]
    client_id = client_of(request, process.secrets)
    try:
        items = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    if not isinstance(items, list) or len(items) > BEACON_MAX:
        return web.json_response(
            {"error": f"the body must be a JSON array of at most {BEACON_MAX} messages"},
            status=400,
        )
    errors: list[dict[str, object]] = []
    for index, item in enumerate(items):
        try:
            message = decode_from_agent(json.dumps(item))
        except InvalidRecord as exc:
            errors.append({"index": index, "reason": exc.reason})
            continue
        if isinstance(message, Feedback):
            process.outbox.relay_feedback(client_id, message)
        elif isinstance(message, View):
            process.outbox.record_request(
                client_id, message.content_id, message.kind, message.ts, message.id, ack=False
            )
        else:
            kind = type(message).__name__.lower()
            errors.append({"index": index, "reason": f"a {kind} message is not for a beacon"})
    BEACONS.labels("refused" if errors else "recorded").inc()
    payload: dict[str, object] = {"recorded": len(items) - len(errors), "refused": len(errors)}
    if errors:
        return web.json_response({**payload, "errors": errors}, status=400)
    return web.json_response(payload, status=202)


async def healthz(request: web.Request) -> web.Response:
    """The node, its agents and its ring; 503 once a supervised task failed, naming it (and
    the node stops soon after: see consumers.supervisor)."""
    process = request.app[NODE]
    failed = process.supervisor.failures
    return web.json_response(
        {
            "node_id": process.config.node_id,
            "slot": process.config.slot,
            "agents": len(process.sessions),
            "ring": [m.node_id for m in process.ownership.members()],
            "failed": dict(failed),
        },
        status=503 if failed else 200,
    )


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
