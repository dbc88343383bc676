"""Admission control: an ingress replica works on at most so many requests at once; the rest get 503 at once.

Why here: with the fast ingress (HAProxy straight to the ingress replicas) nothing upstream bounds what an
ingress replica accepts, and Serve's own max_ongoing/max_queued for the ingress apply only behind its proxy.
Measured at 3x capacity on 2 cores without it: no 503 at all, p99 35 s and client timeouts, because every
request was accepted and then waited for CPU. This middleware runs first, before authentication or any
body is read, so refusing costs almost nothing, and it keeps a separate, smaller budget for image requests,
which cost ~100x a question: a burst of images cannot take the FAQ path's budget, and admitted image
requests finish well inside the upstream timeout.

A count does not say whose requests they are: one client could hold every place and the others would get 503s.
``CallerShare`` (``limits.caller_share``) bounds what one caller (a credential) may hold of each group.

A count does not bound memory: 512 image requests in flight (the GPU layout) of up to 20 MiB each would be 10 GiB
of bodies in one ingress replica. ``BodyBytesInFlight`` bounds the bytes of bodies held at once as well.
"""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.asgi import send_error
from serve_app.errors import Overloaded
from serve_app.media_types import declared_length
from serve_app.ratelimit import caller_key

RETRY_AFTER_S = 1


class InFlightLimit:
    """Counts requests in progress per group (``group_of(path)`` gives the group and its limit)."""

    def __init__(self, app: ASGIApp, group_of: Callable[[str], tuple[str, int] | None]) -> None:
        self.app = app
        self.group_of = group_of
        self.in_flight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        group = self.group_of(scope.get("path", "")) if scope["type"] == "http" else None
        if group is None:  # probes and non-HTTP traffic are never refused here
            await self.app(scope, receive, send)
            return
        name, limit = group
        if self.in_flight.get(name, 0) >= limit:
            await _refuse(send, name, limit)
            return
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[name] -= 1


async def _refuse(send: Send, name: str, limit: int) -> None:
    message = f"overloaded: {limit} {name} requests already in progress on this replica; retry shortly"
    await send_error(send, 503, "overloaded", message, {"retry-after": str(RETRY_AFTER_S)})


class BodyBytesInFlight:
    """Bounds the bytes of request bodies a group of routes holds at once (``budget_of(path)`` gives the group and
    its budget in bytes); a body that would take its group past the budget is answered 503 overloaded.

    A declared body (Content-Length) is reserved whole before any of it is read, so it is refused at once; a body
    sent without one is counted as it arrives and refused as soon as it outgrows what is left. The reservation is
    held until the answer is sent: the ingress keeps the bytes (and what it decoded from them) for the whole model
    call. Runs after authentication and the per-request size limit (serve_app.http.BodyLimits), so only an
    authenticated body within its route's limit takes a share.
    """

    def __init__(self, app: ASGIApp, budget_of: Callable[[str], tuple[str, int] | None]) -> None:
        self.app = app
        self.budget_of = budget_of
        self.held: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        group = self.budget_of(scope.get("path", "")) if scope["type"] == "http" else None
        if group is None:
            await self.app(scope, receive, send)
            return
        name, budget = group
        reserved = declared_length(Headers(scope=scope)) or 0
        if self.held.get(name, 0) + reserved > budget:
            await send_error(send, 503, "overloaded", _no_room(name, budget), {"retry-after": str(RETRY_AFTER_S)})
            return
        self.held[name] = self.held.get(name, 0) + reserved
        received = 0

        async def counted_receive() -> Message:
            nonlocal received, reserved
            message = await receive()
            received += len(message.get("body", b""))
            if received > reserved:  # more than declared (or nothing declared): reserve the excess as it comes
                extra = received - reserved
                if self.held[name] + extra > budget:
                    raise Overloaded(_no_room(name, budget), RETRY_AFTER_S)
                self.held[name] += extra
                reserved = received
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:
            self.held[name] -= reserved


def _no_room(name: str, budget: int) -> str:
    return f"overloaded: {name} request bodies in progress on this replica fill its {budget} bytes; retry shortly"


class CallerShare:
    """Bounds the requests of a group one caller works on at once (``share_of(path)`` gives the group and the most
    one caller may hold); a further one is answered 429 too_many_in_flight with Retry-After.

    The caller is the credential's name (serve_app.auth.Principal: ``key:primary``, a token's ``sub``), so this runs
    after authentication; requests without one (auth off) are not divided: behind HAProxy their address is its own.
    """

    def __init__(self, app: ASGIApp, share_of: Callable[[str], tuple[str, int] | None]) -> None:
        self.app = app
        self.share_of = share_of
        self.held: dict[tuple[str, str], int] = {}  # (group, caller) -> requests in progress; none kept at 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        group = self.share_of(scope.get("path", "")) if principal is not None else None
        if group is None:
            await self.app(scope, receive, send)
            return
        name, most = group
        key = (name, caller_key(scope))
        if self.held.get(key, 0) >= most:
            message = (
                f"this caller already has {most} {name} requests in progress on this replica, its share "
                "(limits.caller_share); retry when one is answered"
            )
            await send_error(send, 429, "too_many_in_flight", message, {"retry-after": str(RETRY_AFTER_S)})
            return
        self.held[key] = self.held.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.held[key] -= 1
            if not self.held[key]:
                del self.held[key]
