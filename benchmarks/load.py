"""A lean closed-loop HTTP load generator: ``concurrency`` asyncio workers, each sending back to back."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def summary(self, items_per_request: int = 1) -> dict[str, float]:
        latencies = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        return {
            "concurrency": self.concurrency,
            "requests": sum(self.statuses.values()),
            "errors": sum(n for status, n in self.statuses.items() if status != 200),
            "requests_per_s": self.ok / self.seconds,
            "items_per_s": self.ok * items_per_request / self.seconds,
            "mean_ms": float(np.mean(latencies)),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p90_ms": float(np.percentile(latencies, 90)),
            "p99_ms": float(np.percentile(latencies, 99)),
        }


async def closed_loop(
    base_url: str, send: Callable[[httpx.AsyncClient], "asyncio.Future"], concurrency: int, duration_s: float
) -> LoadResult:
    """Run ``concurrency`` workers for ``duration_s``; ``send(client)`` makes one request and returns it."""
    result = LoadResult(concurrency=concurrency, seconds=duration_s)
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status = (await send(client)).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_s.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result
