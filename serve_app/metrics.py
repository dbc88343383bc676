"""Application metrics in Prometheus terms, recorded by the ingress replicas.

They go through Ray Serve's metrics API, so every node's metrics agent exports them beside Ray's own (with the
``ray_`` prefix and the deployment, replica and application tags Serve adds), and whatever scrapes Ray scrapes
them: a PodMonitor on Kubernetes, Ray's service-discovery file locally (docs/operations.md).

Label values are bounded by construction: a route from a fixed list (``other`` for the rest), a status code,
an error type our own code names, a model name, a model version (few at a time), an outcome from a fixed list.
Never a question, a key, a caller or a request id.
"""

import asyncio
import json
import re
import time
from collections import Counter

from ray.serve import metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = (
    "/faq/match",
    "/score",
    "/images/classify",
    "/feedback",
    "/healthz",
    "/readyz",
    "/version",
    "/docs",
    "/openapi.json",
)
LATENCY_BUCKETS_S = [0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
PROBABILITY_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
GROUP_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]
# Where RequestMetrics leaves a request's arrival time (time.perf_counter) in the ASGI scope, for the routes.
ARRIVED_AT = "serve_app.arrived_at"
# Error types are ours (serve_app.errors), but a label must stay bounded even if one ever carried input.
ERROR_TYPE = re.compile(r"[a-z_]{1,40}")
CANCELLED_STATUS = 499  # NGINX's "client closed request": a request cancelled before it was answered
MAX_ERROR_BODY_BYTES = 4096  # an error body is bounded (serve_app.errors); a longer one is not ours


def route_of(path: str) -> str:
    """The route label of a request path; applications mounted under a prefix end with the same routes."""
    if path in ("", "/"):
        return "/"
    return next((route for route in ROUTES if path.endswith(route)), "other")


def auth_reason(message: str, challenge: str) -> str:
    """Why a 401 was answered, from our own message and WWW-Authenticate challenge (RFC 6750)."""
    if "invalid_token" not in challenge:
        return "missing_credentials"
    return "expired" if "expired" in message else "invalid_credentials"


class AppMetrics:
    """The metrics of one ingress replica (Serve's metrics must be created inside the replica)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "serve_app_http_requests",
            description="HTTP requests answered by the ingress, by route, status and error type (empty: success).",
            tag_keys=("route", "status", "error_type"),
        )
        self.latency = metrics.Histogram(
            "serve_app_http_request_duration_seconds",
            description="Time from a request's arrival at the ingress to the end of its answer.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("route", "status"),
        )
        self.unauthenticated = metrics.Counter(
            "serve_app_auth_failures",
            description="Requests refused with 401, by reason (missing_credentials, invalid_credentials, expired).",
            tag_keys=("reason",),
        )
        self.faq_top1 = metrics.Histogram(
            "serve_app_faq_top1_probability",
            description="Probability of the best match of each question answered, by model version.",
            boundaries=PROBABILITY_BUCKETS,
            tag_keys=("model_version",),
        )
        self.faq_group_size = metrics.Histogram(
            "serve_app_faq_call_group_size",
            description="Questions in each grouped call from the ingress to the FAQ deployment.",
            boundaries=GROUP_SIZE_BUCKETS,
        )
        self.replica_failures = metrics.Counter(
            "serve_app_model_replica_failures",
            description="Model replicas that died or became unreachable under a call (the call went again).",
            tag_keys=("model",),
        )
        self.model_info = metrics.Gauge(
            "serve_app_model_info",
            description="1 for each model version the ingress last saw serving (0 once it no longer serves).",
            tag_keys=("model", "model_version"),
        )
        self.collection_records = metrics.Counter(
            "serve_app_collection_records",
            description="Model data collection records (kind: prediction, feedback) by outcome: collected, written, "
            "dropped_buffer_full, dropped_write_error. collected = written + dropped_*, once flushed.",
            tag_keys=("kind", "outcome"),
        )
        self.collection_buffered = metrics.Gauge(
            "serve_app_collection_buffered_records",
            description="Model data collection records this ingress replica holds in memory, not yet written "
            "(collected - written - dropped): what it loses if it is killed.",
            tag_keys=("kind",),
        )
        self.feedback_outcomes = metrics.Counter(
            "serve_app_feedback_outcomes",
            description="Feedback received, by model and model version of the prediction it is about and outcome: "
            "top1, top3 (the true answer ranked first, or second or third), miss, helpful, unhelpful, or unknown "
            "(the ingress replica no longer remembers the prediction: collection.recent_predictions).",
            tag_keys=("model", "model_version", "outcome"),
        )
        self._versions: dict[str, str] = {}
        self._buffered: Counter[str] = Counter()  # by kind

    def observe_collection(self, outcome: str, kind: str, count: int) -> None:
        """Counts from the collector (serve_app.collection.Collector); a count of 0 sets the gauge again only."""
        if count:
            self.collection_records.inc(count, tags={"kind": kind, "outcome": outcome})
        self._buffered[kind] += count if outcome == "collected" else -count
        self.collection_buffered.set(self._buffered[kind], tags={"kind": kind})

    def observe_request(self, path: str, status: int, error_type: str, seconds: float) -> None:
        route, code = route_of(path), str(status)
        self.requests.inc(tags={"route": route, "status": code, "error_type": error_type})
        self.latency.observe(seconds, tags={"route": route, "status": code})

    def observe_faq_group(self, queries: list, results: list, model_version: str | None) -> None:
        """One grouped FAQ call: its size in questions, and each question's best probability. ``queries`` are
        ``(questions, top_k)``; a top_k of None asked for ranking rows ``[id, answer_id, probability]``."""
        self.faq_group_size.observe(sum(len(questions) for questions, _ in queries))
        tags = {"model_version": model_version or "none"}
        for (_, top_k), per_question in zip(queries, results, strict=True):
            for matches in per_question:
                if matches:
                    best = matches[0]["score"] if top_k is not None else matches[0][2]
                    self.faq_top1.observe(best, tags=tags)

    def observe_model_versions(self, versions: dict[str, str | None]) -> None:
        """At each readiness check. The 1 is set every time, not only on a change: Ray stops exporting a gauge that
        is not set for two export intervals (20 s)."""
        for model, version in versions.items():
            if version is None:
                continue
            previous = self._versions.get(model)
            if previous is not None and previous != version:
                self.model_info.set(0, tags={"model": model, "model_version": previous})
            self.model_info.set(1, tags={"model": model, "model_version": version})
            self._versions[model] = version


class RequestMetrics:
    """ASGI middleware, outermost: every answer is counted, the refusals of the other middlewares included."""

    def __init__(self, app: ASGIApp, recorder: AppMetrics) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = scope[ARRIVED_AT] = time.perf_counter()
        answer: dict = {"status": 500, "challenge": "", "body": b"", "full": False, "started": False}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"], answer["started"] = message["status"], True
                headers = dict(message.get("headers") or [])
                answer["challenge"] = headers.get(b"www-authenticate", b"").decode("latin-1")
            elif message["type"] == "http.response.body" and answer["status"] >= 400 and not answer["full"]:
                answer["body"] += message.get("body", b"")
                answer["full"] = len(answer["body"]) >= MAX_ERROR_BODY_BYTES
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except asyncio.CancelledError:
            # Serve cancels a request whose client has gone (serve_app/abandoned_requests.py): not our fault, and
            # counted apart, as NGINX's 499, not as the 500 of a request that failed unanswered.
            if not answer["started"]:
                answer["status"] = CANCELLED_STATUS
            raise
        finally:
            self._record(scope["path"], answer, time.perf_counter() - started)

    def _record(self, path: str, answer: dict, seconds: float) -> None:
        status, message, error_type = answer["status"], "", ""
        if status == CANCELLED_STATUS:
            error_type = "cancelled"
        elif status >= 400:
            error_type, message = _error_of(answer["body"])
        self.recorder.observe_request(path, status, error_type, seconds)
        if status == 401:
            self.recorder.unauthenticated.inc(tags={"reason": auth_reason(message, answer["challenge"])})


def _error_of(body: bytes) -> tuple[str, str]:
    """The ``type`` and ``message`` of one of our JSON error bodies; ``other`` when it is not one."""
    try:
        error = json.loads(body)["error"]
        error_type, message = str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "other", ""
    return (error_type if ERROR_TYPE.fullmatch(error_type) else "other"), message
