"""A bound on a request's head (request line and headers) in uvicorn's httptools server (Ray Serve's HTTP server).

llhttp buffers a header field until it ends, and uvicorn sets no limit: two connections sending one 150 MB header
to an ingress replica's own port (30000, which listens on every interface, HAProxy's limits not in front) stalled
its event loop for 57 s, every request through HAProxy meanwhile a 504, and took the replica from 250 to 897 MB.
Past SERVE_APP_MAX_REQUEST_HEAD_BYTES (default 65536: four times what HAProxy lets through, so nothing HAProxy
sends trips it) of a head that has not ended, the connection gets a JSON 431 ``headers_too_large`` and is closed.

Installed like serve_app.request_trailers, by the hook (serve_app.http.proxy_middlewares) in the process that runs
the server, before it serves.
"""

import json
import os
from typing import Any

from uvicorn.protocols.http import httptools_impl

MAX_HEAD_BYTES_ENV = "SERVE_APP_MAX_REQUEST_HEAD_BYTES"
DEFAULT_MAX_HEAD_BYTES = 65536

_INSTALLED = "_serve_app_limits_request_heads"
_HEAD_OPEN = "_serve_app_head_open"  # a request's head is arriving (or the next one's may start)
_HEAD_BYTES = "_serve_app_head_bytes"
_HEADS_ENDED = "_serve_app_heads_ended"  # how many request heads have ended on this connection


def max_head_bytes() -> int:
    value = os.environ.get(MAX_HEAD_BYTES_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_HEAD_BYTES


def _too_large(limit: int) -> bytes:
    message = f"the request line and headers are longer than {limit} bytes"
    body = json.dumps({"error": {"type": "headers_too_large", "message": message, "details": []}}).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def limit_request_heads() -> None:
    """Make uvicorn's httptools protocol refuse a request head over max_head_bytes() (idempotent)."""
    protocol: Any = httptools_impl.HttpToolsProtocol
    if getattr(protocol, _INSTALLED, False):
        return
    limit = max_head_bytes()
    data_received, on_headers_complete, on_message_complete = (
        protocol.data_received,
        protocol.on_headers_complete,
        protocol.on_message_complete,
    )

    def received(self: Any, data: bytes) -> None:
        open_before, ended_before = getattr(self, _HEAD_OPEN, True), getattr(self, _HEADS_ENDED, 0)
        data_received(self, data)
        # Counted only when no head ended within the read (a whole request may fit in one) and one is still open:
        # a read where a request ends and the next begins is not (under by at most one read; a long head spans
        # many).
        ended = getattr(self, _HEADS_ENDED, 0) != ended_before
        if open_before and not ended and getattr(self, _HEAD_OPEN, True) and not self.transport.is_closing():
            total = getattr(self, _HEAD_BYTES, 0) + len(data)
            setattr(self, _HEAD_BYTES, total)
            if total > limit:
                self.transport.write(_too_large(limit))
                self.transport.close()

    def headers_complete(self: Any) -> None:
        setattr(self, _HEAD_OPEN, False)
        setattr(self, _HEAD_BYTES, 0)
        setattr(self, _HEADS_ENDED, getattr(self, _HEADS_ENDED, 0) + 1)
        on_headers_complete(self)

    def message_complete(self: Any) -> None:
        setattr(self, _HEAD_OPEN, True)
        setattr(self, _HEAD_BYTES, 0)
        on_message_complete(self)

    protocol.data_received, protocol.on_headers_complete, protocol.on_message_complete = (
        received,
        headers_complete,
        message_complete,
    )
    setattr(protocol, _INSTALLED, True)
