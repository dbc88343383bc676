"""A lean asyncio HTTP load generator (aiohttp): closed loop (fixed concurrency) or open loop (fixed rate).

The client shares the machine with the servers it measures, so it stays cheap: one event loop, one
connection pool, no thread per request, and it reports its own CPU time so a run can show the client was
not the bottleneck. Latency in the open loop counts from each request's scheduled start, so a slow server
cannot hide queueing behind a slowed-down client (no coordinated omission).
"""

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass(frozen=True)
class Call:
    """One request to send; ``label`` groups results (mixed traffic), ``items`` counts questions or images."""

    path: str
    body: bytes
    content_type: str
    label: str = "all"
    items: int = 1
    method: str = "POST"


CallFactory = Callable[[], Call]

# How aiohttp and httpx name a connection that failed without an HTTP status: refused, reset, or closed before
# the answer (the process holding it died: HAProxy, a node). Our routes are safe to send again, and a client that
# does so (docs/api.md "Retrying") sees no failure from such a death; ``retries`` turns that on.
CONNECTION_FAILURES = frozenset(
    {
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectorError",
        "RemoteProtocolError",
        "ReadError",
        "WriteError",
        "ConnectError",
    }
)
# And HAProxy's 502 `ingress_lost`: an ingress replica died holding a request HAProxy could not send again itself
# (an upload over its buffer); nothing was completed (serve_app/bin/haproxy-with-limits).
RETRIED = CONNECTION_FAILURES | {502}
RETRY_BACKOFF_S = 0.2  # Ray replaces a dead HAProxy in about this long (docs/operations.md)


@dataclass
class LoadResult:
    mode: str
    load: float  # concurrency (closed loop) or requests/s offered (open loop)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    items: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)  # (label, status) -> count
    # (finished at, latency s, label, status) of every request, for timelines (benchmarks.faults)
    events: list[tuple[float, float, str, int | str]] = field(default_factory=list)
    retries: int = 0  # requests sent again after a connection failure (``retries`` > 0)

    def record(self, call: Call, status: int | str, latency_s: float) -> None:
        self.events.append((time.perf_counter(), latency_s, call.label, status))
        self.statuses[call.label, status] += 1
        if status == 200:
            self.latencies_s[call.label].append(latency_s)
            self.items[call.label] += call.items

    def _stats(self, labels: list[str]) -> dict:
        latencies = [value for label in labels for value in self.latencies_s.get(label, [])]
        milliseconds = np.array(latencies) * 1000 if latencies else np.array([np.nan])
        ok = len(latencies)
        # Summed, not a dict comprehension: two labels failing with the same status must add up.
        errors: Counter[str] = Counter()
        for (label, status), n in self.statuses.items():
            if label in labels and status != 200:
                errors[str(status)] += n
        return {
            "requests": ok + sum(errors.values()),
            "ok": ok,
            "errors": sum(errors.values()),
            "errors_by_status": dict(errors),
            "requests_per_s": ok / self.seconds if self.seconds else 0.0,
            "items_per_s": sum(self.items[label] for label in labels) / self.seconds if self.seconds else 0.0,
            "mean_ms": float(np.mean(milliseconds)),
            "p50_ms": float(np.percentile(milliseconds, 50)),
            "p90_ms": float(np.percentile(milliseconds, 90)),
            "p99_ms": float(np.percentile(milliseconds, 99)),
        }

    def summary(self) -> dict:
        labels = sorted({label for label, _ in self.statuses})
        summary = {
            "mode": self.mode,
            "concurrency" if self.mode == "closed" else "offered_rps": self.load,
            "seconds": round(self.seconds, 2),
            **self._stats(labels),
            "client_cpu_percent": round(100 * self.client_cpu_s / self.seconds, 1) if self.seconds else 0.0,
            "client_retries": self.retries,
        }
        if len(labels) > 1:
            summary["by_label"] = {label: self._stats([label]) for label in labels}
        return summary


async def _send(session: aiohttp.ClientSession, base_url: str, call: Call) -> int | str:
    try:
        async with session.request(
            call.method, base_url + call.path, data=call.body, headers={"Content-Type": call.content_type}
        ) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        return type(error).__name__


async def send_with_retries(send: Callable[[], Awaitable[int | str]], retries: int, result: LoadResult) -> int | str:
    """``send()``'s status, sent again up to ``retries`` times (with a growing pause) while it fails without an HTTP
    status (CONNECTION_FAILURES) or with HAProxy's 502 (RETRIED); other HTTP errors are never retried. Each retry is
    counted in ``result.retries``."""
    status = await send()
    for attempt in range(1, retries + 1):
        if status not in RETRIED:
            break
        result.retries += 1
        await asyncio.sleep(RETRY_BACKOFF_S * attempt)
        status = await send()
    return status


def _session(connections: int, timeout_s: float, headers: dict[str, str] | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)


async def run_workers(
    worker: Callable[[float], Awaitable[None]], concurrency: int, duration_s: float, result: LoadResult
) -> None:
    """``concurrency`` closed-loop workers until ``duration_s`` has passed; the run's wall time and the client's
    CPU time go into ``result``."""
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(started + duration_s) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.client_cpu_s = time.process_time() - cpu


async def closed_loop(
    base_url: str,
    calls: CallFactory,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
    retries: int = 0,
) -> LoadResult:
    """``concurrency`` workers, each sending its next request as soon as the previous one is answered (again, up
    to ``retries`` times, when its connection fails without an answer: send_with_retries)."""
    result = LoadResult(mode="closed", load=concurrency)
    async with _session(concurrency, timeout_s, headers) as session:

        async def worker(deadline: float) -> None:
            while time.perf_counter() < deadline:
                call, started = calls(), time.perf_counter()
                status = await send_with_retries(lambda: _send(session, base_url, call), retries, result)  # noqa: B023
                result.record(call, status, time.perf_counter() - started)

        await run_workers(worker, concurrency, duration_s, result)
    return result


async def open_loop(
    base_url: str,
    calls: CallFactory,
    rate: float,
    duration_s: float,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
    max_outstanding: int = 10_000,
    connections: int = 2000,
) -> LoadResult:
    """Requests start on a fixed schedule of ``rate`` per second, whether or not earlier ones finished.

    At most ``connections`` are open at once (the default under HAProxy's per-client cap, 2,048, with room for
    the readiness checks of the same machine), as that many users would hold: a request waits for a free one,
    and the wait counts in its latency (measured from its scheduled start). Unbounded, a client lagging for a
    moment on these shared cores opens thousands at once; past HAProxy's global maxconn (4,096) the new ones
    sit unaccepted while the client keeps its earlier ones idle in its pool, and requests stall for the
    client's keep-alive time (benchmarks/results/README.md, "Overload").
    Beyond ``max_outstanding`` requests in flight, a scheduled request is counted as ``client_overflow``
    instead of being sent: the server has fallen so far behind that more load would only measure the client.
    """
    result = LoadResult(mode="open", load=rate)
    outstanding: set[asyncio.Task] = set()
    async with _session(connections, timeout_s, headers) as session:

        async def one(call: Call, scheduled: float) -> None:
            status = await _send(session, base_url, call)
            result.record(call, status, time.perf_counter() - scheduled)

        cpu, started = time.process_time(), time.perf_counter()
        for index in range(int(rate * duration_s)):
            scheduled = started + index / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            call = calls()
            if len(outstanding) >= max_outstanding:
                result.statuses[call.label, "client_overflow"] += 1
                continue
            task = asyncio.create_task(one(call, scheduled))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        if outstanding:
            await asyncio.wait(outstanding)
        result.seconds = time.perf_counter() - started
        result.client_cpu_s = time.process_time() - cpu
    return result
