"""py-spy on running processes for one measured window, and where each spent its time.

Two recorders per process run side by side, both non-blocking (they read the process's memory
without pausing it, so they do not collide, and cost the process little): one samples the
threads on CPU, the other (``--idle``) every thread, waiting or not; their difference is where
the threads wait. One ``py-spy dump`` of every thread mid-window shows the waits by name. The
raw files (collapsed stacks, one per line) stay in the folder for a flame graph or a closer
look; :func:`profile_summary` turns a pair into shares.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Samples per second, each recorder (py-spy's default).
SPY_RATE = 100


class Spy:
    """py-spy on named processes for one window: ``<name>-cpu.txt`` (threads on CPU),
    ``<name>-wall.txt`` (every thread, waiting or not) and ``<name>-dump.txt`` (every thread's
    stack at one moment), in ``folder``."""

    def __init__(self, pids: Mapping[str, int], folder: Path) -> None:
        self.pids, self.folder = dict(pids), folder
        self.exe = str(Path(sys.executable).with_name("py-spy"))
        if not Path(self.exe).is_file():
            raise RuntimeError(f"no {self.exe}: pip install -c constraints.txt -e '.[bench]'")
        self.procs: list[subprocess.Popen[bytes]] = []
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, seconds: float) -> None:
        for name, pid in self.pids.items():
            for kind, extra in (("cpu", []), ("wall", ["--idle"])):
                args = [self.exe, "record", "--pid", str(pid), "--duration", str(round(seconds))]
                args += ["--rate", str(SPY_RATE), "--format", "raw", "--threads", "--nonblocking"]
                out = self.folder / f"{name}-{kind}.txt"
                with (self.folder / "py-spy.log").open("ab") as log:
                    self.procs.append(
                        subprocess.Popen(
                            [*args, *extra, "--output", str(out)], stdout=log, stderr=log
                        )
                    )

    def dump(self) -> None:
        for name, pid in self.pids.items():
            with (self.folder / f"{name}-dump.txt").open("wb") as out:
                subprocess.run([self.exe, "dump", "--pid", str(pid), "--nonblocking"], stdout=out)

    def wait(self) -> dict[str, Any]:
        """Once the recorders are done: each process's :func:`profile_summary`."""
        for proc in self.procs:
            proc.wait(timeout=60)
        summaries: dict[str, Any] = {}
        for name in self.pids:
            cpu, wall = self.folder / f"{name}-cpu.txt", self.folder / f"{name}-wall.txt"
            if cpu.is_file() and wall.is_file():
                summaries[name] = profile_summary(cpu.read_text(), wall.read_text())
            else:  # py-spy could not read it: its log says why
                summaries[name] = {"error": f"no samples, see {self.folder / 'py-spy.log'}"}
        return summaries


_LINE = re.compile(r":\d+\)$")
#: Entry points and loops that nearly every stack passes through: in "cpu_total" they would
#: only push the informative frames down the list.
_PLUMBING = re.compile(
    r"\((click/|<frozen runpy>|threading\.py|asyncio/(base_events|events)\.py|"
    r"mode/(worker|threads)\.py|foresight/(cli/|__main__\.py))"
)


def _stacks(raw: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) stacks as (thread name, outermost frame, ..., innermost) ->
    samples, line numbers dropped so that a function is one frame."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in raw.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        thread, *calls = frames.split(";")
        stacks[(thread.partition(": ")[2], *(_LINE.sub(")", f) for f in calls))] += int(count)
    return stacks


def profile_summary(cpu_raw: str, wall_raw: str, top: int = 12) -> dict[str, Any]:
    """Where a process spends its time: the cores it kept busy, each thread's share of the
    window on CPU, the functions that use the CPU (self: the innermost frame; total: anywhere in
    the stack but the entry points and loops), as shares of the CPU samples, and where the
    threads wait (wall samples not on CPU, by their three innermost frames), as shares of the
    thread's window."""
    cpu, wall = _stacks(cpu_raw), _stacks(wall_raw)
    on_cpu = sum(cpu.values()) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread_cpu: Counter[str] = Counter()
    per_thread_wall: Counter[str] = Counter()
    for stack, n in cpu.items():
        per_thread_cpu[stack[0]] += n
        if len(stack) > 1:
            own[stack[-1]] += n
            for frame in set(stack[1:]):
                if not _PLUMBING.search(frame):
                    inclusive[frame] += n
    waits: Counter[tuple[str, str]] = Counter()
    for stack, n in wall.items():
        per_thread_wall[stack[0]] += n
        idle, frames = n - cpu.get(stack, 0), stack[1:]
        if idle > 0 and frames:
            waits[(stack[0], " <- ".join(reversed(frames[-3:])))] += idle

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "share": round(n / on_cpu, 3)} for f, n in counter.most_common(top)]

    return {
        "cpu_samples": sum(cpu.values()),
        # Each thread is sampled the whole window: its wall samples are the window's length.
        "cores_busy": round(sum(cpu.values()) / max(per_thread_wall.values(), default=1), 3),
        "threads_on_cpu_share": {
            t: round(per_thread_cpu[t] / n, 3) for t, n in per_thread_wall.most_common() if n
        },
        "cpu_self": shares(own),
        "cpu_total": shares(inclusive),
        "waits": [
            {"thread": t, "where": w, "share_of_thread": round(n / per_thread_wall[t], 3)}
            for (t, w), n in waits.most_common(top)
        ],
    }
