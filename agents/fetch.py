"""Content fetched from the owner node over HTTP, when the local cache does not hold it.

``GET /v1/content/{id}`` with the agent's token: a 421 names the owner (followed once), the
body is checked against the node's ``X-Content-Digest``, and ``X-Foresight-Acked`` says whether
the node had Kafka's ack for the request before it answered (docs/push-protocol.md). While no
node can be reached the fetch is tried again, the next node heard of each time: when the owner
dies, the ring hands its clients to another node within its heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote, urljoin

import aiohttp

from agents.errors import (
    AgentAuthError,
    AgentConnectionError,
    AgentError,
    ContentCorrupt,
    ContentNotFound,
)
from agents.nodes import NodeDirectory
from agents.stats import AgentStats
from schemas.protocol import ACKED_HEADER, EVENT_HEADER, digest

log = logging.getLogger(__name__)

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30.0)
#: How long a get keeps trying a node it cannot reach (see ContentFetcher.fetch_retrying).
FETCH_RETRY_S = 30.0


class Fetched(NamedTuple):
    version: int
    content_type: str
    body: bytes
    digest: str
    #: The node had Kafka's ack for the request before it answered.
    acked: bool


class ContentFetcher:
    """Fetches one client's content from its owner node, following what the nodes say."""

    def __init__(
        self, client_id: str, token: str, nodes: NodeDirectory, stats: AgentStats, *, private: bool
    ) -> None:
        self._client_id = client_id
        self._token = token
        self._nodes = nodes
        self._stats = stats
        self._private = private

    async def fetch_retrying(
        self,
        session: aiohttp.ClientSession,
        content_id: str,
        request_id: str | None,
        *,
        stopped: Callable[[], bool],
    ) -> Fetched:
        """:meth:`fetch`, tried again for up to FETCH_RETRY_S while the node cannot be
        reached, unless ``stopped()`` (the agent stopped for good) says not to."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + FETCH_RETRY_S, 0.25
        while True:
            try:
                return await self.fetch(session, content_id, request_id)
            except AgentConnectionError:
                if stopped() or loop.time() + delay > deadline:
                    raise
                self._stats.fetch_retries += 1
                # The next node heard of: it serves, or answers 421 with the owner it knows.
                self._nodes.next_owner()
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def fetch(
        self, session: aiohttp.ClientSession, content_id: str, request_id: str | None
    ) -> Fetched:
        """The content from the owner; a 421 is followed once.

        Raises ContentNotFound, AgentAuthError, ContentCorrupt, AgentConnectionError (cannot
        reach, or misdirected twice) or AgentError (any other status)."""
        headers = {"Authorization": f"Bearer {self._token}"}
        if self._private:
            headers["Sec-GPC"] = "1"
        if request_id is not None:
            headers[EVENT_HEADER] = request_id
        for attempt in range(2):
            url = f"{self._nodes.owner}/v1/content/{quote(content_id, safe='')}"
            try:
                async with session.get(
                    url, headers=headers, allow_redirects=False, timeout=HTTP_TIMEOUT
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status == 421 and location and attempt == 0:
                        self._nodes.moved_to(urljoin(url, location).rstrip("/"))
                        log.info("content owner of %s is %s", self._client_id, self._nodes.owner)
                        continue
                    if resp.status == 421:
                        # Two nodes each name the other: their rings disagree for a moment (a
                        # node's heartbeats are catching up); fetch_retrying tries again.
                        raise AgentConnectionError(f"{url}: misdirected twice")
                    if resp.status in (401, 403):
                        owner = self._nodes.owner
                        raise AgentAuthError(f"token refused by {owner} ({resp.status})")
                    if resp.status == 404:
                        raise ContentNotFound(content_id)
                    if resp.status != 200:
                        raise AgentError(f"{url} answered {resp.status} {resp.reason}")
                    body = await resp.read()
                    content_type = resp.headers.get("Content-Type", "application/octet-stream")
                    sent_digest = resp.headers.get("X-Content-Digest", digest(body))
                    version = int(resp.headers.get("X-Content-Version", ""))
                    acked = resp.headers.get(ACKED_HEADER) == "1"
            except aiohttp.ClientError as exc:
                raise AgentConnectionError(f"cannot fetch {content_id}: {exc!r}") from exc
            except ValueError as exc:
                raise ContentCorrupt(f"{url}: no integer X-Content-Version") from exc
            if sent_digest != digest(body):
                raise ContentCorrupt(f"{url}: body does not match X-Content-Digest")
            return Fetched(version, content_type, body, sent_digest, acked)
        raise AgentConnectionError(f"{content_id}: misdirected twice")
