"""The records collected: one per answered model request, one per piece of feedback (docs/operations.md).

Inputs are recorded as the privacy mode allows; outputs as each question's or image's top-k ids and scores.
A record never holds a credential: the caller is the principal's name (``key:primary``, a token's ``sub``).
"""

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from serve_app.collection.settings import Privacy

# The first bytes of each image format the classifier accepts (serve_app.image_input decodes nothing here).
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}
UNKNOWN_VERSION = "unknown"


def image_format(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in IMAGE_SIGNATURES.items() if data.startswith(magic)), "unknown")


def text_input(text: str, privacy: Privacy) -> dict[str, Any]:
    if privacy == "none":
        return {}
    if privacy == "hashed":
        return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return {"text": text}


def image_input(data: bytes, privacy: Privacy) -> dict[str, Any]:
    described: dict[str, Any] = {"bytes": len(data), "format": image_format(data)}
    if privacy == "hashed":
        described["sha256"] = hashlib.sha256(data).hexdigest()
    elif privacy == "full":
        described["base64"] = base64.b64encode(data).decode("ascii")
    return described


def top_k(ids: list, scores: list[float]) -> dict[str, list]:
    return {"ids": list(ids), "scores": [round(float(score), 6) for score in scores]}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def prediction_record(
    *,
    request_id: str,
    route: str,
    model: str,
    model_version: str | None,
    caller: str | None,
    latency_ms: float,
    status: int,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, list]],
) -> dict[str, Any]:
    """One answered model request; ``inputs`` and ``outputs`` hold one entry per question or image, in order."""
    return {
        "kind": "prediction",
        "request_id": request_id,
        "time": now_iso(),
        "route": route,
        "model": model,
        "model_version": model_version or UNKNOWN_VERSION,
        "caller": caller,
        "latency_ms": round(latency_ms, 3),
        "status": status,
        "inputs": inputs,
        "outputs": outputs,
    }


def feedback_record(
    *, request_id: str, feedback_request_id: str, caller: str | None, model_version: str | None, label: dict[str, Any]
) -> dict[str, Any]:
    """Feedback on the answer to ``request_id``: ``label`` is ``{"item", and "faq_id" | "image_class" | "helpful"}``.
    ``model_version`` is the prediction's when this replica still remembers it (the partition only: the report joins
    by request id)."""
    return {
        "kind": "feedback",
        "request_id": request_id,
        "feedback_request_id": feedback_request_id,
        "time": now_iso(),
        "model_version": model_version or UNKNOWN_VERSION,
        "caller": caller,
        **label,
    }
