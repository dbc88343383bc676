"""Request and response shapes of the HTTP API (the OpenAPI document at /openapi.json is built from them).

Size limits (question length, number of questions, top_k) are settings (serve_app.settings.Limits), so they
are checked by the ingress, not fixed here; the descriptions name them, with their defaults.
"""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.errors import MAX_ERROR_DETAILS, echo
from serve_app.settings import MAX_LIST_ITEMS, Limits

DEFAULT_TOP_K = 5
DEFAULT_LIMITS = Limits()
# Unknown keys, or wrong items of a list, reported one by one up to as many as an error lists; beyond, one error.
MAX_SEPARATE_PROBLEMS = MAX_ERROR_DETAILS


def _limit(name: str) -> str:
    """A limit as the API documentation names it: the setting, and its default."""
    return f"`limits.{name}` ({getattr(DEFAULT_LIMITS, name)} unless configured)"


class RequestBody(BaseModel):
    """A request's JSON object. Pydantic makes an error of each unknown key and of each wrong item of a list, and
    turning them into a 422 takes Python time per error on the ingress's event loop: a 1.9 MB body of 242,000 unknown
    keys held it ~1 s, every other request waiting (a hostile client found it). Beyond a few, they are one error,
    raised before any field is validated."""

    string_lists: ClassVar[tuple[str, ...]] = ()  # fields that are lists of strings

    @model_validator(mode="before")
    @classmethod
    def _many_problems_as_one(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = len(data) - sum(name in data for name in cls.model_fields)
        if unknown > MAX_SEPARATE_PROBLEMS:
            first = next(key for key in data if key not in cls.model_fields)
            known = ", ".join(cls.model_fields)
            raise ValueError(f"{unknown} unknown fields (the first {echo(first)}): this body takes {known}")
        for name in cls.string_lists:
            items = data.get(name)
            if not isinstance(items, list) or len(items) > MAX_LIST_ITEMS:  # one error as it is
                continue
            wrong = [index for index, item in enumerate(items) if not isinstance(item, str)]
            if len(wrong) > MAX_SEPARATE_PROBLEMS:
                first = f"item {wrong[0]}: {type(items[wrong[0]]).__name__}"
                raise ValueError(f"'{name}' must hold strings: {len(wrong)} of its items do not ({first})")
        return data


def _exactly_one(single: object, several: object, message: str) -> None:
    if (single is None) == (several is None):
        raise ValueError(message)


class MatchRequest(RequestBody):
    """One question, or a list of questions answered in order."""

    string_lists = ("questions",)

    # strict: "top_k": "3" or true is a 422, as on the image route, not silently 3 or 1.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"question": "How do I deep-copy an object?", "top_k": 3}]},
    )

    question: str | None = Field(
        None, description=f"The question to match, of at most {_limit('max_question_chars')} characters."
    )
    questions: list[str] | None = Field(
        None, max_length=MAX_LIST_ITEMS, description=f"Several questions, at most {_limit('max_questions')}."
    )
    top_k: int = Field(
        DEFAULT_TOP_K, description=f"How many matches to return per question, 1 to {_limit('max_top_k')}."
    )

    @model_validator(mode="after")
    def _exactly_one_form(self) -> "MatchRequest":
        _exactly_one(self.question, self.questions, "send either 'question' (a string) or 'questions' (a list)")
        return self


class Match(BaseModel):
    id: int | str = Field(description="Id of the original FAQ question.")
    answer_id: int | str = Field(description="Id of its answer.")
    question: str = Field(description="The original question's title.")
    score: float = Field(description="Calibrated probability that this original answers the question (0..1).")
    url: str | None = None
    answer: str | None = Field(None, description="The answer text, when the FAQ has one.")


class MatchResponse(BaseModel):
    matches: list[Match]
    model_version: str


class MatchResult(BaseModel):
    matches: list[Match]


class BatchMatchResponse(BaseModel):
    results: list[MatchResult]
    model_version: str


class ScoreRequest(RequestBody):
    """The reference service's request body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"input": "How to sort an array?"}]})

    input: str


class ClassifyRequest(RequestBody):
    """JSON form of /images/classify: base64-encoded image files (JPEG, PNG, WebP, GIF or BMP)."""

    string_lists = ("images",)

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(None, description="One base64-encoded image file.")
    images: list[str] | None = Field(
        None,
        max_length=MAX_LIST_ITEMS,
        description=f"Several base64-encoded image files, at most {_limit('max_images')}.",
    )
    top_k: int | None = Field(
        None, description=f"Classes per image, 1 to {_limit('max_image_top_k')}; default {DEFAULT_TOP_K}."
    )

    @model_validator(mode="after")
    def _exactly_one_form(self) -> "ClassifyRequest":
        _exactly_one(self.image, self.images, "send either 'image' (a base64 string) or 'images' (a list of them)")
        return self


class Prediction(BaseModel):
    label: str = Field(description="ImageNet-1k class name.")
    class_index: int = Field(description="ImageNet-1k class index, 0..999.")
    score: float = Field(description="Softmax probability of the class.")


class ClassifyResponse(BaseModel):
    """One image's answer; several images get a list of these, in order."""

    predictions: list[Prediction]
    model_version: str


class FeedbackRequest(RequestBody):
    """What the right answer to an earlier request was, or whether it helped: exactly one of ``faq_id``,
    ``image_class`` and ``helpful``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"request_id": "0b6ef6a4-7d52-4a8e-9c1e-2f0a4b9d6c11", "faq_id": 42}]},
    )

    request_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[ -~]+$",
        description="The X-Request-Id header of the answer this feedback is about.",
    )
    item: int = Field(0, ge=0, le=4096, description="Which question or image of that request (0-based).")
    # Any id a FAQ's TSV may hold, within what a 64-bit integer column stores: a 4,201-digit id was recorded.
    faq_id: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="Id of the FAQ original that answers the question."
    )
    image_class: int | None = Field(None, ge=0, le=999, description="The image's true ImageNet-1k class index.")
    helpful: bool | None = Field(None, description="Whether the answer helped.")

    @model_validator(mode="after")
    def _exactly_one_label(self) -> "FeedbackRequest":
        given = [name for name in ("faq_id", "image_class", "helpful") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("send exactly one of 'faq_id', 'image_class' and 'helpful'")
        return self

    def label(self) -> dict[str, Any]:
        """The item and the one label sent, as the feedback record holds them."""
        return self.model_dump(exclude={"request_id"}, exclude_none=True)


class FeedbackResponse(BaseModel):
    """Feedback accepted (202): it is written with the collected records within ``collection.flush_interval_s``."""

    request_id: str
    outcome: Literal["top1", "top3", "miss", "helpful", "unhelpful", "unknown"] = Field(
        description="Where the true answer ranked in the prediction this ingress replica remembers (unknown: none)."
    )


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    type: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ModelStatus(BaseModel):
    ready: bool
    model_version: str | None = None
    error: str | None = Field(None, description="Why the model is not ready, and how to fix it.")
    update_error: str | None = Field(
        None, description="Why the last hot model update was refused; the previous model keeps serving (FAQ model)."
    )
    device: str | None = Field(None, description="Where the model runs (image model).")
    torch_threads: int | None = Field(None, description="CPU threads torch uses on the replica (image model).")
    gil_switch_interval_s: float | None = Field(
        None,
        description="Python's GIL switch interval on the replica, seconds (FAQ model: "
        "SERVE_APP_FAQ_GIL_SWITCH_INTERVAL_S).",
    )
    batching: dict[str, float] | None = Field(None, description="Requests, batches and batch settings so far.")


class ProbeResponse(BaseModel):
    """What /readyz tells anyone."""

    status: Literal["ready", "not_ready"] = Field(description="ready (200): every model is loaded; else 503.")


class ReadinessResponse(ProbeResponse):
    """What /readyz tells a caller with valid credentials (anyone when authentication is off)."""

    ready: bool
    models: dict[str, ModelStatus]
    checked_s_ago: float = Field(
        description="Age of this state: /readyz asks the models at most every limits.readiness_cache_s seconds."
    )


class VersionResponse(BaseModel):
    app_version: str
    ray_version: str
    models: dict[str, Any]
