"""Start, stop and inspect the local services, by pid file, so that `up` twice starts nothing new.

A started service runs in its own session (mirakuru starts it with setsid) and outlives the
command that started it; `down` stops only a process whose pid and start time match the pid
file that `up` wrote, never another program on the same port. Every service is checked and
started on its own address (127.0.0.1, or a replicated node's), so the replicated set's nodes
use the single set's ports without touching it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mirakuru
import psutil

from foresight.services.base import ServiceSpec, port_open
from foresight.services.provision import ServiceError

Health = Literal["healthy", "starting", "down"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    health: Health
    rss_bytes: int | None


def tail(path: Path, lines: int = 15) -> list[str]:
    """The last lines of a log file, or nothing when it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


def running_process(spec: ServiceSpec) -> psutil.Process | None:
    """The live process that `up` started for this service, if there is one."""
    try:
        record = json.loads(spec.pid_file.read_text())
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 1.0:
            return None  # the pid was reused by another program
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        return None


def status(spec: ServiceSpec) -> ServiceStatus:
    process = running_process(spec)
    if process is None:
        return ServiceStatus(spec.name, spec.port, None, "down", None)
    health: Health = "healthy" if spec.healthy() else "starting"
    try:
        rss: int | None = process.memory_info().rss
    except psutil.Error:
        rss = None
    return ServiceStatus(spec.name, spec.port, process.pid, health, rss)


def _port_owner(port: int, host: str) -> str:
    with contextlib.suppress(psutil.Error, PermissionError):
        for conn in psutil.net_connections(kind="tcp"):
            if not conn.laddr or conn.laddr.port != port or conn.status != "LISTEN":
                continue
            address = conn.laddr.ip.removeprefix("::ffff:")
            if address in (host, "0.0.0.0", "::") and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    return "another program"


class _ServiceExecutor(mirakuru.Executor):
    """A mirakuru executor that is started once its service is ready (by default: answers a
    real request)."""

    def __init__(
        self,
        spec: ServiceSpec,
        console: Path,
        timeout: float,
        on_wait: Callable[[], None],
        ready: Callable[[], bool],
    ) -> None:
        self._spec = spec
        self._on_wait = on_wait
        self._ready = ready
        self._console = console.open("ab")
        super().__init__(
            spec.command(),
            timeout=timeout,
            sleep=1.0,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=str(spec.home),
        )
        # mirakuru tags children with "<our pid>:<uuid>" and, at exit, kills every process
        # whose tag contains our pid. A service must outlive `up`, so its tag must not.
        self._uuid = f"foresight-{spec.name}:{uuid.uuid4()}"

    def pre_start_check(self) -> bool:
        return False  # the manager checks the pid file and the ports before starting

    def after_start_check(self) -> bool:
        self._on_wait()
        return bool(self._ready())

    def detach(self) -> int:
        """Leave the process running after this command exits; return its pid."""
        assert self.process is not None
        pid = int(self.process.pid)
        self.process = None  # mirakuru kills what it still holds when it is collected
        self._console.close()
        return pid


def start(
    spec: ServiceSpec,
    timeout: float,
    on_wait: Callable[[], None],
    ready: Callable[[], bool] | None = None,
) -> int:
    """Start one service and wait until ``ready()`` (by default: it answers); return its pid.

    Raises ServiceError, in one line plus the log's last lines, when a port of its address is
    taken by another program, when the service dies during start, or when it is not ready in
    time.
    """
    for port in spec.ports:
        if port_open(port, spec.host):
            raise ServiceError(
                f"{spec.name}: port {port} is taken by {_port_owner(port, spec.host)} on "
                f"{spec.host}; free it or set another port in the settings"
            )
    spec.prepare()
    executor = _ServiceExecutor(spec, spec.console_file, timeout, on_wait, ready or spec.healthy)
    try:
        executor.start()
    except mirakuru.exceptions.ProcessExitedWithError as exc:
        raise ServiceError(
            f"{spec.name} exited during start (code {exc.exit_code}); last lines of its log:\n"
            + _crash_tail(spec)
        ) from None
    except mirakuru.exceptions.TimeoutExpired:
        executor.kill()
        raise ServiceError(
            f"{spec.name} did not answer within {timeout:.0f} s; last lines of its log:\n"
            + _crash_tail(spec)
        ) from None
    pid = executor.detach()
    spec.pid_file.write_text(
        json.dumps({"pid": pid, "create_time": psutil.Process(pid).create_time()})
    )
    return pid


def _crash_tail(spec: ServiceSpec) -> str:
    lines = tail(spec.log_file, 10) + tail(spec.console_file, 10)
    return "\n".join(f"  {line}" for line in lines[-15:]) or "  (no log written)"


def stop(spec: ServiceSpec, grace: float = 30.0) -> int | None:
    """Stop the service `up` started (SIGTERM, then SIGKILL); return its pid, or None."""
    return stop_together([spec], grace)[0]


def stop_together(specs: Sequence[ServiceSpec], grace: float = 30.0) -> list[int | None]:
    """Stop several services at once (SIGTERM to all, then SIGKILL to any still running after
    ``grace``); return each one's pid, or None where it was not running.

    The nodes of a quorum go together: stopped one by one, the last broker has no quorum left
    to approve its controlled shutdown and waits out the grace."""
    processes = [running_process(spec) for spec in specs]
    for process in processes:
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
    running = [p for p in processes if p is not None]
    _gone, alive = psutil.wait_procs(running, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
    for spec in specs:
        spec.pid_file.unlink(missing_ok=True)
    return [None if p is None else int(p.pid) for p in processes]


def kill(spec: ServiceSpec) -> int | None:
    """kill -9 the service `up` started, as a crash would end it (for fault tests); return
    its pid, or None when it was not running."""
    process = running_process(spec)
    spec.pid_file.unlink(missing_ok=True)
    if process is None:
        return None
    with contextlib.suppress(psutil.NoSuchProcess):
        process.kill()
        process.wait(timeout=10)
    return int(process.pid)


def wait_healthy(
    spec: ServiceSpec,
    timeout: float,
    on_wait: Callable[[], None],
    ready: Callable[[], bool] | None = None,
) -> bool:
    """Wait for an already running service (one still starting) to be ready (by default: to
    answer)."""
    ready = ready or spec.healthy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_process(spec) is None:
            return False
        if ready():
            return True
        on_wait()
        time.sleep(1.0)
    return False
