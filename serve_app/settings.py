"""Typed settings. The names here are the names in serve_config.yaml and the RayService's serveConfigV2.

``AppArgs`` are the application's ``args`` (the builder ``serve_app:build_app`` takes them); for
``serve run serve_app:graph`` they come from ``SERVE_APP_*`` environment variables instead
(``SERVE_APP_FAQ_MODEL_URI``, ``SERVE_APP_LIMITS__MAX_QUESTIONS``, ...). ``BatchConfig`` is the ``user_config``
of batched deployments: changing it in the config re-tunes running replicas without restarting them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve_app.auth import AuthSettings
from serve_app.ratelimit import RateLimitSettings

MAX_ASPECT_RATIO = 50.0  # panoramas are ~4:1-10:1; at 50:1 one resized image is at most 232 x 11,600 pixels


class Limits(BaseModel):
    """Request limits enforced by the ingress; exceeding one is a 4xx naming the limit."""

    model_config = ConfigDict(extra="forbid")

    max_question_chars: int = Field(10_000, ge=1, description="Longest question accepted, in characters.")
    max_questions: int = Field(64, ge=1, description="Most questions in one /faq/match request.")
    max_top_k: int = Field(50, ge=1, description="Largest top_k accepted by /faq/match.")
    max_json_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest JSON body (413 above).")
    upstream_timeout_s: float = Field(30.0, gt=0, description="Longest wait for a model replica (504 after).")
    max_replica_deaths_per_call: int = Field(
        3,
        ge=1,
        description="A model call whose replica dies under it goes again to a live one, until this many replicas "
        "died under it (then 500 replica_crashed): a request that crashes replicas cannot take down each in turn.",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="Longest time a request body may take to arrive (408 after).")
    max_image_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest /images body (413 above).")
    max_images: int = Field(32, ge=1, description="Most images in one /images/classify request.")
    max_image_top_k: int = Field(20, ge=1, description="Largest top_k accepted by /images/classify.")
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Requests (but image requests and probes) one ingress replica works on at once; "
        "more get 503 overloaded with Retry-After at once.",
    )
    max_images_in_flight: int = Field(
        16,
        ge=1,
        description="/images/classify requests one ingress replica works on at once (503 above): about images/s "
        "x the latency you accept (16: ~6 s at a CPU replica's ~2.5 images/s); raise it on GPU nodes.",
    )
    readiness_cache_s: float = Field(
        1.0,
        ge=0.0,
        le=300.0,
        description="How long /readyz answers from the models' last known state before asking the model deployments "
        "again (one question in flight at a time, shared by every probe meanwhile): probes from anyone cost no "
        "model calls. 0: every probe asks, still one at a time.",
    )


class ImageModelSettings(BaseModel):
    """How the ResNet-152 classifier loads and runs."""

    model_config = ConfigDict(extra="forbid")

    weights: str = Field(
        "IMAGENET1K_V2",
        description="IMAGENET1K_V2 (torchvision's, downloaded once into the torch cache), a path or fsspec URL "
        "to a state_dict, or random:SEED (same architecture and compute, meaningless classes).",
    )
    weights_sha256: str | None = Field(None, description="Expected sha256 of a state_dict file; refused if it differs.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when the replica has a GPU.")
    half_precision: bool = Field(True, description="fp16 on CUDA (ignored on the CPU).")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA (ignored on the CPU).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Larger images are refused (decompression bombs).")
    max_aspect_ratio: float = Field(
        MAX_ASPECT_RATIO,
        ge=1.0,
        description="Longer side over shorter side; more elongated images are refused (422 image_too_elongated): "
        "the resize to 232 on the short side would make a 65535x1 image ~15 million pixels long.",
    )
    decode_threads: int = Field(4, ge=1, description="Threads decoding and preprocessing images on a replica.")


class BatchConfig(BaseModel):
    """``user_config`` of a batched deployment."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=10.0)


class FaqUserConfig(BatchConfig):
    """``user_config`` of the FAQ deployment: batching, and the model to swap in on running replicas."""

    model_uri: str | None = Field(
        None,
        description="Hot model update: a directory from `serve-app faq train` (path or fsspec URL) that running "
        "replicas load, verify and swap in without a restart. A model that fails verification is refused and "
        "the previous one keeps serving (/readyz names why). Unset: the model of `faq_model_uri`.",
    )


FAQ_USER_CONFIG = FaqUserConfig(max_batch_size=32, batch_wait_timeout_s=0.002)


class CallGrouping(BaseModel):
    """How the ingress groups concurrent requests into one call to a model deployment (serve_app.coalesce)."""

    model_config = ConfigDict(extra="forbid")

    max_group_size: int = Field(64, ge=1, le=4096, description="Most requests in one call; 1 turns grouping off.")
    max_in_flight: int = Field(2, ge=1, le=1024, description="Grouped calls outstanding at once per ingress replica.")
    max_waiting: int = Field(
        1024, ge=1, description="Requests that may wait for a group per ingress replica; more get 503 at once."
    )


# Images are ~100x costlier than questions: a longer wait to fill a batch costs little relative latency.
IMAGE_BATCHING = BatchConfig(max_batch_size=16, batch_wait_timeout_s=0.01)


class AppArgs(BaseSettings):
    """Arguments of the application builder."""

    model_config = SettingsConfigDict(env_prefix="SERVE_APP_", env_nested_delimiter="__", extra="forbid")

    faq_model_uri: str | None = Field(
        None,
        description="Model directory from `serve-app faq train`: a path or fsspec URL (az://...). "
        "Unset: the embedded demo FAQ, trained at start-up.",
    )
    images: ImageModelSettings = ImageModelSettings()
    limits: Limits = Limits()
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    faq_call_grouping: CallGrouping = Field(
        CallGrouping(), description="How the ingress groups concurrent /faq/match requests into FAQ deployment calls."
    )
