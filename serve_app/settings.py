"""Typed settings. The names here are the names in serve_config.yaml and the RayService's serveConfigV2.

``AppArgs`` are the application's ``args`` (the builder ``serve_app:build_app`` takes them); for
``serve run serve_app:graph`` they come from ``SERVE_APP_*`` environment variables instead
(``SERVE_APP_FAQ_MODEL_URI``, ``SERVE_APP_LIMITS__MAX_QUESTIONS``, ...). ``BatchConfig`` is the ``user_config``
of batched deployments: changing it in the config re-tunes running replicas without restarting them.
"""

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel):
    """Request limits enforced by the ingress; exceeding one is a 4xx naming the limit."""

    model_config = ConfigDict(extra="forbid")

    max_question_chars: int = Field(10_000, ge=1, description="Longest question accepted, in characters.")
    max_questions: int = Field(64, ge=1, description="Most questions in one /faq/match request.")
    max_top_k: int = Field(50, ge=1, description="Largest top_k accepted by /faq/match.")
    max_json_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest JSON body (413 above).")
    upstream_timeout_s: float = Field(30.0, gt=0, description="Longest wait for a model replica (504 after).")


class BatchConfig(BaseModel):
    """``user_config`` of a batched deployment."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=10.0)


class AppArgs(BaseSettings):
    """Arguments of the application builder."""

    model_config = SettingsConfigDict(env_prefix="SERVE_APP_", env_nested_delimiter="__", extra="forbid")

    faq_model_uri: str | None = Field(
        None,
        description="Model directory from `serve-app faq train`: a path or fsspec URL (az://...). "
        "Unset: the embedded demo FAQ, trained at start-up.",
    )
    limits: Limits = Limits()
