"""What a request's Content-Type names, read one way by every check that looks at it."""


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header value, without its parameters, in lower case ("" when none)."""
    return content_type.split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    """application/json, or a structured syntax suffix of it (application/problem+json, RFC 6839)."""
    return media == "application/json" or media.endswith("+json")
