"""Faults during a replay (``foresight replay --chaos worker,node,kafka,cassandra``).

The faults run one after the other while the agents play, CHAOS_FIRST_S into the pass and
CHAOS_GAP_S after the previous one recovered:

- worker: kill -9 the stream worker mid-stream, then start it again. It resumes from its
  committed offsets and rebuilds its client records from their changelog.
- node: kill -9 the last cache node, for good. Its clients' agents reconnect to the nodes they
  know and are redirected to their new owner once the ring drops the dead node.
- kafka, cassandra: stop the service for OUTAGE_S, then start it again.

Each fault is recorded with when it struck and how long the system took to come back; the
replay's own figures (lost_events, duplicate_pushes, errors) then say what it cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from foresight.services import manager
from foresight.services.specs import spec_by_name
from foresight.settings import Settings
from foresight.stack import Stack

log = logging.getLogger(__name__)

FAULTS = ("worker", "node", "kafka", "cassandra")
#: Seconds into the pass before the first fault (the agents are all playing by then).
CHAOS_FIRST_S = 20.0
#: Seconds between a fault's recovery and the next fault.
CHAOS_GAP_S = 20.0
#: How long Kafka or Cassandra stays down.
OUTAGE_S = 10.0
SERVICE_START_TIMEOUT_S = 120.0


def parse_faults(text: str) -> tuple[str, ...]:
    """``"worker,node"`` as ("worker", "node"); ValueError naming an unknown fault."""
    faults = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise ValueError(
            f"unknown fault {', '.join(unknown) or repr(text)}: use any of {', '.join(FAULTS)}"
        )
    return faults


@dataclass
class Fault:
    fault: str
    at_s: float  # seconds into the pass
    down_s: float  # from the fault to the start of the recovery
    recovered_after_s: float | None  # from the fault to healthy again (None: not restarted)


def cassandra_is_durable(settings: Settings) -> bool:
    """Whether the running local Cassandra keeps its fsyncs (no test-only no-sync flags)."""
    process = manager.running_process(spec_by_name(settings, "cassandra"))
    if process is None:
        return False
    return "-Dcassandra.skip_sync=true" not in process.cmdline()


def restart_cassandra_durable(settings: Settings) -> None:
    """Restart the local Cassandra with its fsyncs on, as a durability run needs."""
    spec = spec_by_name(settings.model_copy(update={"cassandra_durable": True}), "cassandra")
    manager.stop(spec)
    manager.start(spec, SERVICE_START_TIMEOUT_S, lambda: None)


class Chaos:
    """Strikes ``faults`` in order; call :meth:`strike` from a thread, not the event loop."""

    def __init__(
        self,
        faults: Sequence[str],
        stack: Stack,
        services: Settings,
        node_names: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = list(faults)
        self.stack = stack
        self.services = services.model_copy(update={"cassandra_durable": True})
        self.node_names = list(node_names)
        self.clock = clock
        self.record: list[Fault] = []

    def strike(self, fault: str, pass_started: float) -> Fault:
        began = self.clock()
        at = round(began - pass_started, 1)
        log.warning("chaos: %s at %.1f s into the pass", fault, at)
        recovered: float | None
        if fault == "worker":
            worker = self.stack.children["worker"]
            worker.kill()
            down = self.clock() - began
            worker.start()
            worker.wait_healthy()
            recovered = self.clock() - began
        elif fault == "node":
            self.stack.children[self.node_names[-1]].kill()
            down, recovered = self.clock() - began, None
        else:
            spec = spec_by_name(self.services, fault)
            manager.stop(spec, grace=30.0)
            time.sleep(OUTAGE_S)
            down = self.clock() - began
            manager.start(spec, SERVICE_START_TIMEOUT_S, lambda: None)
            recovered = self.clock() - began
        result = Fault(
            fault,
            at,
            round(down, 1),
            None if recovered is None else round(recovered, 1),
        )
        self.record.append(result)
        log.warning("chaos: %s", asdict(result))
        return result

    def as_json(self) -> list[dict[str, object]]:
        return [asdict(f) for f in self.record]
