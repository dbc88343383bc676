"""What a request's headers say about its body (its media type, its declared length), read one way by every check
that looks at them."""

from starlette.datastructures import Headers


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header value, without its parameters, in lower case ("" when none)."""
    return content_type.split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    """application/json, or a structured syntax suffix of it (application/problem+json, RFC 6839)."""
    return media == "application/json" or media.endswith("+json")


def declared_length(headers: Headers) -> int | None:
    """The length the first Content-Length declares (as the routes read headers); None when there is none, or it is
    not a plain decimal number (Python's ``int`` would take ``+5``, ``5_0`` or non-ASCII digits)."""
    declared = headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdigit() else None
