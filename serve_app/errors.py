"""The ingress's errors, the one table of the HTTP status each error answers with (the model layer's errors,
deployments.errors, know nothing of HTTP), and the one JSON shape every error has.

An error names what was wrong with a request but never sends it back: at most ``MAX_ECHO_CHARS`` characters of
anything a client sent (a field's value, a header, a JSON key) appear in an error, through ``echo`` and
``shorten``, and ``error_body`` bounds the whole answer besides (a 2 MB list of 500,000 wrong items was a
60 MB answer of 500,000 details).
"""

from typing import Any

from deployments.errors import (
    MAX_DETAIL_CHARS,
    MAX_ECHO_CHARS,
    InputTooLarge,
    InvalidInput,
    ModelUnavailable,
    WorkBudgetExceeded,
    shorten,
)

MAX_MESSAGE_CHARS = 1024  # an error message, whatever it is made of
MAX_ERROR_DETAILS = 20  # details listed; the rest are counted
VALIDATION_ERROR = "validation_error"


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A client's input quoted in an error message: its repr, of at most ``limit`` of its characters (a number:
    itself, or how many digits it has)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # str() of a huge int takes quadratic time, and raises past 4,300 digits.
        digits = len(str(value)) if value.bit_length() <= 4 * limit else int((value.bit_length() - 1) * 0.30103) + 1
        return str(value) if digits <= limit else f"a number of about {digits} digits"
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


class RetryLater(RuntimeError):
    """A refusal that names when to come back (``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.retry_after_s))


class Overloaded(RetryLater):
    """More work is waiting than the configured queues hold: answered at once with 503 and ``Retry-After``."""


class RateLimited(RetryLater):
    """A caller sent more of something than its rate allows: answered 429 ``rate_limited`` with ``Retry-After``."""


class ReplicaCrashed(RuntimeError):
    """Every model replica that took this call died under it, up to the configured number: it is not sent again,
    since a request that crashes replicas would otherwise take down each one in turn."""

    def __init__(self, model: str, deaths: int) -> None:
        super().__init__(
            f"{model}: {deaths} model replica(s) died or became unreachable while handling this request; it was "
            "not sent again (limits.max_replica_deaths_per_call)"
        )
        self.model = model
        self.deaths = deaths

    def __reduce__(self) -> tuple:
        return (type(self), (self.model, self.deaths))


class RequestError(ValueError):
    """The request itself is malformed at the HTTP level (its body, its media type); ``status`` is the 4xx to
    answer with. Invalid values are ``InvalidInput`` (``invalid``)."""

    def __init__(self, status: int, error_type: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.details = details or []

    def __reduce__(self) -> tuple:  # keeps every field when Ray ships the exception to the caller
        return (type(self), (self.status, self.error_type, self.message, self.details))


def invalid(field: str, message: str) -> InvalidInput:
    """A value the client sent that we will not process (422 validation_error naming ``field``)."""
    return InvalidInput(VALIDATION_ERROR, message, field)


# The HTTP status of each error a route may end with, but RequestError, which carries its own: the model layer's
# and the ingress's. The most specific class listed wins.
ERROR_STATUS: dict[type[Exception], int] = {
    InputTooLarge: 413,
    InvalidInput: 422,
    ModelUnavailable: 503,
    Overloaded: 503,
    RateLimited: 429,
    ReplicaCrashed: 500,
    TimeoutError: 504,
    WorkBudgetExceeded: 504,  # answered by InvalidInput's handler (serve_app.http), with this status
}


def status_of(error: Exception) -> int:
    return next(ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS)


def bounded_details(details: list[dict[str, Any]]) -> list[dict[str, str]]:
    """At most MAX_ERROR_DETAILS details (and one counting the rest), each field and message of bounded length."""
    kept = [
        {
            "field": shorten(str(detail.get("field", "")), MAX_DETAIL_CHARS),
            "message": shorten(str(detail.get("message", "")), MAX_DETAIL_CHARS),
        }
        for detail in details[:MAX_ERROR_DETAILS]
    ]
    if len(details) > MAX_ERROR_DETAILS:
        kept.append({"field": "", "message": f"... and {len(details) - MAX_ERROR_DETAILS} more problems"})
    return kept


def error_body(error_type: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"error": {"type", "message", "details"}}``: clients branch on ``type``, people read ``message``."""
    bounded = {
        "type": error_type,
        "message": shorten(message, MAX_MESSAGE_CHARS),
        "details": bounded_details(details or []),
    }
    return {"error": bounded}
