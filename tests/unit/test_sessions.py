"""A slow agent fills only its own outbox and is closed; the others keep receiving."""

from __future__ import annotations

import asyncio

from consumers.sessions import AgentSession, SessionRegistry, TokenBucket
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


async def test_a_last_frame_goes_out_before_the_close() -> None:
    events: list[object] = []

    async def send(frame: bytes) -> None:
        events.append(frame)

    async def close(code: int, reason: str) -> None:
        events.append((code, reason))

    session = AgentSession("c", send, close)
    session.start()
    session.offer(b"push")
    session.shut(CloseCode.POLICY, "over the rate limit", last=b"error")
    await session.wait_closed()
    assert events[-2:] == [b"error", (CloseCode.POLICY, "over the rate limit")]
    assert not session.offer(b"late")
    await session.stop()


async def test_a_close_that_hangs_is_given_up_after_the_send_timeout() -> None:
    closing = asyncio.Event()

    async def send(frame: bytes) -> None:
        pass

    async def close(code: int, reason: str) -> None:
        closing.set()
        await asyncio.Event().wait()  # an agent that never reads: the close frame waits

    session = AgentSession("c", send, close, send_timeout_s=0.01)
    session.start()
    session.shut(CloseCode.TRY_AGAIN_LATER, "too slow")
    await asyncio.wait_for(session.wait_closed(), 5.0)
    assert closing.is_set()


def test_the_bucket_passes_a_burst_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate_per_s=4.0, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(100.125) is False  # half a frame earned
    assert bucket.take(100.25) is True  # one frame per 0.25 s
    assert bucket.take(100.25) is False
    assert [bucket.take(200.0) for _ in range(6)] == [True] * 5 + [False]  # never above burst


def test_a_refused_frame_costs_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not any(bucket.take(0.5) for _ in range(100))
    assert bucket.take(1.0)
