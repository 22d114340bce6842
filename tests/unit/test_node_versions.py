"""Fresh versions everywhere: once a content update is out, a cache node serves and pushes only
the newest version, whoever held the item, and agents holding an older one (from their hello or
from pushes) get an update. Over in-memory fakes of the store and the origin."""

from __future__ import annotations

from typing import cast

from consumers.fetcher import Fetched, Fetcher, NotAtOrigin
from consumers.node import CacheNode
from consumers.sessions import AgentSession, SessionRegistry
from consumers.store import ContentStore, StoredVersion
from schemas import ContentUpdate
from schemas.protocol import Invalidate, Push, Update, decode_from_node


class VersionStore:
    """The parts of ContentStore the command and update paths use, in memory."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], StoredVersion] = {}
        self.holdings: dict[str, dict[str, int]] = {}
        self.kept: dict[str, dict[str, int]] = {}  # pending pushes

    async def latest(self, content_id: str) -> StoredVersion | None:
        versions = [v for (c, v) in self.versions if c == content_id]
        return self.versions[(content_id, max(versions))] if versions else None

    async def version(self, content_id: str, version: int) -> StoredVersion | None:
        return self.versions.get((content_id, version))

    async def put_version(self, item: StoredVersion) -> None:
        self.versions[(item.content_id, item.version)] = item

    async def record_holding(self, client_id: str, item: StoredVersion) -> None:
        self.holdings.setdefault(client_id, {})[item.content_id] = item.version

    async def record_holdings(self, held: list[tuple[str, StoredVersion]]) -> None:
        for client_id, item in held:
            await self.record_holding(client_id, item)

    async def drop_holding(self, client_id: str, content_id: str) -> None:
        self.holdings.get(client_id, {}).pop(content_id, None)

    async def holders(self, content_id: str) -> dict[str, int]:
        return {c: held[content_id] for c, held in self.holdings.items() if content_id in held}

    async def queue_pending(self, client_id: str, content_id: str, version: int) -> None:
        self.kept.setdefault(client_id, {})[content_id] = version

    async def pending(self, client_id: str) -> dict[str, int]:
        return dict(self.kept.get(client_id, {}))

    async def clear_pending(self, client_id: str, content_id: str) -> None:
        self.kept.get(client_id, {}).pop(content_id, None)


class VersionedOrigin:
    """An origin whose items are at a version an operator bumps; counts the fetches."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.gone: set[str] = set()
        self.fetched: list[tuple[str, int]] = []

    def bump(self, content_id: str) -> ContentUpdate:
        self.current[content_id] = self.current.get(content_id, 1) + 1
        return ContentUpdate(content_id=content_id, version=self.current[content_id], ts=1.0)

    async def fetch(
        self, content_id: str, *, etag: str | None = None, prefetch: bool = True
    ) -> Fetched:
        if content_id in self.gone:
            raise NotAtOrigin(f"{content_id}: origin answered 404")
        version = self.current.setdefault(content_id, 1)
        self.fetched.append((content_id, version))
        body = f"{content_id} v{version}".encode()
        return Fetched(content_id, 200, body, f'"{version}"', "text/plain", version)


def make_node(store: VersionStore, origin: VersionedOrigin) -> CacheNode:
    return CacheNode("node-0", cast(ContentStore, store), cast(Fetcher, origin), SessionRegistry())


async def connect(node: CacheNode, client_id: str, holdings: dict[str, int]) -> list[object]:
    """An agent connected with ``holdings`` in its hello; returns the list its frames go to."""
    received: list[object] = []

    async def send(frame: bytes) -> None:
        received.append(decode_from_node(frame))

    async def close(code: int, reason: str) -> None:
        pass

    session = AgentSession(client_id, send, close)
    session.holdings = dict(holdings)
    await node.sessions.add(session)
    await node.deliver_pending(session)
    return received


async def settle(node: CacheNode) -> None:
    """Let the sender tasks run and the background writes land."""
    await node.drain()
    for session in node.sessions.all():
        await node.sessions.remove(session)


async def test_a_node_that_served_an_item_serves_the_new_version_after_an_update() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    assert (await node.ensure("page", prefetch=False)).version == 1  # now in its memory
    update = origin.bump("page")
    # Nobody holds the item, so no agent needs an update; the node must still forget v1.
    await node.on_update(update)
    served = await node.ensure("page", prefetch=False)
    assert (served.version, served.body) == (2, b"page v2")
    await node.drain()
    latest = await store.latest("page")
    assert latest is not None and latest.version == 2, "content_latest still names version 1"


async def test_a_node_that_missed_nothing_in_memory_does_not_trust_an_older_stored_version() -> (
    None
):
    store, origin = VersionStore(), VersionedOrigin()
    other = make_node(store, origin)
    await other.ensure("page", prefetch=False)
    await other.drain()  # version 1 stored by another node
    node = make_node(store, origin)
    update = origin.bump("page")
    await node.on_update(update)
    assert (await node.ensure("page")).version == 2
    # The other node hears of the update too and serves version 2 from the store, no fetch.
    fetches = len(origin.fetched)
    await node.drain()
    await other.on_update(update)
    assert (await other.ensure("page", prefetch=False)).version == 2
    assert len(origin.fetched) == fetches


async def test_an_agent_that_listed_an_item_in_its_hello_gets_the_update() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    received = await connect(node, "client-1", {"page": 1})
    other = await connect(node, "client-2", {"elsewhere": 1})
    assert await node.on_update(origin.bump("page")) == 1
    await settle(node)
    updates = [m for m in received if isinstance(m, Update)]
    assert [(u.content_id, u.version, u.previous_version) for u in updates] == [("page", 2, 1)]
    assert updates[0].body == b"page v2"
    assert not [m for m in other if isinstance(m, Update | Push)]


async def test_an_agent_that_connects_with_an_outdated_holding_is_sent_the_new_version() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    await node.ensure("page", prefetch=False)
    await node.on_update(origin.bump("page"))  # the agent was away at bump time
    received = await connect(node, "client-1", {"page": 1, "fresh": 1})
    await settle(node)
    updates = [m for m in received if isinstance(m, Update)]
    assert [(u.content_id, u.version, u.previous_version) for u in updates] == [("page", 2, 1)]


async def test_a_prefetch_after_an_update_pushes_the_new_version() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    await node.ensure("page")
    await node.drain()
    await node.on_update(origin.bump("page"))
    received = await connect(node, "client-1", {})
    item = await node.ensure("page")
    assert await node.deliver("client-1", item) == "pushed"
    await settle(node)
    pushes = [m for m in received if isinstance(m, Push)]
    assert [(p.content_id, p.version) for p in pushes] == [("page", 2)]


async def test_content_gone_from_the_origin_is_invalidated_at_its_holders() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    received = await connect(node, "client-1", {"page": 1})
    origin.gone.add("page")
    assert await node.on_update(ContentUpdate(content_id="page", version=2, ts=1.0)) == 1
    session = node.sessions.get("client-1")
    assert session is not None and "page" not in session.holdings
    await settle(node)
    assert [m.content_id for m in received if isinstance(m, Invalidate)] == ["page"]


async def test_an_update_naming_a_version_the_origin_does_not_serve_costs_one_fetch() -> None:
    store, origin = VersionStore(), VersionedOrigin()
    node = make_node(store, origin)
    await node.ensure("page", prefetch=False)
    await node.on_update(ContentUpdate(content_id="page", version=3, ts=1.0))  # origin: 1
    fetches = len(origin.fetched)
    for _ in range(3):  # the origin's version is served, not fetched again each time
        assert (await node.ensure("page", prefetch=False)).version == 1
    assert len(origin.fetched) == fetches
