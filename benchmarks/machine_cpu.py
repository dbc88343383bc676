"""This machine's CPU use, from /proc/stat: what a run cost the whole machine, and waiting for it to go quiet.

A benchmark that loads a service on the same 2 cores measures whatever else is burning them too: a replica
still starting after an earlier run scaled its deployment up (loading ResNet-152 takes seconds of both cores)
halves the capacity a closed loop measures and makes requests below that capacity queue.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class Jiffies(NamedTuple):
    busy: int  # everything but idle and iowait, steal included: CPU this VM did not get to use for waiting
    steal: int  # time the hypervisor ran someone else while this VM had work
    total: int


def jiffies() -> Jiffies:
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return Jiffies(sum(fields) - idle, steal, sum(fields))


def steal_percent(before: Jiffies, after: Jiffies) -> float:
    """Share of this machine's CPU time the hypervisor gave to other guests between two readings. On a shared
    cloud VM it reached 40-70% for a minute at a time here: every latency measured then is the host's."""
    return round(100 * (after.steal - before.steal) / max(1, after.total - before.total), 1)


def busy_percent_over(seconds: float) -> float:
    before = jiffies()
    time.sleep(seconds)
    after = jiffies()
    return 100 * (after.busy - before.busy) / max(1, after.total - before.total)


def wait_until_quiet(max_busy_percent: float = 30, quiet_s: float = 3, timeout_s: float = 120) -> float:
    """Block until the machine has been at most ``max_busy_percent`` busy for ``quiet_s`` in a row (an idle Ray
    Serve application with its replicas takes ~5-15% of 2 cores); returns the seconds waited. Gives up after
    ``timeout_s`` and goes on: a machine that is never quiet is then visible in the numbers, not a hang."""
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < timeout_s:
        if busy_percent_over(0.5) > max_busy_percent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    return round(time.monotonic() - started, 1)


def without_steal(
    measure: Callable[[], T],
    max_steal_percent: float = 10,
    attempts: int = 3,
    settle: Callable[[], object] = wait_until_quiet,
) -> tuple[T, float]:
    """Run ``measure`` until the hypervisor took at most ``max_steal_percent`` of the CPU during it (waiting for
    a quiet machine before each retry); returns its result and that steal. After ``attempts`` the last result is
    kept with its steal, so a host that never settles shows in the report instead of hanging the benchmark."""
    for attempt in range(max(1, attempts)):
        if attempt:
            settle()
        before = jiffies()
        result = measure()
        steal = steal_percent(before, jiffies())
        if steal <= max_steal_percent:
            break
    return result, steal
