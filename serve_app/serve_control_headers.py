"""Clients do not steer Ray Serve itself, and a client asking `Expect: 100-continue` hears our answer first.

Ray Serve's HTTP servers (its proxy, and each ingress replica's own server behind HAProxy) read request headers as
instructions to Serve: `x-request-timeout-seconds` replaces the request timeout (0 lifts it),
`x-request-disconnect-disabled: ?1` keeps a request running after its client has gone, and
`serve_multiplexed_model_id` and the session id header (RAY_SERVE_SESSION_ID_HEADER_KEY, default `x-session-id`)
choose the replica. Those are for a trusted proxy in front, not for callers: ServeControlHeaders, in front of
those servers (serve_app.http.proxy_middlewares), drops them from every request, in any spelling Serve accepts
(any case, `-` or `_`).

It then sets one itself: an ingress replica's server watches each request for a disconnect by reading its body at
once, and uvicorn answers `100 Continue` on that first read, before our routes have checked the credential, the
Content-Type or the declared size; a client that asked to hear first sent its body (up to the route's limit) for
a 401, 413 or 415. With `x-request-disconnect-disabled: ?1` Serve hands the route uvicorn's own receive, so the
100 Continue goes out only when a route reads the body, after its checks. Serve does not watch such a request for
its client's disconnect; the ingress does, once the body is read (serve_app/abandoned_requests.py). Serve's proxy
(the plain mode) reads each body at once whatever the header says, and would not watch a marked request either:
there nothing is marked, and the 100 Continue still comes first.
"""

import os

from ray import serve
from ray.serve.exceptions import RayServeException
from starlette.types import ASGIApp, Scope

from serve_app.scope_rewrite import ScopeRewrite

DISCONNECT_DISABLED = b"x-request-disconnect-disabled"
# Ray's header names, compared as Ray compares them: lower case, `-` and `_` alike.
SERVE_CONTROL_HEADERS = frozenset(
    {
        "x_request_timeout_seconds",
        "x_request_disconnect_disabled",
        "serve_multiplexed_model_id",
        os.environ.get("RAY_SERVE_SESSION_ID_HEADER_KEY", "x-session-id").lower().replace("-", "_"),
    }
)


def _is_serve_control(name: bytes) -> bool:
    return name.decode("latin-1").lower().replace("-", "_") in SERVE_CONTROL_HEADERS


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"expect" and v.strip().lower() == b"100-continue" for k, v in headers)


def serving_in_a_replica() -> bool:
    """Whether this process's HTTP server is an ingress replica's own (the fast ingress), not Serve's proxy."""
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


class ServeControlHeaders(ScopeRewrite):
    """Drops the headers that steer Ray Serve from a client's request; in an ingress replica's server
    (``hold_continue``), marks one that expects `100 Continue` so that Serve leaves its body unread until a route
    reads it (see the module)."""

    def __init__(self, app: ASGIApp, hold_continue: bool = True) -> None:
        super().__init__(app)
        self.hold_continue = hold_continue

    def rewrite(self, scope: Scope) -> Scope:
        headers = [(k, v) for k, v in scope["headers"] if not _is_serve_control(k)]
        if self.hold_continue and scope["type"] == "http" and _expects_continue(headers):
            headers.append((DISCONNECT_DISABLED, b"?1"))
        return {**scope, "headers": headers}
