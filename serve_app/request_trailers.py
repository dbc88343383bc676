"""Request trailers never become request headers in uvicorn's httptools server (Ray Serve's HTTP server).

uvicorn's httptools protocol gives the ASGI scope the very list it appends header fields to, and llhttp reports a
chunked body's trailer fields through the same callback after the headers. So the trailer fields of a request
(``0\\r\\nAuthorization: Bearer ...\\r\\n\\r\\n`` after the body) were appended to the request's headers: a
credential, a Content-Type or an X-Request-Id sent after the body was honoured, unseen by any proxy or filter in
front that reads headers (a hostile client found it). RFC 9110 (section 6.5.1) forbids merging trailers into
headers unless each field is known to allow it; none of ours is, so fields after the header block are dropped.

Ray builds its uvicorn server in the process that calls its middleware hook (serve_app.http.proxy_middlewares):
the hook installs this there, before any request is parsed.
"""

import logging
from typing import Any

from uvicorn.protocols.http import auto, h11_impl, httptools_impl

# Ray starts uvicorn with http="auto"; h11 keeps trailers apart on its own. Another protocol would need a look.
SAFE_PROTOCOLS = (httptools_impl.HttpToolsProtocol, h11_impl.H11Protocol)
logger = logging.getLogger("ray.serve")

_INSTALLED = "_serve_app_drops_request_trailers"
_IN_TRAILERS = "_serve_app_in_trailers"


def drop_request_trailers() -> None:
    """Make uvicorn's httptools protocol ignore header fields reported after a request's header block (idempotent)."""
    protocol: Any = httptools_impl.HttpToolsProtocol
    if getattr(protocol, _INSTALLED, False):
        return
    if auto.AutoHTTPProtocol not in SAFE_PROTOCOLS:
        logger.warning(
            "uvicorn's HTTP protocol is %s, not one whose handling of request trailers serve_app.request_trailers "
            "knows: a chunked body's trailer fields may reach the app as headers",
            auto.AutoHTTPProtocol.__name__,
        )
    on_message_begin, on_header, on_headers_complete = (
        protocol.on_message_begin,
        protocol.on_header,
        protocol.on_headers_complete,
    )

    def begin(self: Any) -> None:
        setattr(self, _IN_TRAILERS, False)
        on_message_begin(self)

    def header(self: Any, name: bytes, value: bytes) -> None:
        if not getattr(self, _IN_TRAILERS, False):
            on_header(self, name, value)

    def headers_complete(self: Any) -> None:
        setattr(self, _IN_TRAILERS, True)  # every field reported from now on is a trailer
        on_headers_complete(self)

    protocol.on_message_begin, protocol.on_header, protocol.on_headers_complete = begin, header, headers_complete
    setattr(protocol, _INSTALLED, True)
