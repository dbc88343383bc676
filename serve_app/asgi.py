"""Answers sent by the pure ASGI middlewares (admission, auth, rate limit), which run before FastAPI and so
cannot raise into its error handlers: the same JSON error shape, written straight to ``send``."""

import json

from starlette.types import Send

from serve_app.errors import error_body


async def send_error(send: Send, status: int, error_type: str, message: str, headers: dict[str, str] | None = None):
    body = json.dumps(error_body(error_type, message)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
