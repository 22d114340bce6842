"""`foresight origin` and `foresight token issue`: the content side of delivery."""

from __future__ import annotations

import time

import click

from foresight.cli.common import console, fail, log_as_service, settings_of


@click.command("origin")
@click.option("--port", type=click.IntRange(1, 65535), help="Override FORESIGHT_ORIGIN_PORT.")
@click.pass_context
def origin_command(ctx: click.Context, port: int | None) -> None:
    """Run the demo origin: GET /content/{id} with ETags and versions, POST .../bump."""
    from foresight.cli.data import require_topics
    from origin import server

    settings = settings_of(ctx)
    if port is not None:
        settings = settings.model_copy(update={"origin_port": port})
    require_topics(settings, [settings.topic_content_updates])
    log_as_service(ctx)
    console.print(
        f"origin on http://{settings.origin_host}:{settings.origin_port}/content/{{content_id}}"
    )
    server.run(settings)


@click.group("token")
def token_group() -> None:
    """Agent tokens."""


@token_group.command("issue")
@click.argument("client_id")
@click.option(
    "--ttl",
    "ttl_s",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Lifetime in seconds; default FORESIGHT_AGENT_TOKEN_TTL_S.",
)
@click.pass_context
def token_issue(ctx: click.Context, client_id: str, ttl_s: float | None) -> None:
    """Print a signed, expiring token that lets CLIENT_ID's agent connect."""
    from foresight import tokens

    settings = settings_of(ctx)
    secrets = settings.agent_token_secrets
    if not secrets:
        fail(
            "no agent token secret: set FORESIGHT_AGENT_TOKEN_SECRETS to a JSON list of "
            "secrets of 32 bytes or more"
        )
    try:
        tokens.check_secrets(secrets)
        token = tokens.issue(secrets, client_id, ttl_s or settings.agent_token_ttl_s, time.time())
    except ValueError as exc:
        fail(str(exc))
    click.echo(token)


@click.command("cache-node")
@click.option(
    "--node-id",
    type=click.IntRange(0, 100_000),
    required=True,
    help="This node's number: its id is node-N and it owns ring slot N.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port to listen on; default FORESIGHT_CACHE_NODE_BASE_PORT + N.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.pass_context
def cache_node_command(ctx: click.Context, node_id: int, port: int | None, host: str) -> None:
    """Run a cache node: prefetch, store in Cassandra, push to agents over WebSockets."""
    from foresight import tokens
    from foresight.cli.data import require_topics

    settings = settings_of(ctx)
    if node_id >= settings.prefetch_command_slots:
        fail(
            f"--node-id {node_id} has no slot: prefetch-commands has "
            f"{settings.prefetch_command_slots} partitions (FORESIGHT_PREFETCH_COMMAND_SLOTS)"
        )
    try:
        tokens.check_secrets(settings.agent_token_secrets)
    except ValueError as exc:
        fail(f"FORESIGHT_AGENT_TOKEN_SECRETS: {exc}")
    require_topics(
        settings,
        [
            settings.topic_prefetch_commands,
            settings.topic_ring_membership,
            settings.topic_content_updates,
            settings.topic_feedback,
        ],
    )
    log_as_service(ctx)
    from consumers.server import NodeConfig, run

    config = NodeConfig(
        node_id=f"node-{node_id}",
        slot=node_id,
        host=host,
        port=port or settings.cache_node_base_port + node_id,
    )
    console.print(f"cache node {config.node_id} (slot {config.slot}) on {config.url}")
    run(settings, config)


@click.command("agent")
@click.argument("client_id")
@click.option("--url", required=True, help="Any cache node's base URL, e.g. http://127.0.0.1:8710.")
@click.option(
    "--token",
    envvar="FORESIGHT_AGENT_TOKEN",
    default=None,
    help="The agent token (or FORESIGHT_AGENT_TOKEN); issued here when the secrets are configured.",
)
@click.option("--get", "gets", multiple=True, help="Content ids to get, in order (repeatable).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to stay connected receiving pushes before the gets.",
)
@click.pass_context
def agent_command(
    ctx: click.Context,
    client_id: str,
    url: str,
    token: str | None,
    gets: tuple[str, ...],
    watch: float,
) -> None:
    """Connect as CLIENT_ID's agent: receive pushes, then get items from the local cache."""
    import asyncio

    from rich.table import Table

    from agents.sdk import Agent, AgentError
    from foresight import tokens

    settings = settings_of(ctx)
    if token is None:
        if not settings.agent_token_secrets:
            fail(
                "no token: pass --token, set FORESIGHT_AGENT_TOKEN, or configure "
                "FORESIGHT_AGENT_TOKEN_SECRETS"
            )
        try:
            token = tokens.issue(
                settings.agent_token_secrets, client_id, settings.agent_token_ttl_s, time.time()
            )
        except ValueError as exc:
            fail(f"FORESIGHT_AGENT_TOKEN_SECRETS: {exc}")

    async def session() -> Table:
        table = Table("content", "from", "version", "bytes", "ms")
        # A person at a terminal: a few seconds of retrying, not an app's half minute.
        async with Agent(client_id, token, url, connect_retry_s=3.0) as agent:
            console.print(f"connected to {agent.node_id} ({agent.owner_url})")
            await asyncio.sleep(watch)
            for content_id in gets:
                got = await agent.get(content_id)
                table.add_row(
                    content_id,
                    "local cache" if got.from_cache else "node",
                    str(got.version),
                    str(len(got.body)),
                    f"{got.latency_ms:.1f}",
                )
            stats = agent.stats
            console.print(
                f"pushes={stats.pushes} updates={stats.updates} hits={stats.hits} "
                f"misses={stats.misses} held={len(agent.cache.holdings())}"
            )
        return table

    try:
        table = asyncio.run(session())
    except AgentError as exc:
        fail(f"agent: {exc}")
    if gets:
        console.print(table)
