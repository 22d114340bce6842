"""The cache node process: `foresight cache-node --node-id N --port P`, composed and run.

Builds the aiohttp app around a :class:`consumers.process.NodeProcess`: the agents' WebSocket
(consumers.agent_socket), content on demand, the beacon, /healthz and /metrics
(consumers.web), the agents' browser files (consumers.static); and a cleanup context that
reaches Cassandra and the origin, starts the node's supervised background work and stops it.
On shutdown the node leaves the ring and redirects its agents to their new owners. A node
whose background task failed answers /healthz with 503 at once and stops FAILURE_GRACE_S
later, exiting with status 1 (consumers.supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from consumers.agent_socket import agent_socket
from consumers.fetcher import Fetcher, FetcherConfig
from consumers.node import CacheNode
from consumers.ownership import NodeConfig
from consumers.process import NODE, NodeProcess
from consumers.static import add_agent_routes
from consumers.store import ContentStore
from consumers.supervisor import FAILURE_GRACE_S
from consumers.web import beacon, get_content, healthz, metrics
from foresight import tokens
from foresight.cassandra import connect
from foresight.settings import Settings
from schemas.protocol import BEACON_PATH, WS_PATH

# NodeConfig lives in consumers.ownership; the CLI imports it from here, with run.
__all__ = ["FAILED_EXIT_STATUS", "NodeConfig", "create_app", "run"]

log = logging.getLogger(__name__)

#: The exit status of a node stopped because a background task failed.
FAILED_EXIT_STATUS = 1


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    process = app[NODE]
    settings = process.settings
    cluster, session = await asyncio.to_thread(connect, settings, settings.cassandra_keyspace)
    http = aiohttp.ClientSession()
    fetcher = Fetcher(
        FetcherConfig(
            url_template=settings.origin_url_template,
            allowed_hosts=tuple(h.lower() for h in settings.origin_allowed_hosts),
            no_prefetch_patterns=tuple(settings.no_prefetch_patterns),
            max_bytes=settings.fetch_max_bytes,
            timeout_s=settings.fetch_timeout_s,
        ),
        http,
    )
    store = await asyncio.to_thread(
        ContentStore, session, settings.cassandra_keyspace, pending_ttl_s=settings.prefetch_ttl_s
    )
    node = CacheNode(
        process.config.node_id,
        store,
        fetcher,
        process.sessions,
        push_bytes_per_odds=settings.push_bytes_per_odds,
        body_cache_bytes=settings.node_body_cache_mb * 2**20,
        shed_after_s=settings.prefetch_shed_after_s,
    )
    await process.start(node)
    yield
    await process.stop()
    await http.close()
    await asyncio.to_thread(cluster.shutdown)


async def _leave(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for open handlers: leave the ring and send every
    agent to its new owner, so their sockets close now instead of after the shutdown timeout."""
    await app[NODE].leave()


def create_app(
    settings: Settings,
    config: NodeConfig,
    *,
    on_failure: Callable[[], None] | None = None,
    grace_s: float = FAILURE_GRACE_S,
) -> web.Application:
    """The node's app. ``on_failure`` runs ``grace_s`` after a background task failed (run()
    stops the process); /healthz answers 503 from the failure on, with or without it."""
    tokens.check_secrets(settings.agent_token_secrets)
    app = web.Application()
    app[NODE] = NodeProcess(settings, config, on_failure=on_failure, grace_s=grace_s)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get(WS_PATH, agent_socket)
    app.router.add_post(BEACON_PATH, beacon)
    app.router.add_get("/v1/content/{content_id:.+}", get_content)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_agent_routes(app)
    app.on_shutdown.append(_leave)
    return app


def _stop_process() -> None:
    """Stop as SIGTERM does: leave the ring, redirect the agents, flush, close."""
    signal.raise_signal(signal.SIGTERM)


def run(settings: Settings, config: NodeConfig) -> None:
    """Serve until SIGINT or SIGTERM, or until a background task failed: the node then exits
    with FAILED_EXIT_STATUS, for its process manager to start it again."""
    app = create_app(settings, config, on_failure=_stop_process)
    web.run_app(app, host=config.host, port=config.port, print=None)
    failures = app[NODE].supervisor.failures
    if failures:
        log.error("stopped because %s failed", ", ".join(sorted(failures)))
        raise SystemExit(FAILED_EXIT_STATUS)
