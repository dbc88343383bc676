"""Optional per-caller rate limiting: a token bucket per credential, 429 with ``Retry-After`` when it is empty.

Why per caller: one client (a runaway batch job, a leaked key) must not use up the capacity every other client
shares; overload protection (503 ``overloaded``) protects the service, this protects the other callers. The
caller is the authenticated Principal (``key:primary``, a token's ``sub``); without auth, the client address
(behind a proxy that is the proxy's, so all callers share one bucket: turn auth on to tell them apart).
Buckets live in each ingress replica's memory, so the cluster-wide rate is ``requests_per_s`` times the number
of ingress replicas: exact enough to stop abuse, with no shared store on the request path.
"""

import time
from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.asgi import send_error
from serve_app.probes import PROBE_PATHS

MAX_TRACKED_CALLERS = 100_000  # least recently seen buckets beyond this are forgotten (they were full anyway)


class RateLimitSettings(BaseModel):
    """Per-caller request rate of each ingress replica; off unless ``requests_per_s`` is set."""

    model_config = ConfigDict(extra="forbid")

    requests_per_s: float | None = Field(
        None, gt=0, description="Sustained requests per second per caller and ingress replica; unset: no limit."
    )
    burst: int = Field(50, ge=1, description="Requests a caller may send at once above the sustained rate.")
    exempt_paths: list[str] = Field(list(PROBE_PATHS), description="Paths never rate limited (the probes).")


class TokenBuckets:
    """A bucket of ``burst`` tokens per caller, refilled at ``rate`` per second; each request takes one."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, updated at)

    def take(self, caller: str) -> float:
        """0.0 when the request may go; otherwise the seconds until a token is available."""
        now = self.clock()
        tokens, updated = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        wait_s = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[caller] = (tokens - 1.0 if wait_s == 0.0 else tokens, now)
        if len(self._buckets) > MAX_TRACKED_CALLERS:
            self._buckets.popitem(last=False)
        return wait_s


class RateLimitMiddleware:
    """Runs after AuthMiddleware, which leaves the caller's Principal in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, settings: RateLimitSettings) -> None:
        self.app = app
        self.exempt = frozenset(settings.exempt_paths)
        rate = settings.requests_per_s
        self.buckets = TokenBuckets(rate, settings.burst) if rate else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        wait_s = self.buckets.take(caller_key(scope))
        if wait_s == 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, round(wait_s + 0.5)))
        message = f"too many requests from this caller; retry in {retry_after} s"
        await send_error(send, 429, "rate_limited", message, {"retry-after": retry_after})


def caller_key(scope: Scope) -> str:
    """Who sent the request, as far as this replica can tell: ``kind:subject`` of its credential, else its address."""
    principal = scope.get("state", {}).get("principal")
    if principal is not None:
        return f"{principal.kind}:{principal.subject}"
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:unknown"
