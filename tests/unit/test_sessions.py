"""A slow agent fills only its own outbox and is closed; the others keep receiving."""

from __future__ import annotations

import asyncio

from consumers.sessions import AgentSession, SessionRegistry
from schemas.protocol import CloseCode


class Socket:
    def __init__(self, stalled: bool = False) -> None:
        self.received: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self.stalled = stalled

    async def send(self, frame: bytes) -> None:
        if self.stalled:
            await asyncio.Event().wait()  # a client that never reads
        self.received.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_a_stalled_agent_is_closed_and_the_others_keep_going() -> None:
    registry = SessionRegistry()
    slow, fast = Socket(stalled=True), Socket()
    slow_session = AgentSession("slow", slow.send, slow.close, max_queue=4, send_timeout_s=60)
    fast_session = AgentSession("fast", fast.send, fast.close, max_queue=4, send_timeout_s=60)
    await registry.add(slow_session)
    await registry.add(fast_session)
    for n in range(20):
        slow_session.offer(f"s{n}".encode())
        assert fast_session.offer(f"f{n}".encode())
        await asyncio.sleep(0.001)  # let the sender tasks run
    await asyncio.sleep(0.01)
    assert slow.closed_with is not None and slow.closed_with[0] == CloseCode.TRY_AGAIN_LATER
    assert len(fast.received) == 20
    assert registry.get("slow") is None and registry.get("fast") is fast_session
    await registry.remove(fast_session)
    await registry.remove(slow_session)


async def test_a_send_timeout_closes_the_agent() -> None:
    sock = Socket(stalled=True)
    session = AgentSession("c", sock.send, sock.close, max_queue=10, send_timeout_s=0.01)
    session.start()
    session.offer(b"x")
    for _ in range(50):
        if sock.closed_with is not None:
            break
        await asyncio.sleep(0.01)
    assert sock.closed_with is not None and sock.closed_with[0] == CloseCode.TRY_AGAIN_LATER
    await session.stop()


async def test_a_newer_connection_supersedes_the_older_one() -> None:
    registry = SessionRegistry()
    first, second = Socket(), Socket()
    old = AgentSession("c", first.send, first.close)
    new = AgentSession("c", second.send, second.close)
    await registry.add(old)
    await registry.add(new)
    await asyncio.sleep(0)
    assert first.closed_with is not None and first.closed_with[0] == CloseCode.SUPERSEDED
    assert registry.get("c") is new and len(registry) == 1
    await registry.remove(new)
