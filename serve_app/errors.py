"""Errors that cross from the deployments to the ingress or end a model call there, and the one JSON shape every
error has."""

from typing import Any


class ModelUnavailable(RuntimeError):
    """A model could not be loaded; its routes answer 503 with this reason until it is fixed."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model}: {reason}")
        self.model = model
        self.reason = reason

    def __reduce__(self) -> tuple:  # keeps both fields when Ray ships the exception to the caller
        return (type(self), (self.model, self.reason))


class Overloaded(RuntimeError):
    """More work is waiting than the configured queues hold: answered at once with 503 and ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.retry_after_s))


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
    """The client sent something we will not process; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, error_type: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.details = details or []

    def __reduce__(self) -> tuple:  # keeps every field when Ray ships the exception to the caller
        return (type(self), (self.status, self.error_type, self.message, self.details))


def error_body(error_type: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"error": {"type", "message", "details"}}``: clients branch on ``type``, people read ``message``."""
    return {"error": {"type": error_type, "message": message, "details": details or []}}
