"""serve_app.abandoned_requests behind ServeControlHeaders, on a real uvicorn server as an ingress replica runs it:
a request expecting `100 Continue` (which Serve does not watch there) is cancelled when its client leaves after
sending the body; other requests are left to Serve's own watch; answered ones are untouched."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from serve_app.abandoned_requests import CancelAbandoned
from serve_app.serve_control_headers import ServeControlHeaders
from tests.uvicorn_server import running_uvicorn

BODY = b"x" * 1000
WORK_S = 3.0  # the route's work after reading the body: longer than the tests wait for its cancellation


class Route:
    """Reads the whole body, works ``WORK_S`` (``?quick``: none), then answers; records how each request ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.changed = threading.Condition()

    def _end(self, how: str) -> None:
        with self.changed:
            self.ended.append(how)
            self.changed.notify_all()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        try:
            await asyncio.sleep(0 if scope["query_string"] == b"quick" else WORK_S)
        except asyncio.CancelledError:
            self._end("cancelled")
            raise
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        self._end("answered")

    def wait_for(self, count: int, timeout_s: float) -> list[str]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.ended) >= count, timeout_s)
            return list(self.ended)


@pytest.fixture
def served() -> Iterator[tuple[int, Route]]:
    route = Route()
    with running_uvicorn(ServeControlHeaders(CancelAbandoned(route), hold_continue=True)) as port:
        yield port, route


def _head(expect: bool, query: str = "") -> bytes:
    return (
        f"POST /classify{query} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(BODY)}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    ).encode()


def _send_and_leave(port: int, expect: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_head(expect))
        if expect:
            assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(BODY)
        time.sleep(0.3)  # the route has the body and works


def test_a_client_leaving_after_its_body_cancels_a_request_serve_does_not_watch(served):
    port, route = served
    began = time.monotonic()
    _send_and_leave(port, expect=True)
    assert route.wait_for(1, WORK_S) == ["cancelled"]
    assert time.monotonic() - began < WORK_S


def test_requests_serve_watches_itself_are_left_to_it(served):
    # Without `Expect`, nothing marks the request and Serve's own watch (not running here) would cancel it.
    port, route = served
    _send_and_leave(port, expect=False)
    assert route.wait_for(1, WORK_S + 5) == ["answered"]


def test_a_request_whose_client_stays_is_answered_and_the_connection_serves_the_next(served):
    port, route = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(_head(expect=True, query="?quick"))
            assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(BODY)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(1024)
            assert answer.startswith(b"HTTP/1.1 200 OK")
    assert route.wait_for(2, 5) == ["answered", "answered"]


def test_a_cancelled_request_is_counted_apart_as_499_not_as_a_500():
    from serve_app.metrics import RequestMetrics

    counted: list[tuple[str, int, str]] = []

    class Recorder:
        def observe_request(self, path: str, status: int, error_type: str, seconds: float) -> None:
            counted.append((path, status, error_type))

    async def cancelled(scope, receive, send) -> None:
        raise asyncio.CancelledError

    async def failed(scope, receive, send) -> None:
        raise RuntimeError("a bug")

    for route, raised in ((cancelled, asyncio.CancelledError), (failed, RuntimeError)):
        with pytest.raises(raised):
            asyncio.run(RequestMetrics(route, Recorder())({"type": "http", "path": "/faq/match"}, None, None))
    assert counted == [("/faq/match", 499, "cancelled"), ("/faq/match", 500, "other")]
