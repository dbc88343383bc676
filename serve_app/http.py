"""HTTP plumbing shared by every route: the body size limit, request ids and the mapping of errors to JSON responses.

Every error leaves as ``{"error": {"type", "message", "details"}}`` with a 4xx when the client can fix it and
a 5xx only when we cannot serve (503 model unavailable, 504 too slow, 500 a bug, logged with its request id); the
statuses of the model layer's and the ingress's errors come from one table (serve_app.errors.ERROR_STATUS).
No error repeats more than a short prefix of what the client sent (serve_app.errors).

Request ids are the service's. Ray Serve's HTTP server (its proxy, or an ingress replica behind HAProxy) takes a
request's id from an ``X-Request-Id`` header when the client sends one, logs the request under it and sends it
back: a client could pick the id of someone else's request, or write what it likes into our logs. Ray's hook
for middlewares in front of that server, ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_app.http:proxy_middlewares``,
runs ``ClientRequestIds`` first: the client's header is taken away, so Serve makes up the id itself, and a valid
one (printable ASCII, at most 128 characters) travels on as ``X-Client-Request-Id``. ``RequestIds``, in the
ingress, logs it beside the request's own id and returns it as the ``X-Client-Request-Id`` response header.
The ingress replicas set the hook for themselves (their ``runtime_env``), which covers the fast ingress, where
they are the HTTP server; Serve's own proxy reads it from the environment Ray was started in.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.errors import MAX_DETAIL_CHARS, InvalidInput, ModelUnavailable, shorten
from serve_app.errors import (
    MAX_ERROR_DETAILS,
    VALIDATION_ERROR,
    RateLimited,
    ReplicaCrashed,
    RequestError,
    RetryLater,
    echo,
    error_body,
    status_of,
)
from serve_app.media_types import declared_length, is_json, media_type
from serve_app.request_head_limit import limit_request_heads
from serve_app.request_trailers import drop_request_trailers
from serve_app.scope_rewrite import ScopeRewrite
from serve_app.serve_control_headers import ServeControlHeaders, serving_in_a_replica

logger = logging.getLogger("ray.serve")

PROXY_HOOK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_HOOK = "serve_app.http:proxy_middlewares"
REQUEST_ID_HEADER = b"x-request-id"
CLIENT_REQUEST_ID_HEADER = b"x-client-request-id"
MAX_CLIENT_REQUEST_ID_CHARS = 128
# Set in the ASGI scope by ClientRequestIds: a client can send any header, but no scope key.
CLIENT_IDS_TAKEN = "serve_app.client_request_ids_taken"

HTTP_ERROR_TYPES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}
MODEL_RETRY_AFTER_S = "30"  # a model that cannot load is not back within seconds
# FastAPI's words when the JSON parser itself fails (not UTF-8, nested too deeply): ours say what to fix.
UNPARSABLE_BODY = "There was an error parsing the body"
# What a JSON value's parsing begins at, but a string's: each , : [ { is one more value, key or container.
JSON_STRUCTURE = b",:[{"
NOT_UTF8_JSON = "request body is not UTF-8: JSON must be sent as UTF-8 (UTF-16 and UTF-32 are not accepted)"


def error_response(status: int, error_type: str, message: str, details: list | None = None, **headers: str):
    return JSONResponse(error_body(error_type, message, details), status_code=status, headers=headers or None)


def not_json(content_type: str) -> JSONResponse:
    """415 for a body a JSON route cannot take, naming (the start of) what it was sent as."""
    message = f"Content-Type must be application/json, got {echo(content_type or 'none')}"
    return error_response(415, "unsupported_media_type", message)


def _declares_body(headers: Headers, length: int | None) -> bool:
    """A request that says a body follows (a Content-Length above 0, or a chunked one)."""
    return bool(length) or "chunked" in ",".join(headers.getlist("transfer-encoding")).lower()


class BodyLimits:
    """413 for a body over its route's limit (or a JSON body holding more than ``max_json_structure`` of the
    characters that open a value: ``,`` ``:`` ``[`` ``{``), 408 for a body whose client takes longer than
    ``timeout_s`` in all to send it, 400 for a JSON body that is not UTF-8, 415 for a body of another type sent
    to a route that takes JSON (``json_route``).

    What the headers tell is refused before a byte of the body is read: a client that asked to hear first
    (``Expect: 100-continue``) gets the refusal instead of ``100 Continue``, and does not send the body for nothing.

    The size is checked at once when Content-Length declares it, else while the body streams in. The timeout
    covers the whole body, so a client trickling bytes (slowloris) cannot hold a connection and a coroutine
    forever; neither HAProxy nor uvicorn bounds body time. Starlette's own limiter answers in plain text; this
    one keeps the API's JSON error shape.

    JSON must be UTF-8 (RFC 8259 section 8.1), but Python's ``json.loads`` detects UTF-16 and UTF-32 from the
    bytes, so FastAPI's parser took them while our errors say UTF-8. JSON text in those encodings always holds a
    NUL byte (its first character is ASCII), and UTF-8 JSON never does (control characters must be escaped):
    a NUL in a JSON body is refused as it streams in, before any parsing.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit_for_path: Callable[[str], int],
        timeout_s: float,
        max_json_structure: int = 0,
        json_route: Callable[[str, str], bool] = lambda method, path: False,
    ) -> None:
        self.app = app
        self.limit_for_path = limit_for_path
        self.json_route = json_route
        self.timeout_s = timeout_s
        self.max_json_structure = max_json_structure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        # As the routes read them (Starlette: a repeated header's first value): a lookup where the last one won
        # let a JSON body declared twice, `text/plain` then `application/json`, past the UTF-8 check below.
        headers = Headers(scope=scope)
        # Every coding named, on one line or several: `gzip` then `identity` on two lines was taken as identity.
        codings = ",".join(headers.getlist("content-encoding")).lower().split(",")
        if any(coding.strip() not in ("", "identity") for coding in codings):
            # Not decoded anywhere: a gzip JSON body got a 400 saying it was not UTF-8, an image a 422.
            message = "request bodies are not decoded: send it without Content-Encoding (compression)"
            await error_response(415, "unsupported_content_encoding", message)(scope, receive, send)
            return
        length = declared_length(headers)
        if length is not None and length > limit:
            await error_response(413, "payload_too_large", _too_large(limit))(scope, receive, send)
            return
        content_type = media_type(headers.get("content-type", ""))
        json_body = is_json(content_type)
        if not json_body and _declares_body(headers, length) and self.json_route(scope["method"], scope["path"]):
            # The route's own validation says the same, but only after the whole body came (a 100 Continue first).
            await not_json(content_type)(scope, receive, send)
            return
        received = structure = 0
        # Only the time spent waiting for the client's bytes counts: the app's own work between reads (parsing a
        # multipart body as it streams in) is not the client being slow, and was answered as if it were.
        waited_s = 0.0

        async def limited_receive() -> Message:
            nonlocal received, structure, waited_s
            started = time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, self.timeout_s - waited_s))
            except TimeoutError:
                raise StarletteHTTPException(408, _too_slow(self.timeout_s)) from None
            finally:
                waited_s += time.monotonic() - started
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise StarletteHTTPException(413, _too_large(limit))
            if json_body and b"\x00" in chunk:
                raise StarletteHTTPException(400, NOT_UTF8_JSON)
            if json_body and self.max_json_structure:
                structure += len(chunk) - len(chunk.translate(None, JSON_STRUCTURE))  # one pass, in C
                if structure > self.max_json_structure:
                    raise StarletteHTTPException(413, _too_dense(self.max_json_structure))
            return message

        await self.app(scope, limited_receive, send)


def _too_slow(timeout_s: float) -> str:
    return f"request body did not arrive within {timeout_s:g} s; send it faster or in a smaller request"


def _too_dense(limit: int) -> str:
    return (
        f"the JSON body holds more than {limit} of the characters , : [ {{ (limits.max_json_structure): this API's "
        "bodies are a few fields and a list of strings; send fewer items"
    )


def _too_large(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


def client_request_id(value: bytes | None) -> str | None:
    """A client's request id worth recording: 1 to 128 printable ASCII characters; anything else is dropped."""
    if not value or len(value) > MAX_CLIENT_REQUEST_ID_CHARS:
        return None
    text = value.decode("latin-1").strip()
    return text if text and all(" " <= char <= "~" for char in text) else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", []) if key.lower() == name), None)


class ClientRequestIds(ScopeRewrite):
    """In front of Ray Serve's HTTP server (``proxy_middlewares``): a client's ``X-Request-Id`` goes, so Serve gives
    the request an id of its own; a valid one travels on as ``X-Client-Request-Id`` (one the client sent under that
    name is dropped too)."""

    def rewrite(self, scope: Scope) -> Scope:
        sent = _header(scope, REQUEST_ID_HEADER)
        headers = [
            (k, v) for k, v in scope["headers"] if k.lower() not in (REQUEST_ID_HEADER, CLIENT_REQUEST_ID_HEADER)
        ]
        if (client_id := client_request_id(sent)) is not None:
            headers.append((CLIENT_REQUEST_ID_HEADER, client_id.encode("ascii")))
        return {**scope, "headers": headers, CLIENT_IDS_TAKEN: True}


def proxy_middlewares() -> list[Middleware]:
    """Ray Serve's hook (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): middlewares in front of its HTTP server,
    called in the process that runs that server, before it serves: where its parser is fixed too."""
    drop_request_trailers()
    limit_request_heads()
    return [Middleware(ClientRequestIds), Middleware(ServeControlHeaders, hold_continue=serving_in_a_replica())]


class RequestIds:
    """In the ingress: records a client's own request id (``X-Client-Request-Id``, from ClientRequestIds) in the log
    beside the request's id, and returns it in the ``X-Client-Request-Id`` response header.

    Without ClientRequestIds in front, Serve has already made a client's ``X-Request-Id`` the request's id, and
    nothing here can take that back: it is logged once as a warning naming the hook.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not scope.get(CLIENT_IDS_TAKEN):
            if not self._warned:
                self._warned = True
                logger.warning(
                    "Ray Serve's HTTP server runs without %s=%s: it takes request ids from clients' X-Request-Id",
                    PROXY_HOOK_ENV,
                    PROXY_HOOK,
                )
            await self.app(scope, receive, send)
            return
        client_id = client_request_id(_header(scope, CLIENT_REQUEST_ID_HEADER))
        if client_id is None:
            await self.app(scope, receive, send)
            return
        logger.info("client request id %s", client_id, extra={"client_request_id": client_id})

        async def send_with_client_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Client-Request-Id", client_id)
            await send(message)

        await self.app(scope, receive, send_with_client_id)


def _field_of(location: tuple) -> str:
    # A location names JSON keys the client chose ({"<200 KB>": 1} is an extra field): each is cut short.
    return ".".join(shorten(str(part)) for part in location if part != "body") or "body"


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    content_type = media_type(request.headers.get("content-type", ""))
    about_body = any(tuple(p["loc"])[:1] == ("body",) for p in problems)
    body_missing = any(p["type"] == "missing" and tuple(p["loc"]) == ("body",) for p in problems)
    # FastAPI parses a body as JSON only when the header says so; without one, a JSON body would fail as
    # "not a dictionary", which hides the real mistake. (No header and no body: simply missing, below.)
    if about_body and not is_json(content_type) and not (body_missing and not content_type):
        return not_json(content_type)
    if any(problem["type"] == "json_invalid" for problem in problems):
        reason = next(str(p.get("ctx", {}).get("error", "")) for p in problems if p["type"] == "json_invalid")
        reason = shorten(reason, MAX_DETAIL_CHARS)
        return error_response(400, "invalid_json", f"request body is not valid JSON: {reason}".rstrip(": "))
    # The first few problems (a 2 MB list of wrong items has hundreds of thousands), never their input.
    shown = problems[:MAX_ERROR_DETAILS]
    details = [{"field": _field_of(p["loc"]), "message": shorten(str(p["msg"]), MAX_DETAIL_CHARS)} for p in shown]
    if body_missing:
        return error_response(422, VALIDATION_ERROR, "request body is required", details)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    if len(problems) > len(shown):
        summary += f"; and {len(problems) - len(shown)} more problems"
    return error_response(422, VALIDATION_ERROR, summary, details)


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(request, error)

    async def on_request_error(_: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.error_type, error.message, error.details)

    async def on_invalid_input(_: Request, error: InvalidInput) -> JSONResponse:
        if error.field is None:
            return error_response(status_of(error), error.kind, error.message)
        details = [{"field": error.field, "message": error.message}]
        return error_response(status_of(error), error.kind, f"{error.field}: {error.message}", details)

    async def on_model_unavailable(_: Request, error: ModelUnavailable) -> JSONResponse:
        return error_response(status_of(error), error.kind, str(error), **{"Retry-After": MODEL_RETRY_AFTER_S})

    async def on_retry_later(_: Request, error: RetryLater) -> JSONResponse:
        retry_after = str(max(1, math.ceil(error.retry_after_s)))  # whole seconds, never sooner than the wait
        error_type = "rate_limited" if isinstance(error, RateLimited) else "overloaded"
        return error_response(status_of(error), error_type, str(error), **{"Retry-After": retry_after})

    async def on_replica_crashed(request: Request, error: ReplicaCrashed) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, error)
        return error_response(status_of(error), "replica_crashed", str(error))

    async def on_timeout(_: Request, error: TimeoutError) -> JSONResponse:
        message = str(error) or "the model did not answer in time"
        return error_response(status_of(error), "upstream_timeout", message)

    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == UNPARSABLE_BODY:
            message = (
                "request body could not be parsed as JSON: it must be UTF-8, nested at most ~1000 levels, "
                "with numbers of at most 4300 digits"
            )
            return error_response(400, "invalid_json", message)
        if error.status_code == 400 and error.detail == NOT_UTF8_JSON:
            return error_response(400, "invalid_json", NOT_UTF8_JSON)
        error_type = HTTP_ERROR_TYPES.get(error.status_code, "http_error")
        response = error_response(error.status_code, error_type, str(error.detail))
        response.headers.update(error.headers or {})  # a 405's Allow (RFC 9110 requires it)
        return response

    async def on_client_disconnect(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client's doing, not ours (no one reads this answer; it keeps the logs' 500s for our own faults).
        logger.info("client closed the connection while sending %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client closed the connection before its body arrived")

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(error).__name__}); this is our fault")

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(InvalidInput, on_invalid_input)
    app.add_exception_handler(ModelUnavailable, on_model_unavailable)
    app.add_exception_handler(RetryLater, on_retry_later)
    app.add_exception_handler(ReplicaCrashed, on_replica_crashed)
    app.add_exception_handler(TimeoutError, on_timeout)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
