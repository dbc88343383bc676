"""serve_app.serve_control_headers: what reaches Ray Serve's HTTP servers of a client's headers."""

import asyncio
from collections.abc import Callable

import pytest

from serve_app.serve_control_headers import ServeControlHeaders


def headers_passed_on(
    headers: list[tuple[bytes, bytes]], scope_type: str = "http", middleware: Callable = ServeControlHeaders
) -> list[tuple[bytes, bytes]]:
    seen: list = []

    async def app(scope, receive, send) -> None:
        seen.extend(scope["headers"])

    asyncio.run(middleware(app)({"type": scope_type, "headers": headers}, None, None))
    return seen


@pytest.mark.parametrize(
    "name",
    [
        b"x-request-timeout-seconds",
        b"x_request_timeout_seconds",
        b"x-request-disconnect-disabled",
        b"serve_multiplexed_model_id",
        b"serve-multiplexed-model-id",
        b"x-session-id",
        b"X_Session_Id",
    ],
)
def test_headers_that_steer_serve_are_dropped_in_any_spelling_serve_reads(name):
    kept = [(b"content-type", b"application/json"), (b"x-request-timeouts", b"1")]
    assert headers_passed_on([*kept, (name, b"0")]) == kept
    assert headers_passed_on([(name, b"0")], "websocket") == []


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue ", b" 100-CONTINUE"])
def test_a_request_expecting_100_continue_leaves_its_body_unread_by_serve(value):
    # The client's own `?0` goes; ours says: hand the route the server's receive (see the module).
    sent = [(b"expect", value), (b"x-request-disconnect-disabled", b"?0")]
    assert headers_passed_on(sent) == [(b"expect", value), (b"x-request-disconnect-disabled", b"?1")]


def test_other_requests_are_watched_for_a_disconnect_as_serve_does():
    assert headers_passed_on([(b"expect", b"something-else")]) == [(b"expect", b"something-else")]
    assert headers_passed_on([(b"expect", b"100-continue")], "websocket") == [(b"expect", b"100-continue")]


def test_serves_own_proxy_leaves_requests_expecting_100_continue_to_its_disconnect_watch():
    # Serve's proxy reads every body at once whatever the header says, and would not watch a marked request for
    # its client's disconnect: only an ingress replica's own server (in a replica) marks them.
    from serve_app.http import proxy_middlewares

    hook = next(m for m in proxy_middlewares() if m.cls is ServeControlHeaders)
    sent = [(b"expect", b"100-continue")]
    assert headers_passed_on(sent, middleware=lambda app: hook.cls(app, *hook.args, **hook.kwargs)) == sent
