"""serve_app.request_trailers against a real uvicorn server on httptools, as Ray Serve runs it."""

import json
import socket
from collections.abc import Iterator

import pytest

from serve_app.request_trailers import SAFE_PROTOCOLS, drop_request_trailers
from tests.uvicorn_server import running_uvicorn


async def echo(scope: dict, receive, send) -> None:
    """Answers with the request's headers and the length of its body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = {"headers": [[k.decode(), v.decode()] for k, v in scope["headers"]], "body_bytes": len(body)}
    answer = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    drop_request_trailers()
    drop_request_trailers()  # a second call changes nothing
    with running_uvicorn(echo) as free:
        yield free


def answers(port: int, data: bytes, count: int) -> list[dict]:
    """The JSON bodies of the first ``count`` responses to ``data`` sent at once on one connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received, bodies = b"", []
        while len(bodies) < count:
            received += sock.recv(65536)
            while b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                length = int(
                    next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:]
                )
                if len(rest) < length:
                    break
                bodies.append(json.loads(rest[:length]))
                received = rest[length:]
    return bodies


def test_trailer_fields_do_not_become_request_headers_and_the_next_request_keeps_its_own(port):
    chunked = (
        b"POST /faq/match HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-Mine: before\r\n\r\n"
        b"5\r\nhello\r\n0\r\nAuthorization: Bearer stolen\r\nX-Request-Id: chosen\r\nContent-Type: text/evil\r\n\r\n"
    )
    following = b"GET /next HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer own\r\n\r\n"
    first, second = answers(port, chunked + following, 2)
    names = {name for name, _ in first["headers"]}
    assert "x-mine" in names and first["body_bytes"] == 5
    assert not names & {"authorization", "x-request-id", "content-type"}, first["headers"]
    assert ["authorization", "Bearer own"] in second["headers"]  # a request's own headers still count


def test_uvicorns_automatic_choice_is_a_protocol_whose_trailers_are_handled():
    # Ray runs uvicorn with http="auto": if a later uvicorn picks another protocol, the patch no longer applies.
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert AutoHTTPProtocol in SAFE_PROTOCOLS
