"""The HTTP ingress: parses and validates requests, enforces limits, calls the model deployments.

It holds no model. Each route turns a request into a DeploymentHandle call and the answer (or the error)
into JSON; the shapes are in serve_app.schemas and the error mapping in serve_app.http.
"""

import asyncio
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from importlib.metadata import version
from typing import Any

import ray
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.errors import InvalidInput, ModelUnavailable, Refused, WorkBudgetExceeded
from deployments.transport import CALL_SIZE_ENV
from serve_app.abandoned_requests import CancelAbandoned
from serve_app.admission import BodyBytesInFlight, CallerShare, InFlightLimit
from serve_app.auth import Authenticator, AuthMiddleware, AuthSettings, Principal
from serve_app.coalesce import Coalescer
from serve_app.collection import CollectionSettings, Collector, RecentPredictions, feedback_record, prediction_record
from serve_app.collection.recent import RecentPrediction, outcome_of
from serve_app.collection.records import image_input, text_input, top_k
from serve_app.errors import Overloaded, RateLimited, ReplicaCrashed, RequestError, echo, invalid
from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV, BodyLimits, RequestIds, install_error_handlers
from serve_app.image_input import read_image_request
from serve_app.metrics import ARRIVED_AT, AppMetrics, RequestMetrics
from serve_app.probes import DEMO_PATH, LIVENESS_PATH, READINESS_PATH
from serve_app.questions import check_questions
from serve_app.ratelimit import RateLimitMiddleware, RateLimitSettings, TokenBuckets, caller_key
from serve_app.schemas import (
    DEFAULT_TOP_K,
    BatchMatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    MatchRequest,
    MatchResponse,
    ProbeResponse,
    ReadinessResponse,
    ScoreRequest,
    VersionResponse,
)
from serve_app.settings import CallGrouping, Limits

STATUS_TIMEOUT_S = 5.0
INGRESS_DRAIN_S = 45.0  # > the default upstream timeout, with room for the reply
RETRY_BACKOFF_S = 0.05  # first wait before re-sending a call whose replica died; doubles up to 1 s
logger = logging.getLogger("ray.serve")
# What the FAQ deployment answers a query with (deployments.faq.group_scoring; the ingress does not import the model
# code): one request's questions and top_k, None for every original ranked as the /score rows.
FaqQuery = tuple[list[str], int | None]
# A query waiting for a grouped call, with the local time.monotonic() by which its work must be done: each call
# sends the seconds left (deployments.faq.group_scoring), so no two machines' clocks are ever compared.
BudgetedQuery = tuple[FaqQuery, float]
IMAGE_REQUEST_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "top_k": {"type": "integer"},
                },
                "required": ["image"],
            }
        },
        "application/json": {"schema": ClassifyRequest.model_json_schema()},
    },
}
# Rows of /score recorded by model data collection (it ranks every original; the report needs the top 3).
SCORE_ROWS_COLLECTED = 10
FEEDBACK_MODEL = {"faq_id": "faq", "image_class": "images"}  # the model a feedback label is about
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 408, 413, 415, 422, 429, 503, 504)
}
# Where an ingress replica is Ray Serve's HTTP server itself (the fast ingress), this puts
# serve_app.http.ClientRequestIds in front of it: request ids are then always Serve's own (serve_app.http).
DEMO_PAGE = (resources.files("serve_app") / "static" / "demo.html").read_text(encoding="utf-8")
# The page's own script and styles only; it is never framed, and answers are shown as text (demo.html).
DEMO_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
INGRESS_RUNTIME_ENV = {"env_vars": {PROXY_HOOK_ENV: PROXY_HOOK, **CALL_SIZE_ENV}}


class CachedState:
    """The value of ``fetch``, asked for again only when it is older than ``max_age_s``, one ask at a time: callers
    meanwhile share the ask in flight (a caller that goes away does not cancel it for the others)."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], max_age_s: float) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._value: Any = None
        self._fetched_at = -math.inf
        self._in_flight: asyncio.Task | None = None

    async def get(self) -> tuple[Any, float]:
        """The value and its age in seconds."""
        if time.monotonic() - self._fetched_at >= self._max_age_s or self._value is None:
            if self._in_flight is None:
                self._in_flight = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._in_flight)
        return self._value, time.monotonic() - self._fetched_at

    async def _refresh(self) -> None:
        try:
            value = await self._fetch()
            self._value, self._fetched_at = value, time.monotonic()
        finally:
            self._in_flight = None


def _request_id() -> str:
    """The id Serve gave the request being answered (its X-Request-Id response header); outside Serve (the unit
    tests), a fresh one."""
    return serve.context._get_serve_request_context().request_id or str(uuid.uuid4())


def _replica_name() -> str:
    """This replica's unique id, which names its collection files; outside Serve, the host and process."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return f"{socket.gethostname()}-{os.getpid()}"


def _caller(request: Request) -> str | None:
    """Who called, by name (serve_app.auth.Principal); None with authentication off."""
    principal = request.scope.get("state", {}).get("principal")
    return principal.subject if isinstance(principal, Principal) else None


def _seconds_left(deadlines: list[float]) -> list[float]:
    """The work budget left to each request (0 when spent: the replica then does none of its work)."""
    now = time.monotonic()
    return [max(0.0, deadline - now) for deadline in deadlines]


def _check_top_k(top_k: int, limits: Limits) -> None:
    if not 1 <= top_k <= limits.max_top_k:
        raise invalid("top_k", f"must be between 1 and {limits.max_top_k}, got {echo(top_k)}")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "runtime_env": INGRESS_RUNTIME_ENV},
    # Above limits.max_in_flight + limits.max_images_in_flight, so that InFlightLimit (serve_app.admission) refuses
    # the excess: a replica queues requests beyond max_ongoing_requests, which the fast ingress does not bound.
    max_ongoing_requests=1024,
    # Behind Serve's own proxy: beyond this many requests queued for the ingress, 503 with Retry-After at once.
    max_queued_requests=2048,
    # A replica being replaced (redeploy, scale-down) finishes its requests first. They may wait for a model
    # replica up to limits.upstream_timeout_s (30 s), so the drain must last longer, or Serve kills the replica
    # with requests in flight (seen: a 500 during a redeploy whose new FAQ replica took 30 s to start).
    graceful_shutdown_timeout_s=INGRESS_DRAIN_S,
)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        faq: DeploymentHandle,
        images: DeploymentHandle,
        limits: dict[str, Any] | None = None,
        faq_call_grouping: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        rate_limit: dict[str, Any] | None = None,
        collection: dict[str, Any] | None = None,
    ) -> None:
        self.models = {"faq": faq, "images": images}
        self.faq = faq
        self.images = images
        self.limits = Limits(**(limits or {}))
        self.auth = AuthSettings(**(auth or {}))
        self.rate_limit = RateLimitSettings(**(rate_limit or {}))
        # Built here, in the replica: the keys come from this process's environment (the Kubernetes Secret),
        # and a malformed key or secret stops the replica with a clear error instead of serving open.
        self.authenticator = Authenticator(self.auth)
        self.metrics = AppMetrics()
        grouping = CallGrouping(**(faq_call_grouping or {}))
        # Every FAQ route's requests, grouped: the one batching of FAQ requests. Their wait is bounded by
        # limits.max_in_flight (serve_app.admission), which counts them from arrival. Large requests (64 questions
        # of 10,000 never-seen words take seconds) are grouped apart, in their own calls: ordinary requests never
        # wait for theirs (two clients looping them held an ordinary question ~1.4 s at the median; now ~0.1 s:
        # benchmarks/results/heavy_neighbours.md). The FAQ replica scores the calls' chunks in turns.
        self.faq_calls = Coalescer(self._faq_group, grouping.max_group_size, grouping.max_in_flight)
        self.large_faq_calls = Coalescer(self._faq_group, grouping.max_group_size, grouping.max_in_flight)
        self.large_request_chars = grouping.large_request_chars
        # /readyz is open to anyone: its answers come from here, so probes never fan out to the models.
        self.readiness = CachedState(self._statuses, self.limits.readiness_cache_s)
        self.collection = CollectionSettings(**(collection or {}))
        self.collector: Collector | None = None
        if self.collection.enabled:
            self.collector = Collector(self.collection, _replica_name(), self.metrics.observe_collection)
        self.recent = RecentPredictions(self.collection.recent_predictions)
        feedback_rate = self.collection.feedback_per_s
        self.feedback_buckets = TokenBuckets(feedback_rate, self.collection.feedback_burst) if feedback_rate else None

    async def __del__(self) -> None:
        """Serve's hook for a replica's graceful shutdown (a redeploy, a scale-down, serve shutdown): after the
        drain, the records still in memory are written."""
        collector = getattr(self, "collector", None)  # None too when __init__ failed before it
        if collector is not None:
            await collector.close()

    def _collect(
        self,
        request: Request,
        model: str,
        answer: dict,
        inputs: Callable[[], list[dict]],
        ranked: list[tuple[list, list]],
    ) -> None:
        """Record an answered model request (``ranked``: each question's or image's ids and scores, best first)
        and remember its prediction for feedback. It only queues the record; ``inputs`` (hashing, base64) are
        described only for a request that is sampled."""
        if self.collector is None:
            return
        request_id, version = _request_id(), answer["model_version"]
        ranked_ids = tuple(tuple(ids) for ids, _ in ranked)
        self.recent.remember(request_id, RecentPrediction(model, version, ranked_ids, _caller(request)))
        if not self.collector.sampled():
            return
        arrived = request.scope.get(ARRIVED_AT, time.perf_counter())
        record = prediction_record(
            request_id=request_id,
            route=request.url.path,
            model=model,
            model_version=version,
            caller=_caller(request),
            latency_ms=(time.perf_counter() - arrived) * 1000,
            status=200,
            inputs=inputs(),
            outputs=[top_k(ids, scores) for ids, scores in ranked],
        )
        self.collector.submit(record)

    def _collect_questions(self, request: Request, questions: list[str], answer: dict, ranked: list) -> None:
        if self.collector is not None:
            privacy = self.collection.privacy
            self._collect(request, "faq", answer, lambda: [text_input(q, privacy) for q in questions], ranked)

    def _record_feedback(self, request: Request, feedback: FeedbackRequest) -> str:
        if self.collector is None:
            raise RequestError(
                409,
                "collection_disabled",
                "feedback is stored with the model data collection, which is off on this service: set "
                "collection.enabled (and collection.destination) in the application's args",
            )
        if self.feedback_buckets is not None and (wait_s := self.feedback_buckets.take(caller_key(request.scope))):
            rate = f"{self.collection.feedback_per_s:g} feedback per second"
            raise RateLimited(f"more than {rate} from this caller (collection.feedback_per_s)", wait_s)
        prediction = self.recent.get(feedback.request_id)
        if prediction is not None and prediction.caller != _caller(request):
            # Another caller's answer: told nothing about it (its model, where the label ranked), as if unknown;
            # the record keeps this caller's name, and the report counts only the answered caller's labels.
            prediction = None
        label = feedback.label()
        field = "image_class" if "image_class" in label else "faq_id" if "faq_id" in label else None
        if prediction is not None and field is not None and prediction.model != FEEDBACK_MODEL[field]:
            request_id = echo(feedback.request_id)
            raise invalid(field, f"request {request_id} was answered by the {prediction.model} model")
        if prediction is not None and feedback.item >= len(prediction.ranked_ids):
            count = len(prediction.ranked_ids)
            raise invalid("item", f"request {echo(feedback.request_id)} had {count} item(s), numbered from 0")
        outcome = outcome_of(prediction, feedback.item, label)
        record = feedback_record(
            request_id=feedback.request_id,
            feedback_request_id=_request_id(),
            caller=_caller(request),
            model_version=prediction.model_version if prediction else None,
            label=label,
        )
        if not self.collector.submit(record):
            raise Overloaded("feedback could not be stored now: the collection buffer is full", 5.0)
        tags = {
            "model": prediction.model if prediction else "unknown",
            "model_version": prediction.model_version if prediction else "unknown",
            "outcome": outcome,
        }
        self.metrics.feedback_outcomes.inc(tags=tags)
        return outcome

    async def _faq_group(self, budgeted: list[BudgetedQuery]) -> list[dict]:
        queries = [query for query, _ in budgeted]
        # The seconds left at each sending, a call sent again after a replica died included.
        answer = await self._call(
            "faq", lambda: self.faq.match_many.remote(queries, _seconds_left([d for _, d in budgeted]))
        )
        results = answer["results"]
        # An over-budget query has no matches to observe; its questions were sent all the same.
        self.metrics.observe_faq_group(
            queries, [[] if isinstance(r, WorkBudgetExceeded) else r for r in results], answer["model_version"]
        )
        return [{"results": result, "model_version": answer["model_version"]} for result in results]

    async def _ask_faq(self, query: FaqQuery) -> dict:
        """The answer to one request's questions, sent with the other requests waiting then, within the work budget
        (WorkBudgetExceeded past it)."""
        deadline = time.monotonic() + self.limits.work_budget
        large = self.large_request_chars is not None and sum(map(len, query[0])) > self.large_request_chars
        calls = self.large_faq_calls if large else self.faq_calls
        answer = await calls.submit((query, deadline), self.limits.upstream_timeout_s)
        if isinstance(answer["results"], WorkBudgetExceeded):
            raise answer["results"]
        return answer

    async def _call(
        self, model: str, make_call: Callable[[], DeploymentResponse], timeout_s: float | None = None
    ) -> Any:
        """Await a model call; re-send it when the replica died under it.

        Every model call is idempotent inference, so a request accepted here is not lost when a replica is
        killed or restarts: the call goes again, to a live replica, until the upstream timeout runs out, or
        until ``limits.max_replica_deaths_per_call`` replicas died under it (the request itself may kill them).
        """
        deadline = time.monotonic() + (timeout_s or self.limits.upstream_timeout_s)
        failed_replicas: set[str | int] = set()
        for attempt in itertools.count():
            response = make_call()
            try:
                answer = await asyncio.wait_for(response, max(0.0, deadline - time.monotonic()))
            except asyncio.CancelledError:
                response.cancel()  # the model's work stops too, outside a request's context (grouped FAQ calls)
                raise
            except TimeoutError:
                response.cancel()
                raise TimeoutError("the model did not answer within the upstream timeout") from None
            except BackPressureError as error:
                # The deployment's max_queued_requests is reached: say so at once rather than queue without bound.
                raise Overloaded(str(error), error.retry_after_s or 1.0) from None
            except RayTaskError as error:
                # The model layer's errors cross the handle wrapped with the replica's traceback: answer with the
                # bare error.
                if isinstance(error.cause, InvalidInput | ModelUnavailable):
                    raise error.cause from None
                raise
            except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as error:
                # A replica failed under the call (ActorDiedError, or ActorUnavailableError when the connection
                # broke before Ray knew it died), not merely none placed yet; counted once per replica.
                if isinstance(error, RayActorError):
                    self.metrics.replica_failures.inc(tags={"model": model})
                    failed_replicas.add(error.actor_id or attempt)
                    if len(failed_replicas) >= self.limits.max_replica_deaths_per_call:
                        raise ReplicaCrashed(model, len(failed_replicas)) from None
                backoff_s = min(RETRY_BACKOFF_S * 2**attempt, 1.0)
                if time.monotonic() + backoff_s >= deadline:
                    raise TimeoutError(f"no replica answered within the upstream timeout ({error})") from None
                logger.warning("model call failed (%s); sending it again in %.2f s", type(error).__name__, backoff_s)
                await asyncio.sleep(backoff_s)
            else:
                if isinstance(answer, Refused):  # bad input or no model, returned by the replica rather than raised
                    raise answer.error
                return answer

    async def _status(self, name: str) -> dict[str, Any]:
        try:
            return await self._call(name, self.models[name].status.remote, STATUS_TIMEOUT_S)
        except Exception as error:  # readiness must answer even when the deployment does not
            return {"ready": False, "model_version": None, "error": f"{name} deployment unreachable: {error!r}"}

    async def _statuses(self) -> dict[str, dict[str, Any]]:
        statuses = await asyncio.gather(*(self._status(name) for name in self.models))
        named = dict(zip(self.models, statuses, strict=True))
        self.metrics.observe_model_versions({name: status["model_version"] for name, status in named.items()})
        return named

    def _admission_group(self, path: str) -> tuple[str, int] | None:
        if path in self.auth.open_paths:
            return None
        if path.endswith("/images/classify"):
            return "image", self.limits.max_images_in_flight
        return "api", self.limits.max_in_flight

    def _caller_share(self, path: str) -> tuple[str, int] | None:
        group = self._admission_group(path)
        if group is None:
            return None
        name, limit = group
        return name, max(1, int(limit * self.limits.caller_share))

    def _body_bytes_budget(self, path: str) -> tuple[str, int] | None:
        if path.endswith("/images/classify"):
            return "image", self.limits.max_image_bytes_in_flight
        return None  # JSON bodies are small (limits.max_json_body_bytes) and counted by InFlightLimit

    def _body_limit(self, path: str) -> int:
        if path.endswith("/images/classify"):
            return self.limits.max_image_body_bytes
        return self.limits.max_json_body_bytes

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(
            title="serve-app: real-time scoring",
            summary="FAQ matching (scikit-learn) and image classification (ResNet-152) on Ray Serve",
            version=version("serve-app"),
            # A path with a trailing slash is not found: the redirect Starlette answers instead had no JSON body
            # and pointed at whatever Host the client sent, in http:// even behind TLS.
            redirect_slashes=False,
        )
        install_error_handlers(app)
        self._json_body_routes: set[tuple[str, str]] = set()  # (method, path), once the routes below are made
        # Innermost: only a body within its size limit, from an authenticated caller, takes a share of the budget.
        app.add_middleware(BodyBytesInFlight, budget_of=self._body_bytes_budget)
        app.add_middleware(
            BodyLimits,
            limit_for_path=self._body_limit,
            timeout_s=self.limits.body_timeout_s,
            max_json_structure=self.limits.max_json_structure,
            json_route=self._json_route,
        )
        # Run after authentication (middlewares run in reverse order of adding): they limit each caller.
        if self.limits.caller_share < 1.0:  # off by default: no layer at all then (limits are fixed per replica)
            app.add_middleware(CallerShare, share_of=self._caller_share)
        app.add_middleware(RateLimitMiddleware, settings=self.rate_limit)
        # No body is read for a caller without credentials.
        app.add_middleware(AuthMiddleware, authenticator=self.authenticator, settings=self.auth)
        # Added last, so it runs first: refusing an excess request costs nothing more than counting it.
        app.add_middleware(InFlightLimit, group_of=self._admission_group)
        # Every answer, refusals included, carries the client's own request id back.
        app.add_middleware(RequestIds)
        # Every answer is counted and timed, the other middlewares' refusals included.
        app.add_middleware(RequestMetrics, recorder=self.metrics)
        # Outermost: a request whose client has gone is cancelled whole, wherever Serve does not do it.
        app.add_middleware(CancelAbandoned)

        @app.api_route(DEMO_PATH, methods=["GET", "HEAD"], include_in_schema=False)
        async def demo_page() -> HTMLResponse:
            """A page to try both models in a browser; it holds no data and asks for a key when auth is on."""
            return HTMLResponse(DEMO_PAGE, headers=DEMO_PAGE_HEADERS)

        @app.post(
            "/faq/match",
            responses={200: {"model": MatchResponse | BatchMatchResponse}, **ERROR_RESPONSES},
        )
        async def match(request: MatchRequest, http_request: Request) -> JSONResponse:
            """Best-matching FAQ originals with calibrated probabilities; one question or a list of them."""
            single = request.question is not None
            questions = [request.question] if single else request.questions or []
            check_questions(questions, self.limits, "question" if single else None)
            _check_top_k(request.top_k, self.limits)
            answer = await self._ask_faq((questions, request.top_k))
            ranked = [([m["id"] for m in matches], [m["score"] for m in matches]) for matches in answer["results"]]
            self._collect_questions(http_request, questions, answer, ranked)
            if single:
                return JSONResponse({"matches": answer["results"][0], "model_version": answer["model_version"]})
            results = [{"matches": matches} for matches in answer["results"]]
            return JSONResponse({"results": results, "model_version": answer["model_version"]})

        @app.post("/score", responses=ERROR_RESPONSES)
        async def score(request: ScoreRequest, http_request: Request) -> list[list[int | str | float]]:
            """The reference service's API: ``[Id, AnswerId, probability]`` of every original, best first."""
            check_questions([request.input], self.limits, "input")
            answer = await self._ask_faq(([request.input], None))
            rows = answer["results"][0][:SCORE_ROWS_COLLECTED]
            ranked = [([row[0] for row in rows], [row[2] for row in rows])]
            self._collect_questions(http_request, [request.input], answer, ranked)
            return answer["results"][0]

        # HEAD too: a load balancer probing with HEAD saw a 405, a service down.
        @app.api_route(LIVENESS_PATH, methods=["GET", "HEAD"])
        async def healthz() -> dict[str, str]:
            """Liveness: the ingress answers."""
            return {"status": "ok"}

        @app.api_route(
            READINESS_PATH,
            methods=["GET", "HEAD"],
            response_model=ReadinessResponse | ProbeResponse,
            responses={503: {"model": ReadinessResponse | ProbeResponse}},
        )
        async def readyz(request: Request) -> JSONResponse:
            """Readiness: 200 when every model is loaded, else 503. Anyone gets ``{"status"}``; a caller with valid
            credentials (or anyone, with authentication off) also gets each model's state, and why one is missing."""
            models, age_s = await self.readiness.get()
            ready = all(status["ready"] for status in models.values())
            answer: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
            if not self.auth.enabled or isinstance(self.authenticator.caller(request.scope), Principal):
                answer |= {"ready": ready, "models": models, "checked_s_ago": round(age_s, 3)}
            return JSONResponse(answer, status_code=200 if ready else 503)

        @app.get("/version", response_model=VersionResponse)
        async def version_info() -> dict[str, Any]:
            """Versions of the app, Ray and each loaded model."""
            statuses = await self._statuses()
            return {
                "app_version": app.version,
                "ray_version": ray.__version__,
                "models": {name: status["model_version"] for name, status in statuses.items()},
            }

        @app.post(
            "/images/classify",
            responses={200: {"model": ClassifyResponse | list[ClassifyResponse]}, **ERROR_RESPONSES},
            openapi_extra={"requestBody": IMAGE_REQUEST_BODY},
        )
        async def classify(
            request: Request,
            top_k: int | None = Query(None, description=f"Classes per image (default {DEFAULT_TOP_K})."),
        ) -> JSONResponse:
            """ImageNet-1k top-k classes of one image or several (raw body, multipart or base64 JSON)."""
            del top_k  # declared for the OpenAPI document; read_image_request reads it from the query, strictly
            parsed = await read_image_request(request, self.limits)
            deadline = time.monotonic() + self.limits.work_budget
            caller = caller_key(request.scope)  # callers take turns at the replica (deployments.resnet.fair_queue)
            answer = await self._call(
                "images",
                lambda: self.images.classify.remote(parsed.images, parsed.top_k, _seconds_left([deadline])[0], caller),
            )
            if self.collector is not None:
                privacy = self.collection.privacy
                ranked = [([p["class_index"] for p in ps], [p["score"] for p in ps]) for ps in answer["results"]]
                inputs = lambda: [image_input(image, privacy) for image in parsed.images]  # noqa: E731
                self._collect(request, "images", answer, inputs, ranked)
            results = [{"predictions": p, "model_version": answer["model_version"]} for p in answer["results"]]
            return JSONResponse(results if parsed.several else results[0])

        @app.post(
            "/feedback",
            status_code=202,
            response_model=FeedbackResponse,
            responses={409: {"model": ErrorResponse}, **ERROR_RESPONSES},
        )
        async def feedback(feedback: FeedbackRequest, request: Request) -> dict[str, str]:
            """The right answer to an earlier request (by its X-Request-Id), or whether it helped: stored with the
            collected predictions (409 collection_disabled when model data collection is off)."""
            return {"request_id": feedback.request_id, "outcome": self._record_feedback(request, feedback)}

        # What BodyLimits refuses a non-JSON body on before reading it: the routes whose body is a JSON model.
        self._json_body_routes.update(
            (method, route.path)
            for route in app.routes
            if isinstance(route, APIRoute) and route.body_field is not None
            for method in route.methods
        )
        return app

    def _json_route(self, method: str, path: str) -> bool:
        return any(method == taken and path.endswith(route) for taken, route in self._json_body_routes)
