"""Reading images out of a /images/classify request: a raw image body, multipart form fields, or JSON base64.

Only bytes come out: decoding happens on the classifier replica, so the ingress stays light and the network
carries compressed images.
"""

import base64
import binascii
from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from deployments.errors import MAX_DETAIL_CHARS, InvalidInput, shorten
from serve_app.errors import RequestError, echo, invalid
from serve_app.media_types import is_json, media_type
from serve_app.schemas import DEFAULT_TOP_K, ClassifyRequest
from serve_app.settings import Limits

IMAGE_FIELD = "image"
MALFORMED = "malformed multipart body"
# Spaces or tabs a boundary line may end with (RFC 2046 "transport padding": what a gateway may have added).
MAX_TRANSPORT_PADDING = 64
MAX_FIELDS = 8  # text fields of a multipart request (top_k, and room for what clients add)
DEFAULT_LIMITS = Limits()
ACCEPTED = "image/* (raw body), multipart/form-data (field 'image') or application/json ('image'/'images')"


@dataclass(frozen=True)
class ImageRequest:
    images: list[bytes]
    top_k: int
    several: bool  # answer with a list, one entry per image


def _parse_top_k(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    # Digits only: int() would also take "1_0", " 3", "+3" and other scripts' digits ("٣").
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise invalid(field, f"must be an integer, got {echo(value)}")
    return int(value)


def _multipart_error(message: str, limits: Limits) -> RequestError | InvalidInput:
    # Starlette stops at max_files: too many images is the same 422 as in JSON, not a malformed body.
    if message.startswith("Too many files"):
        return invalid("images", f"at most {limits.max_images} file parts per request")
    return RequestError(400, "invalid_multipart", f"{MALFORMED}: {shorten(message, MAX_DETAIL_CHARS)}")


def _check_delimiters(body: bytes, content_type: str, most_parts: int) -> None:
    """400 for a body holding its boundary delimiter more often than ``most_parts`` parts need, or padding one
    with more than MAX_TRANSPORT_PADDING spaces or tabs.

    The parser walks both byte by byte in Python, on the ingress's event loop: 8 MB of "\\r\\n--BOUNDARY" + "a" (a
    delimiter inside a part, which RFC 2046 forbids) took it 0.73 s against 5 ms for any other 8 MB, and 19 MB of
    spaces after one delimiter (RFC 2046's transport padding, meant for a few) 5.5 s against 0.49 s. Checking
    both first, in C, keeps a request's parsing linear at C speed.
    """
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        return  # the parser's own error
    delimiter = b"\r\n--" + boundary
    if body.count(delimiter) > most_parts + 1:  # one before each part, and the closing one
        message = f"{MALFORMED}: the boundary occurs inside a part (or there are too many parts)"
        raise RequestError(400, "invalid_multipart", message)
    ends = [len(delimiter) - 2] if body.startswith(delimiter[2:]) else []  # the first may open the body
    found = body.find(delimiter)
    while found != -1:
        ends.append(found + len(delimiter))
        found = body.find(delimiter, found + 1)
    for end in ends:
        after = body[end : end + MAX_TRANSPORT_PADDING + 1]
        if len(after) - len(after.lstrip(b" \t")) > MAX_TRANSPORT_PADDING:
            message = f"{MALFORMED}: more than {MAX_TRANSPORT_PADDING} spaces or tabs after a boundary"
            raise RequestError(400, "invalid_multipart", message)


async def _from_multipart(request: Request, limits: Limits) -> tuple[list[bytes], int | None]:
    # The whole body first (within limits.max_image_body_bytes; Starlette's parser then reads it from memory).
    _check_delimiters(await request.body(), request.headers.get("content-type", ""), limits.max_images + MAX_FIELDS)
    try:
        form = await request.form(
            max_files=limits.max_images, max_fields=MAX_FIELDS, max_part_size=limits.max_image_body_bytes
        )
    except MultiPartException as error:
        raise _multipart_error(error.message, limits) from None
    except HTTPException as error:
        if error.status_code != 400:  # the body limits' 408 and 413 keep their own status
            raise
        # Starlette wraps the parser's own errors in a 400 HTTPException.
        raise _multipart_error(str(error.detail), limits) from None
    try:
        parts = form.getlist(IMAGE_FIELD)
        if any(not isinstance(part, UploadFile) for part in parts):
            raise invalid(IMAGE_FIELD, "must be a file part (curl -F image=@photo.jpg), not a text field")
        images = [await part.read() for part in parts if isinstance(part, UploadFile)]
        # As in the query: given once, as text. Several took the last; a file part was ignored.
        given = form.getlist("top_k")
        if len(given) > 1:
            raise invalid("top_k", f"given {len(given)} times in the form: give it once")
        if given and not isinstance(given[0], str):
            raise invalid("top_k", "must be a text field, not a file part")
        return images, _parse_top_k(given[0] if given else None, "top_k")
    finally:
        await form.close()  # the parts' spooled files, on errors too


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_images:
        raise invalid("images", f"at most {limits.max_images} images per request, got {count}")


def _from_json(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[list[bytes], int | None, bool]:
    try:
        request = ClassifyRequest.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
    encoded = [request.image] if request.image is not None else request.images or []
    _check_count(len(encoded), limits)  # before decoding any: a 20 MB body holds millions of empty strings
    images = []
    for index, text in enumerate(encoded):
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            field = "image" if request.image is not None else f"images.{index}"
            raise invalid(field, "is not valid base64") from None
    return images, request.top_k, request.images is not None


def _query_top_k(request: Request) -> int | None:
    """The query's top_k, digits only and given once: FastAPI's int took "3.0", " 3" and "+3", and the last of
    several (the route still declares it, for the OpenAPI document)."""
    given = request.query_params.getlist("top_k")
    if len(given) > 1:
        raise invalid("top_k", f"given {len(given)} times in the query: give it once")
    return _parse_top_k(given[0] if given else None, "top_k")


async def read_image_request(request: Request, limits: Limits) -> ImageRequest:
    query_top_k = _query_top_k(request)  # before the body is read: a bad query costs nothing
    content_type = media_type(request.headers.get("content-type", ""))
    body_top_k, several = None, False
    if content_type.startswith("image/"):
        images = [await request.body()]
    elif content_type == "multipart/form-data":
        images, body_top_k = await _from_multipart(request, limits)
        several = len(images) > 1
    elif is_json(content_type):
        images, body_top_k, several = _from_json(await request.body(), limits)
    else:
        raise RequestError(
            415, "unsupported_media_type", f"Content-Type {echo(content_type or 'missing')}: send {ACCEPTED}"
        )
    if not images:
        raise invalid("images", f"no image in the request: send {ACCEPTED}")
    _check_count(len(images), limits)
    if body_top_k is not None and query_top_k is not None:  # the body's silently won
        raise invalid("top_k", "given in both the query and the body: give it once")
    top_k = body_top_k if body_top_k is not None else query_top_k if query_top_k is not None else DEFAULT_TOP_K
    if not 1 <= top_k <= limits.max_image_top_k:
        raise invalid("top_k", f"must be between 1 and {limits.max_image_top_k}, got {echo(top_k)}")
    return ImageRequest(images=images, top_k=top_k, several=several)
