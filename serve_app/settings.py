"""Typed settings of the application. The names here are the names in serve_config.yaml and the RayService's
serveConfigV2.

``AppArgs`` are the application's ``args`` (the builder ``serve_app:build_app`` takes them); for
``serve run serve_app:graph`` they come from ``SERVE_APP_*`` environment variables instead
(``SERVE_APP_FAQ_MODEL_URI``, ``SERVE_APP_LIMITS__MAX_QUESTIONS``, ...). The ingress's own settings are here;
each model package owns its own (deployments.resnet.settings, deployments.faq.settings), including the
``user_config`` of its deployment, which re-tunes running replicas without restarting them.
"""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deployments.resnet.settings import ImageModelSettings
from serve_app.auth import AuthSettings
from serve_app.collection.settings import CollectionSettings
from serve_app.ratelimit import RateLimitSettings

# The most items a list in a request body may hold whatever the limits say (the API's schemas check it before any
# item): validating a million non-strings, each an error, took the ingress 5 s of CPU on its event loop.
# max_questions and max_images stay under it.
MAX_LIST_ITEMS = 10_000


class Limits(BaseModel):
    """Request limits enforced by the ingress; exceeding one is a 4xx naming the limit."""

    model_config = ConfigDict(extra="forbid")

    max_question_chars: int = Field(10_000, ge=1, description="Longest question accepted, in characters.")
    max_questions: int = Field(
        64, ge=1, le=MAX_LIST_ITEMS, description="Most questions in one /faq/match request (10,000 at most)."
    )
    max_top_k: int = Field(50, ge=1, description="Largest top_k accepted by /faq/match.")
    max_json_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest JSON body (413 above).")
    max_json_structure: int = Field(
        100_000,
        ge=0,
        description="Most of the characters , : [ and { a JSON body may hold (in strings too), counted as it "
        "streams in; beyond, 413 payload_too_large before it is parsed. Parsing time grows with them, on the "
        "ingress's event loop: 650,000 empty lists in 2 MB took 0.17 s a request, and eight clients sending them "
        "held another caller's question 2 s. 64 questions of 10,000 characters of code-heavy text hold ~40,000. "
        "0: no limit.",
    )
    upstream_timeout_s: float = Field(30.0, gt=0, description="Longest wait for a model replica (504 after).")
    work_budget_s: float | None = Field(
        None,
        gt=0,
        description="Longest a request's model work may take, counted from when the ingress hands it to the model "
        "(waiting for a grouped call and on the replica included; each replica counts the seconds left on its own "
        "clock). Past it the replica stops working on the request, within one chunk of questions (~0.1 s at most: "
        "deployments.faq.group_scoring) or before the next image's decoding or forward pass, and it is answered 504 "
        "work_budget_exceeded; the requests grouped with it are answered as usual. At most upstream_timeout_s. "
        "Unset: upstream_timeout_s, so no replica works on a request the ingress stopped waiting for.",
    )
    max_replica_deaths_per_call: int = Field(
        3,
        ge=1,
        description="A model call whose replica dies under it goes again to a live one, until this many replicas "
        "died under it (then 500 replica_crashed): a request that crashes replicas cannot take down each in turn.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time a request body may take to arrive (408 after): the time spent waiting for the "
        "client's bytes, not the service's own work between reads.",
    )
    max_image_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest /images body (413 above).")
    max_images: int = Field(
        32, ge=1, le=MAX_LIST_ITEMS, description="Most images in one /images/classify request (10,000 at most)."
    )
    max_image_top_k: int = Field(20, ge=1, description="Largest top_k accepted by /images/classify.")
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Requests (but image requests and probes) one ingress replica works on at once; "
        "more get 503 overloaded with Retry-After at once. It also bounds the FAQ requests waiting for a "
        "grouped call (faq_call_grouping).",
    )
    max_images_in_flight: int = Field(
        16,
        ge=1,
        description="/images/classify requests one ingress replica works on at once (503 above): about images/s "
        "x the latency you accept (a CPU replica classifies about 2.5 images/s); raise it on GPU nodes.",
    )
    max_image_bytes_in_flight: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Bytes of /images/classify bodies one ingress replica holds at once (503 overloaded above; a "
        "declared Content-Length is reserved before the body is read). The replica keeps each body and its decoded "
        "copies for the whole model call, so its memory for image bodies is about 3x this (base64 JSON: the body, "
        "the parsed text, the bytes). At least max_image_body_bytes.",
    )
    caller_share: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of max_in_flight, and of max_images_in_flight, one caller (an API key's name, a token's "
        "subject) may hold on an ingress replica at once; a further request is answered 429 too_many_in_flight with "
        "Retry-After. 1: no share (one caller may take every place: right for a single client); 0.5 keeps half of "
        "each for the other callers. Requests without credentials (auth off) are not divided.",
    )
    readiness_cache_s: float = Field(
        1.0,
        ge=0.0,
        le=300.0,
        description="How long /readyz answers from the models' last known state before asking the model deployments "
        "again (one question in flight at a time, shared by every probe meanwhile): probes from anyone cost no "
        "model calls. 0: every probe asks, still one at a time.",
    )

    @model_validator(mode="after")
    def _budget_within_timeout(self) -> Self:
        if self.work_budget_s is not None and self.work_budget_s > self.upstream_timeout_s:
            raise ValueError(
                f"work_budget_s ({self.work_budget_s:g}) must not exceed upstream_timeout_s "
                f"({self.upstream_timeout_s:g}): the ingress would stop waiting for work still allowed to run"
            )
        return self

    @model_validator(mode="after")
    def _one_body_fits_the_bytes_in_flight(self) -> Self:
        if self.max_image_bytes_in_flight < self.max_image_body_bytes:
            raise ValueError(
                f"max_image_bytes_in_flight ({self.max_image_bytes_in_flight}) must be at least max_image_body_bytes "
                f"({self.max_image_body_bytes}): a body within its limit would always be refused"
            )
        return self

    @property
    def work_budget(self) -> float:
        """The seconds of model work each request may take (``work_budget_s``, else the upstream timeout)."""
        return self.work_budget_s if self.work_budget_s is not None else self.upstream_timeout_s


class CallGrouping(BaseModel):
    """How the ingress groups concurrent FAQ requests (/faq/match and /score) into one call to the FAQ deployment
    (serve_app.coalesce): the only batching of FAQ requests. Requests wait for a group only while calls are in
    flight, so an idle service sends each at once."""

    model_config = ConfigDict(extra="forbid")

    max_group_size: int = Field(64, ge=1, le=4096, description="Most requests in one call; 1 turns grouping off.")
    max_in_flight: int = Field(
        2,
        ge=1,
        le=1024,
        description="Grouped calls outstanding at once per ingress replica, for ordinary and for large requests each; "
        "requests arriving meanwhile wait and leave together in the next call.",
    )
    large_request_chars: int | None = Field(
        20_000,
        ge=1,
        le=100_000_000,
        description="Requests with more characters of questions than this are grouped apart, in calls of their own "
        "(max_in_flight of them too), so ordinary requests never wait behind them in the ingress; null: one group "
        "for all.",
    )


class AppArgs(BaseSettings):
    """Arguments of the application builder."""

    # env_parse_none_str: "null" in the environment means null, as in serve_config.yaml (a setting whose null is
    # meaningful, such as faq_call_grouping.large_request_chars, can be set so from the environment too).
    model_config = SettingsConfigDict(
        env_prefix="SERVE_APP_", env_nested_delimiter="__", extra="forbid", env_parse_none_str="null"
    )

    faq_model_uri: str | None = Field(
        None,
        description="Model directory from `serve-app faq train`: a path or fsspec URL (az://...). "
        "Unset: the embedded demo FAQ, trained at start-up.",
    )
    images: ImageModelSettings = Field(ImageModelSettings(), description="How the image classifier loads and runs.")
    limits: Limits = Field(Limits(), description="Request limits enforced by the ingress.")
    auth: AuthSettings = Field(AuthSettings(), description="Who may call the ingress.")
    rate_limit: RateLimitSettings = Field(RateLimitSettings(), description="Per-caller request rate limits.")
    faq_call_grouping: CallGrouping = Field(
        CallGrouping(), description="How the ingress groups concurrent FAQ requests into FAQ deployment calls."
    )
    collection: CollectionSettings = Field(
        CollectionSettings(),
        description="Model data collection: a record of each answered model request and of feedback (POST /feedback).",
    )
