"""HTTP plumbing shared by every route: the body size limit and the mapping of errors to JSON responses.

Every error leaves as ``{"error": {"type", "message", "details"}}`` with a 4xx when the client can fix it and
a 5xx only when we cannot serve (503 model unavailable, 504 too slow, 500 a bug, logged with its request id).
"""

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import ModelUnavailable, Overloaded, ReplicaCrashed, RequestError, error_body

logger = logging.getLogger("ray.serve")

JSON_TYPES = ("application/json",)
HTTP_ERROR_TYPES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}
# FastAPI's words when the JSON parser itself fails (not UTF-8, nested too deeply): ours say what to fix.
UNPARSABLE_BODY = "There was an error parsing the body"


def error_response(status: int, error_type: str, message: str, details: list | None = None, **headers: str):
    return JSONResponse(error_body(error_type, message, details), status_code=status, headers=headers or None)


class BodyLimits:
    """413 for a body over its route's limit, 408 for a body that takes longer than ``timeout_s`` to arrive.

    The size is checked at once when Content-Length declares it, else while the body streams in. The timeout
    covers the whole body, so a client trickling bytes (slowloris) cannot hold a connection and a coroutine
    forever; neither HAProxy nor uvicorn bounds body time. Starlette's own limiter answers in plain text; this
    one keeps the API's JSON error shape.
    """

    def __init__(self, app: ASGIApp, limit_for_path: Callable[[str], int], timeout_s: float) -> None:
        self.app = app
        self.limit_for_path = limit_for_path
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "payload_too_large", _too_large(limit))(scope, receive, send)
            return
        received = 0
        deadline: float | None = None  # starts when the app first asks for the body

        async def limited_receive() -> Message:
            nonlocal received, deadline
            now = time.monotonic()
            deadline = deadline or now + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - now))
            except TimeoutError:
                raise StarletteHTTPException(408, _too_slow(self.timeout_s)) from None
            received += len(message.get("body", b""))
            if received > limit:
                raise StarletteHTTPException(413, _too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_slow(timeout_s: float) -> str:
    return f"request body did not arrive within {timeout_s:g} s; send it faster or in a smaller request"


def _too_large(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


def _field_of(location: tuple) -> str:
    return ".".join(str(part) for part in location if part != "body") or "body"


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    about_body = any(tuple(p["loc"])[:1] == ("body",) for p in problems)
    body_missing = any(p["type"] == "missing" and tuple(p["loc"]) == ("body",) for p in problems)
    is_json = content_type in JSON_TYPES or content_type.endswith("+json")
    # FastAPI parses a body as JSON only when the header says so; without one, a JSON body would fail as
    # "not a dictionary", which hides the real mistake. (No header and no body: simply missing, below.)
    if about_body and not is_json and not (body_missing and not content_type):
        return error_response(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {content_type or 'none'!r}"
        )
    if any(problem["type"] == "json_invalid" for problem in problems):
        reason = next(p.get("ctx", {}).get("error", "") for p in problems if p["type"] == "json_invalid")
        return error_response(400, "invalid_json", f"request body is not valid JSON: {reason}".rstrip(": "))
    details = [{"field": _field_of(p["loc"]), "message": p["msg"]} for p in problems]
    if any(p["type"] == "missing" and tuple(p["loc"]) == ("body",) for p in problems):
        return error_response(422, "validation_error", "request body is required", details)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return error_response(422, "validation_error", summary, details)


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(request, error)

    async def on_request_error(_: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.error_type, error.message, error.details)

    async def on_model_unavailable(_: Request, error: ModelUnavailable) -> JSONResponse:
        return error_response(503, "model_unavailable", str(error), **{"Retry-After": "30"})

    async def on_overloaded(_: Request, error: Overloaded) -> JSONResponse:
        retry_after = str(max(1, round(error.retry_after_s)))
        return error_response(503, "overloaded", str(error), **{"Retry-After": retry_after})

    async def on_replica_crashed(request: Request, error: ReplicaCrashed) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, error)
        return error_response(500, "replica_crashed", str(error))

    async def on_timeout(_: Request, error: TimeoutError) -> JSONResponse:
        return error_response(504, "upstream_timeout", str(error) or "the model did not answer in time")

    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == UNPARSABLE_BODY:
            message = "request body could not be parsed as JSON: it must be UTF-8 and nested at most ~1000 levels"
            return error_response(400, "invalid_json", message)
        error_type = HTTP_ERROR_TYPES.get(error.status_code, "http_error")
        return error_response(error.status_code, error_type, str(error.detail))

    async def on_client_disconnect(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client's doing, not ours (no one reads this answer; it keeps the logs' 500s for our own faults).
        logger.info("client closed the connection while sending %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client closed the connection before its body arrived")

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(error).__name__}); this is our fault")

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(ModelUnavailable, on_model_unavailable)
    app.add_exception_handler(Overloaded, on_overloaded)
    app.add_exception_handler(ReplicaCrashed, on_replica_crashed)
    app.add_exception_handler(TimeoutError, on_timeout)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
