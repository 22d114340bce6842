"""Watches the long-running work a cache node starts, so that none of it ends unnoticed.

The node's background tasks (its prefetch-commands consumer, its content-updates consumer, its
ring heartbeat, the watch over its ring-membership reader) run as long as the node does. One
that ends while the node runs (it raised, returned or was cancelled from elsewhere) leaves a
half-node: its web side still welcomes agents whose prefetches nobody carries out. So the
supervisor records the failure (``/healthz`` then answers 503 naming it), logs it at ERROR with
its traceback, and ``grace_s`` later calls ``on_failure``, which stops the process (it then
exits non-zero, for a process manager to restart it), as faust's supervisors do with agents.
Tasks that end because the node stops are not failures.

Examples
--------
>>> async def main() -> dict[str, str]:
...     supervisor = Supervisor(grace_s=60.0)
...     async def broken() -> None:
...         raise RuntimeError("boom")
...     task = supervisor.watch("broken loop", broken())
...     await asyncio.gather(task, return_exceptions=True)
...     await supervisor.stop(lambda: None)
...     return supervisor.failures
>>> asyncio.run(main())
{'broken loop': 'RuntimeError: boom'}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: How long a node with a failed task goes on before it stops: long enough for a load balancer
#: or an operator polling /healthz to see the 503 (compose's health check polls every 5 s),
#: short enough that agents are soon redirected to a whole node.
FAILURE_GRACE_S = 10.0


class Supervisor:
    """The node's watched tasks and what went wrong with them."""

    def __init__(
        self, on_failure: Callable[[], None] | None = None, grace_s: float = FAILURE_GRACE_S
    ) -> None:
        self.grace_s = grace_s
        #: What failed, by name: the task (or part of the node) and why, for /healthz.
        self.failures: dict[str, str] = {}
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._exit: asyncio.TimerHandle | None = None

    @property
    def healthy(self) -> bool:
        return not self.failures

    def watch(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` as a task named ``name`` for as long as the node runs."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def fail(self, name: str, reason: str, error: BaseException | None = None) -> None:
        """Record that part of the node failed (a task, or what is not one, like its producer):
        the node is unhealthy from now on, and stops ``grace_s`` later. Call it on the loop."""
        if self._stopping or name in self.failures:
            return
        self.failures[name] = reason
        log.error(
            "%s failed (%s): /healthz answers 503, the node stops in %g s",
            name,
            reason,
            self.grace_s,
            exc_info=error,
        )
        if self._exit is None and self._on_failure is not None:
            self._exit = asyncio.get_running_loop().call_later(self.grace_s, self._on_failure)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._stopping:
            return
        if task.cancelled():
            self.fail(task.get_name(), "cancelled")
            return
        error = task.exception()
        if error is None:
            self.fail(task.get_name(), "returned")
        else:
            self.fail(task.get_name(), f"{type(error).__name__}: {error}", error)

    def stopping(self) -> None:
        """The node has begun to stop (SIGTERM, or ``on_failure``): from now on a task's end
        is expected, and ``on_failure`` is not called (again) while the node shuts down."""
        self._stopping = True
        if self._exit is not None:
            self._exit.cancel()

    async def stop(self, ask_to_stop: Callable[[], None]) -> None:
        """Stop the tasks: ``ask_to_stop`` tells them to end; this waits for them (their
        errors are not failures any more)."""
        self.stopping()
        ask_to_stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
