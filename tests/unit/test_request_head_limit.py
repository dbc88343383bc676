"""serve_app.request_head_limit against a real uvicorn server on httptools, installed by the hook as Ray runs it."""

import json
import socket
from collections.abc import Iterator

import pytest

from serve_app.http import proxy_middlewares
from serve_app.request_head_limit import DEFAULT_MAX_HEAD_BYTES
from tests.unit.test_request_trailers import answers, echo
from tests.uvicorn_server import running_uvicorn


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    proxy_middlewares()  # what Ray's hook call does in the server's process, before it serves
    with running_uvicorn(echo) as free:
        yield free


def send_a_long_head(host: str, port: int, total: int, piece: int) -> tuple[int, bytes]:
    """Sends a request whose one header grows to ``total`` bytes, ``piece`` bytes at a time, until the server
    stops it; (bytes sent, what came back). The server closes with the rest unread, which may reset the connection
    before its answer is read: then nothing came back."""
    sent, received = 0, b""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: ")
        try:
            while sent < total:
                sock.sendall(b"a" * piece)
                sent += piece
        except OSError:
            pass  # closed under the sender
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return sent, received


def test_a_head_over_the_limit_gets_a_json_431_and_the_connection_closed(port):
    # One 150 MB header stalled an ingress replica's loop for 57 s and took it from 250 to 897 MB.
    sent, received = send_a_long_head("127.0.0.1", port, 20_000_000, 10_000)
    assert sent < 10_000_000  # stopped early, not after the whole 20 MB
    if received:
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431") and b"connection: close" in head
        assert json.loads(body)["error"]["type"] == "headers_too_large"


def test_heads_under_the_limit_and_bodies_of_any_size_are_served(port):
    near = b"GET /a HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * (DEFAULT_MAX_HEAD_BYTES - 1000) + b"\r\n\r\n"
    large_body = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 3_000_000
    following = b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
    first, second, third = answers(port, near + large_body + following, 3)
    assert first["body_bytes"] == 0 and second["body_bytes"] == 3_000_000 and third["body_bytes"] == 0


def test_whole_requests_each_in_one_read_are_not_counted_as_a_head(port):
    # A keep-alive connection whose every read held a whole request (head and 185 KB body) got a 431 on the second.
    request = b"POST /d HTTP/1.1\r\nHost: t\r\nContent-Length: 185000\r\n\r\n" + b"x" * 185_000
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request)
            answer = b""
            while b"body_bytes" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
