"""Settings of model data collection (``collection`` in the application's args)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Privacy = Literal["none", "hashed", "full"]


class CollectionSettings(BaseModel):
    """What the ingress records of each answered model request and of feedback, and where it writes it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Record answered model requests and accept POST /feedback (409 collection_disabled when off).",
    )
    destination: str | None = Field(
        None,
        description="Where the JSON Lines files go: a local path or an fsspec URL (az://container/prefix with the "
        "`azure` extra). Required when enabled; on Kubernetes a local path must be a writable volume.",
    )
    storage_options: dict[str, Any] = Field(
        {}, description="fsspec options of the destination (e.g. account_name); keep secrets in the environment."
    )
    sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of answered model requests recorded (feedback is always recorded)."
    )
    privacy: Privacy = Field(
        "hashed",
        description="What of the inputs is recorded. none: nothing of a question, size and format of an image; "
        "hashed: their sha256 besides; full: the question text and the image bytes (base64).",
    )
    buffer_records: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Records held in memory per ingress replica before they are written; beyond, new records are "
        "dropped and counted (serve_app_collection_records_dropped), never a request slowed.",
    )
    flush_interval_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="Longest time a record waits in memory before it is written."
    )
    roll_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="A file is closed and a new one begun past this size."
    )
    roll_age_s: float = Field(
        300.0,
        gt=0.0,
        description="A file is closed and a new one begun past this age. An object store shows a file once it is "
        "closed, so this bounds how late records appear there.",
    )
    feedback_per_s: float | None = Field(
        10.0,
        gt=0,
        description="Feedback each caller may send per second to each ingress replica (a token bucket), beyond it "
        "a 429 rate_limited with Retry-After: every feedback is a record written, whatever its request id "
        "(one from another replica, or made up, cannot be told apart). Unset: no limit but rate_limit's.",
    )
    feedback_burst: int = Field(100, ge=1, description="Feedback a caller may send at once above feedback_per_s.")
    recent_predictions: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Predictions each ingress replica remembers for the feedback metric "
        "(serve_app_feedback_outcomes); feedback on an older one counts as unknown.",
    )

    @model_validator(mode="after")
    def _destination_when_enabled(self) -> "CollectionSettings":
        if self.enabled and not self.destination:
            raise ValueError("collection.destination is required when collection.enabled is true")
        return self
