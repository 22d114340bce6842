"""10,000 hostile frames against the agents' WebSocket on a real cache node.

3,000 connections open with a token of some kind (good, missing, garbage, forged, expired, for
another client) and a first frame of some kind (a hello, a hello for another client, a broken
one, binary, anything); 700 more say a good hello and then send ten frames each, valid or not,
and a ping. Plus three frames over the 4 MiB limit.

The protocol (docs/push-protocol.md) says what must happen: a refused connection ends with one
of its close codes and a reason; a first frame that is not a valid hello gets
``error {code: 4009, reason}`` and then a close 4009; after the welcome, each frame that does
not decode (or comes in the wrong direction or state) is answered with an error 4009 and the
connection stays open (up to ten of them), except a frame of another protocol_version, which
gets its error and a close 4009 at once; a binary frame holding a valid message is accepted.
Every connection ends within bounded time, the node stays healthy and logs no exception, and an
agent connected throughout still receives its push afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from foresight import tokens
from schemas import InvalidRecord, PrefetchCommand, encode
from schemas.protocol import (
    MAX_MESSAGE_BYTES,
    WS_PATH,
    CloseCode,
    Error,
    Feedback,
    Hello,
    Ping,
    Pong,
    Push,
    UnsupportedVersion,
    View,
    Welcome,
    decode_from_agent,
    decode_from_node,
    encode_message,
)
from tests.integration.conftest import end_offsets

from . import frames as fr
from .conftest import Figure, StartStack
from .stack import SECRET, Stack, produce_all

pytestmark = pytest.mark.integration

GOOD = "fz-good"
IN_FLIGHT = 16
# The node waits 10 s for a hello; any answer we wait for comes well before 15 s, or never.
ANSWER_TIMEOUT_S = 15.0
# From a prefetch command on Kafka to the push: the node polls every 10 ms, fetches, pushes.
PUSH_TIMEOUT_S = 30.0
# How long to wait for the pong of a binary ping, which the protocol answers: once every text
# ping has its pong, anything still due comes at once or not at all.
LAST_PONG_S = 1.0
FRAMES_PER_CONNECTION = 10
CLOSE_CODES = {int(code) for code in CloseCode}
OTHER_SECRET = "another-secret-0123456789abcdef-0123456789"


def token_for(kind: str, client: str) -> str | None:
    now = time.time()
    if kind == "missing":
        return None
    if kind == "garbage":
        return f"{client}.not-a-signature"
    if kind == "forged":
        return tokens.issue(OTHER_SECRET, client, 600, now)
    if kind == "expired":
        return tokens.issue(SECRET, client, 60, now - 3600)
    if kind == "other-client":
        return tokens.issue(SECRET, f"{client}-other", 600, now)
    return tokens.issue(SECRET, client, 600, now)


def expected_first(kind: str, client: str, frame: fr.Frame) -> str:
    """What the protocol says a connection with this token and first frame gets."""
    if kind in ("missing", "garbage", "forged"):
        return str(int(CloseCode.UNAUTHORIZED))
    if kind == "expired":
        return str(int(CloseCode.TOKEN_EXPIRED))
    subject = f"{client}-other" if kind == "other-client" else client
    try:
        message = decode_from_agent(frame[1])
    except Exception:
        return str(int(CloseCode.BAD_MESSAGE))  # not a hello: error, then close 4009
    if not isinstance(message, Hello):
        return str(int(CloseCode.BAD_MESSAGE))
    return "welcome" if message.client_id == subject else str(int(CloseCode.FORBIDDEN))


@dataclass
class Tally:
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[tuple[str, str, Any]] = field(default_factory=list)
    abnormal: list[Any] = field(default_factory=list)
    hangs: list[Any] = field(default_factory=list)
    no_reason: list[Any] = field(default_factory=list)
    errors_expected: int = 0
    errors_received: int = 0
    frames_sent: int = 0
    feedback_relayed: int = 0
    views_relayed: int = 0


async def send(ws: aiohttp.ClientWebSocketResponse, frame: fr.Frame) -> bool:
    """Send a frame; False when the connection is already gone."""
    text, data = frame
    try:
        if text:
            await ws.send_str(data if isinstance(data, str) else data.decode("utf-8", "replace"))
        else:
            await ws.send_bytes(data if isinstance(data, bytes) else data.encode())
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        return False
    return True


async def answer(
    ws: aiohttp.ClientWebSocketResponse, wait_s: float = ANSWER_TIMEOUT_S
) -> tuple[str, Any]:
    """The next thing the node says: ("message", decoded), ("close", (code, reason)),
    ("abnormal", what) when the socket ends without a close frame, or ("hang", None)."""
    try:
        msg = await ws.receive(timeout=wait_s)
    except TimeoutError:
        return "hang", None
    if msg.type == aiohttp.WSMsgType.TEXT:
        return "message", decode_from_node(msg.data)
    if msg.type == aiohttp.WSMsgType.CLOSE:
        return "close", (int(msg.data), msg.extra or "")
    return "abnormal", (msg.type.name, ws.close_code)


def judge_close(tally: Tally, label: str, expected: str, code: int, reason: str) -> None:
    tally.outcomes[f"{label}:{code}"] += 1
    if code not in CLOSE_CODES:
        tally.unexpected.append((label, expected, code))
    if not reason:  # every close the node sends says why, aiohttp's own 1009 included
        tally.no_reason.append((label, code))
    if expected not in (str(code), "any"):
        tally.unexpected.append((label, expected, code))


def judge_error(tally: Tally, label: str, error: Error | None, code: int | None) -> None:
    """A close 4009 comes after an error 4009 with a reason, and only then."""
    due = code == CloseCode.BAD_MESSAGE
    if due and (error is None or error.code != code or not error.reason):
        tally.unexpected.append((label, "error 4009 before the close", error))
    if not due and error is not None:
        tally.unexpected.append((label, f"no error before {code}", error))


async def try_hello(
    session: aiohttp.ClientSession, url: str, kind: str, client: str, frame: fr.Frame, tally: Tally
) -> None:
    expected = "1009" if len(frame[1]) > MAX_MESSAGE_BYTES else expected_first(kind, client, frame)
    token = token_for(kind, client)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    error: Error | None = None
    try:
        async with session.ws_connect(url, headers=headers) as ws:
            await send(ws, frame)
            what, detail = await answer(ws)
            if what == "message" and isinstance(detail, Error):
                error = detail
                what, detail = await answer(ws)
    except (aiohttp.ClientError, ConnectionError) as exc:
        what, detail = "refused upgrade", repr(exc)
    if what == "message" and isinstance(detail, Welcome):
        tally.outcomes["hello:welcome"] += 1
        if expected != "welcome" or error is not None:
            tally.unexpected.append(("hello", expected, "welcome"))
    elif what == "close":
        judge_close(tally, "hello", expected, *detail)
        judge_error(tally, "hello", error, detail[0])
    elif what == "hang":
        tally.hangs.append(("hello", kind, frame[1][:80]))
    else:
        tally.outcomes[f"hello:{what}"] += 1
        tally.abnormal.append(("hello", kind, detail, frame[1][:80]))


async def in_turn(
    session: aiohttp.ClientSession, url: str, attempts: list[fr.HelloAttempt], tally: Tally
) -> None:
    """One client's attempts one after the other: two at once would supersede (4002)."""
    for kind, client, frame in attempts:
        await try_hello(session, url, kind, client, frame, tally)


def frame_verdict(frame: fr.Frame) -> str:
    """valid, ping (a pong due), feedback or view (relayed to Kafka), invalid (error 4009
    due), or unsupported (another protocol_version: error 4009, then close 4009)."""
    try:
        message = decode_from_agent(frame[1])
    except UnsupportedVersion:
        return "unsupported"
    except InvalidRecord:
        return "invalid"
    except Exception:
        return "invalid"
    if isinstance(message, Hello):
        return "invalid"  # a second hello: a message in the wrong state
    if isinstance(message, Feedback):
        return "feedback"
    if isinstance(message, View):
        return "view"
    if isinstance(message, Ping):
        return "ping"
    return "valid"


async def try_frames(
    session: aiohttp.ClientSession, url: str, n: int, frames: list[fr.Frame], tally: Tally
) -> None:
    client = f"fz-agent-{n}"
    headers = {"Authorization": f"Bearer {token_for('valid', client)}"}
    verdicts = [frame_verdict(frame) for frame in frames]
    if "unsupported" in verdicts:
        await try_other_version(session, url, n, frames, verdicts, tally)
        return
    pings = [text for (text, _), verdict in zip(frames, verdicts, strict=True) if verdict == "ping"]
    pongs_due, pongs_sure = len(pings) + 1, sum(pings) + 1  # and the closing ping's
    errors = pongs = 0
    what: str = "not connected"
    try:
        async with session.ws_connect(url, headers=headers) as ws:
            hello = encode_message(Hello(client_id=client, agent="fuzz/1")).decode()
            await send(ws, (True, hello))
            what, welcome = await answer(ws)
            assert what == "message" and isinstance(welcome, Welcome), (what, welcome)
            for frame in frames:
                tally.frames_sent += 1
                if not await send(ws, frame):
                    break
            await send(ws, (True, encode_message(Ping(ts=time.time())).decode()))
            while pongs < pongs_due:
                wait = ANSWER_TIMEOUT_S if pongs < pongs_sure else LAST_PONG_S
                what, detail = await answer(ws, wait)
                if what == "message":
                    if isinstance(detail, Error):
                        errors += 1
                        if detail.code != CloseCode.BAD_MESSAGE or not detail.reason:
                            tally.unexpected.append(("frames", "error 4009", detail))
                    pongs += isinstance(detail, Pong)
                    continue  # else a push or an update: the node doing its job
                if what == "hang" and pongs >= pongs_sure:
                    break  # binary pings went unanswered
                if what == "close":
                    too_big = any(len(data) > MAX_MESSAGE_BYTES for _, data in frames)
                    judge_close(tally, "frames", "1009" if too_big else "open", *detail)
                elif what == "hang":
                    tally.hangs.append(("frames", n))
                else:
                    tally.abnormal.append(("frames", n, detail, [f[1][:60] for f in frames]))
                break
    except (aiohttp.ClientError, ConnectionError) as exc:
        tally.abnormal.append(("frames", n, repr(exc), [f[1][:60] for f in frames]))
    if pongs >= pongs_sure:  # every frame before the closing ping was read
        tally.outcomes["frames:answered"] += 1
        tally.errors_expected += verdicts.count("invalid")
        tally.feedback_relayed += verdicts.count("feedback")
        tally.views_relayed += verdicts.count("view")
    elif what != "close":  # a close is counted by its code
        tally.outcomes[f"frames:{what}"] += 1
    tally.errors_received += errors


async def try_other_version(
    session: aiohttp.ClientSession,
    url: str,
    n: int,
    frames: list[fr.Frame],
    verdicts: list[str],
    tally: Tally,
) -> None:
    """Frames among which one is of another protocol_version: the node reads those before it
    as usual, answers that one with an error 4009 and closes 4009; it reads nothing after."""
    client = f"fz-agent-{n}"
    headers = {"Authorization": f"Bearer {token_for('valid', client)}"}
    cut = verdicts.index("unsupported")
    read = verdicts[:cut]
    pings = [text for (text, _), verdict in zip(frames, read, strict=False) if verdict == "ping"]
    errors = pongs = 0
    close: tuple[int, str] | None = None
    try:
        async with session.ws_connect(url, headers=headers) as ws:
            hello = encode_message(Hello(client_id=client, agent="fuzz/1")).decode()
            await send(ws, (True, hello))
            what, welcome = await answer(ws)
            assert what == "message" and isinstance(welcome, Welcome), (what, welcome)
            for frame in frames:
                tally.frames_sent += 1
                if not await send(ws, frame):
                    break
            while close is None:
                what, detail = await answer(ws)
                if what == "message":
                    if isinstance(detail, Error):
                        errors += 1
                        if detail.code != CloseCode.BAD_MESSAGE or not detail.reason:
                            tally.unexpected.append(("version", "error 4009", detail))
                    pongs += isinstance(detail, Pong)
                elif what == "close":
                    close = detail
                elif what == "hang":
                    tally.hangs.append(("version", n))
                    break
                else:
                    tally.abnormal.append(("version", n, detail, [f[1][:60] for f in frames]))
                    break
    except (aiohttp.ClientError, ConnectionError) as exc:
        tally.abnormal.append(("version", n, repr(exc), [f[1][:60] for f in frames]))
    if close is None:
        return
    judge_close(tally, "frames", str(int(CloseCode.BAD_MESSAGE)), *close)
    tally.errors_expected += read.count("invalid") + 1
    tally.errors_received += errors
    if not sum(pings) <= pongs <= len(pings):
        tally.unexpected.append(("version", f"{len(pings)} pongs", pongs))
    tally.feedback_relayed += read.count("feedback")
    tally.views_relayed += read.count("view")


async def gathered(jobs: list[Any]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


def publish_command(stack: Stack, client: str, content: str) -> None:
    now = time.time()
    command = PrefetchCommand(
        command_id=f"fz-cmd-{now}",
        client_id=client,
        content_id=content,
        probability=0.9,
        rank=1,
        model="fuzz",
        issued_at=now,
        expires_at=now + 600,
    )
    settings = stack.settings
    produce_all(
        settings,
        settings.topic_prefetch_commands,
        [(client.encode(), encode(command))],
        partition=0,
    )


async def wait_push(ws: aiohttp.ClientWebSocketResponse) -> Push | None:
    deadline = time.monotonic() + PUSH_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return None
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        message = decode_from_node(msg.data)
        if isinstance(message, Push):
            return message
    return None


async def fuzz(stack: Stack, tally: Tally) -> tuple[bool, str]:
    url = f"{stack.node_url}{WS_PATH}"
    hellos = fr.hello_batch(fr.HELLOS)
    frames = fr.frame_batch(fr.FRAMES)
    too_big_text = "x" * (MAX_MESSAGE_BYTES + 1)
    async with aiohttp.ClientSession() as session:
        good = await session.ws_connect(
            url, headers={"Authorization": f"Bearer {token_for('valid', GOOD)}"}
        )
        await send(good, (True, encode_message(Hello(client_id=GOOD, agent="fuzz/1")).decode()))
        what, welcome = await answer(good)
        assert isinstance(welcome, Welcome), (what, welcome)
        by_client: dict[str, list[fr.HelloAttempt]] = collections.defaultdict(list)
        for attempt in hellos:
            by_client[attempt[1]].append(attempt)
        await gathered([in_turn(session, url, attempts, tally) for attempts in by_client.values()])
        await try_hello(session, url, "valid", "fz-big", (True, too_big_text), tally)
        chunks = [
            frames[i : i + FRAMES_PER_CONNECTION]
            for i in range(0, len(frames), FRAMES_PER_CONNECTION)
        ]
        chunks += [[(True, too_big_text)], [(False, too_big_text.encode())]]
        await gathered([try_frames(session, url, n, c, tally) for n, c in enumerate(chunks)])
        await asyncio.to_thread(publish_command, stack, GOOD, "fz-p1")
        push = await wait_push(good)
        state = "open" if not good.closed else f"closed {good.close_code}"
        await good.close()
    return push is not None, state


def test_hostile_frames_end_in_a_close_code_or_an_error_and_the_node_carries_on(
    start_stack: StartStack, figure: Figure
) -> None:
    tally = Tally()
    with start_stack("origin", "node-0") as stack:
        pushed, good_state = asyncio.run(fuzz(stack, tally))
        settings = stack.settings
        time.sleep(1.0)  # the node's producer sends within milliseconds; leave it a second
        feedback = end_offsets(settings, settings.topic_feedback)
        views = end_offsets(settings, settings.topic_interactions)
        crashes = stack.crashes()
        dead = stack.dead()
        health = stack.health() if not dead else {}
    payloads = fr.HELLOS + fr.FRAMES
    figure(
        "websocket",
        f"{payloads} payloads + 3 over 4 MiB; first frames: "
        f"{ {k: v for k, v in sorted(tally.outcomes.items()) if k.startswith('hello')} }; "
        f"after welcome: {tally.frames_sent} frames, {tally.errors_received} error replies of "
        f"{tally.errors_expected} due, closes "
        f"{ {k: v for k, v in sorted(tally.outcomes.items()) if k.startswith('frames:')} }; "
        f"{len(tally.abnormal)} ended without a close code, {len(tally.hangs)} hangs, "
        f"{len(tally.unexpected)} unexpected codes; the other agent "
        f"{'got' if pushed else 'did NOT get'} its push; "
        f"{sum(len(c) for c in crashes.values())} exceptions logged",
        payloads=payloads,
        outcomes=dict(tally.outcomes),
        frames_after_welcome=tally.frames_sent,
        error_replies=tally.errors_received,
        error_replies_due=tally.errors_expected,
        abnormal_closures=len(tally.abnormal),
        hangs=len(tally.hangs),
        unexpected=len(tally.unexpected),
        unexpected_by_kind=collections.Counter(
            f"{label}: {want} expected, got {got}" for label, want, got in tally.unexpected
        ),
        closes_without_reason=len(tally.no_reason),
        good_agent_pushed=pushed,
        feedback_relayed=feedback,
        views_relayed=views,
        exceptions_logged={name: len(c) for name, c in crashes.items()},
    )
    assert not dead, f"processes died: {dead}"
    assert health["node-0"]["node_id"] == "node-0"
    assert pushed and good_state == "open", f"the connected agent got no push ({good_state})"
    assert not tally.hangs, f"{len(tally.hangs)} connections hung, e.g. {tally.hangs[:3]}"
    assert not tally.abnormal, (
        f"{len(tally.abnormal)} connections ended without a close code, e.g. {tally.abnormal[:2]}"
    )
    assert not crashes, f"exceptions logged: { {n: c[:3] for n, c in crashes.items()} }"
    assert not tally.no_reason, f"closes without a reason: {tally.no_reason[:5]}"
    assert not tally.unexpected, f"{len(tally.unexpected)}, e.g. {tally.unexpected[:5]}"
    assert tally.errors_received == tally.errors_expected, "invalid frames not answered with 4009"
    assert (feedback, views) == (tally.feedback_relayed, tally.views_relayed)
