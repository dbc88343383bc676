"""Errors the model layer raises on purpose, in its own words: what was wrong and a stable machine-readable
``kind`` (the ``type`` of the API's JSON error body), never an HTTP status; the ingress chooses the status
(serve_app.errors). They cross Ray's handles, so each keeps its fields through pickling.

An error names what was wrong with an input but never sends it back: at most ``MAX_ECHO_CHARS`` characters of
anything a client sent appear in one, through ``shorten``.
"""

from dataclasses import dataclass

MAX_ECHO_CHARS = 64  # the most of one input (value, header, key) that an error message repeats
MAX_DETAIL_CHARS = 256  # a message about one input, whatever it is made of


def shorten(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class InvalidInput(ValueError):
    """Input the model cannot use: ``kind`` says why (clients branch on it), ``field`` which input it was."""

    def __init__(self, kind: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field

    def at(self, field: str) -> "InvalidInput":
        """The same error, located at ``field`` (e.g. the image's place in the request)."""
        return type(self)(self.kind, self.message, field)

    def __reduce__(self) -> tuple:  # keeps every field when Ray ships the exception to the caller
        return (type(self), (self.kind, self.message, self.field))


class InputTooLarge(InvalidInput):
    """Input over a size limit of the model (an image's pixel count)."""


WORK_BUDGET_EXCEEDED = "work_budget_exceeded"


class WorkBudgetExceeded(InvalidInput):
    """The request's work ran past the budget the ingress gave it, and the rest of it was not done.

    Not the input's fault alone (time queued behind other requests counts too), so it answers with a 5xx of its own
    (serve_app.errors.ERROR_STATUS); it is an InvalidInput in form, a ``kind``, a message and a ``field``, so that
    it crosses the handle and reaches the client as one does. The FAQ replica returns one in place of an over-budget
    request's results (its group's other requests are answered); the image replica raises it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(WORK_BUDGET_EXCEEDED, message, field)

    def at(self, field: str) -> "WorkBudgetExceeded":
        return type(self)(self.message, field)

    def __reduce__(self) -> tuple:
        return (type(self), (self.message, self.field))


class ModelUnavailable(RuntimeError):
    """A model could not be loaded; its routes fail with this reason until it is fixed."""

    kind = "model_unavailable"

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model}: {reason}")
        self.model = model
        self.reason = reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.model, self.reason))


@dataclass(frozen=True)
class Refused:
    """A model call's answer when the replica refused it: its input (an InvalidInput, not the work budget), or
    a model that could not be loaded (ModelUnavailable). Returned rather than raised, because Ray logs every
    exception a replica raises at ERROR with its traceback, and any client could fill the replica's log that way
    (a TIFF a request; any request while the model is broken, whose one load error is logged already). The
    ingress raises ``error`` for its 4xx or 503."""

    error: InvalidInput | ModelUnavailable
