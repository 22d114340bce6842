"""Foresight's own processes (origin, worker, cache nodes) run as children of one command.

The demo and the replay start each process as ``python -m foresight <command>`` with the exact
settings of the run in its environment, wait for its /healthz, and stop them all at the end
(SIGTERM, then SIGKILL after a grace period), whatever ends the run. Each child writes its log
to a file of the run's folder, which an error message points to.

The children run in sessions of their own, so a signal to the command reaches the command
alone: while a :class:`Stack` is open (or inside :func:`sigterm_as_ctrl_c`, for commands that
start children another way), SIGTERM does what Ctrl+C does, and the command stops them all.
A second signal while they stop cuts the grace short: the rest are killed at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

#: Faust's group join and table recovery, Cassandra sessions, the ring catch-up: a cold,
#: loaded two-core machine needs most of this.
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0


#: The kernel hands out outgoing connections' local ports from this range; a port picked by
#: binding port 0 lies in it too, and may be taken by any client connection before the child
#: that was meant to listen on it binds it (a CI run lost a test to that).
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_FREE_PORT = 10000


def free_port(span: int = 1) -> int:
    """A port ``p`` with ``p .. p + span - 1`` free on loopback, below the ephemeral range so
    that no outgoing connection takes one of them before a child binds it."""
    try:
        ephemeral_low = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    highest = max(LOWEST_FREE_PORT + span, ephemeral_low - span)
    for _ in range(200):
        port = random.randrange(LOWEST_FREE_PORT, highest)
        if all(_bindable(port + n) for n in range(span)):
            return port
    raise RuntimeError(f"no {span} free consecutive ports below {ephemeral_low}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ChildFailed(RuntimeError):
    """A child exited or did not become healthy; the message ends with its log's tail."""


def http_json(url: str, timeout: float = 5.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.loads(response.read() or b"{}")
        return body if isinstance(body, dict) else {}


def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


@dataclass
class Child:
    """One `foresight` sub-command as a child process."""

    name: str
    args: Sequence[str]
    health_url: str
    log: Path
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "foresight", *self.args],
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches the parent alone, which stops us
            )

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Return once /healthz answers 200 (and not ``"ready": false``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ChildFailed(f"{self.name} exited; its log ({self.log}):\n{self.tail()}")
            try:
                if http_json(self.health_url, timeout=2.0).get("ready", True):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise ChildFailed(
            f"{self.name} not healthy in {timeout:.0f} s ({self.log}):\n{self.tail()}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """kill -9: no goodbye, no flush."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's handler: whatever Ctrl+C would do now (asyncio.run cancels its main task,
    elsewhere KeyboardInterrupt). Where SIGINT is ignored (a background job of a script),
    KeyboardInterrupt all the same: SIGTERM must stop the command."""
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _catch_sigterm() -> Callable[[], None]:
    """Make SIGTERM act as Ctrl+C; return what puts the previous handler back. Off the main
    thread Python cannot set handlers (and the main thread's own stay in force): nothing to do.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c)

    def restore() -> None:
        # None: a handler not set from Python, i.e. the default one.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block SIGTERM does what Ctrl+C does, so a command's clean-up (its
    ``finally`` and ``with`` blocks, which stop its children) runs on either."""
    restore = _catch_sigterm()
    try:
        yield
    finally:
        restore()


class Stack:
    """Children started in order and stopped in reverse order, as a context manager.

    While it is open, SIGTERM acts as Ctrl+C (see the module's docstring), so that `kill`,
    a CI timeout or systemd stops the children too."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self._restore_sigterm: Callable[[], None] | None = None

    def start(self, child: Child, *, wait: bool = True) -> Child:
        self.children[child.name] = child
        child.start()
        if wait:
            child.wait_healthy()
        return child

    def stop(self, name: str) -> None:
        self.children.pop(name).stop()

    def stop_all(self) -> None:
        """Stop every child, newest first. Interrupted while it waits (a second Ctrl+C or
        SIGTERM), it kills the rest without waiting, then raises KeyboardInterrupt."""
        hurried = False
        for child in reversed(list(self.children.values())):
            if hurried:
                child.kill()
                continue
            try:
                child.stop()
            except KeyboardInterrupt:
                hurried = True
                child.kill()
        self.children.clear()
        if hurried:
            raise KeyboardInterrupt

    def __enter__(self) -> Self:
        self._restore_sigterm = _catch_sigterm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop_all()
        finally:
            if self._restore_sigterm is not None:
                self._restore_sigterm()
                self._restore_sigterm = None
