"""The ingress's FastAPI app without Ray: model deployments are stand-ins, requests go through its whole middleware
stack (request ids, admission, authentication, rate limits, body limits) and error handlers."""

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.errors import InputTooLarge, InvalidInput, ModelUnavailable, Refused
from serve_app.http import BodyLimits, ClientRequestIds, client_request_id
from serve_app.ingress import CachedState, Ingress
from serve_app.settings import Limits
from tests.asgi import http_scope
from tests.images import variants

API_KEY = "unit-test-key-0123456789abcdef"
HUGE = "9" * 200_000  # an invalid value of 200 KB
MAX_ECHO = 64
IMAGE_JSON = {"image": base64.b64encode(b"not decoded: refused before").decode()}


class StandIn:
    """A deployment handle whose methods answer at once from plain functions, counting the calls."""

    def __init__(self, delay_s: float = 0.01, **methods: Callable[..., Any]) -> None:
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}
        for name, method in methods.items():
            setattr(self, name, self._method(name, method))

    def _method(self, name: str, method: Callable[..., Any]) -> Any:
        stand_in = self

        class Method:
            @staticmethod
            def remote(*args: Any) -> asyncio.Future:
                stand_in.calls[name] = stand_in.calls.get(name, 0) + 1

                async def answer() -> Any:
                    await asyncio.sleep(stand_in.delay_s)
                    return method(*args)

                return asyncio.ensure_future(answer())

        return Method()


MATCH = {"id": 1, "answer_id": 10, "question": "How to sort?", "score": 0.9, "url": None, "answer": None}
RANKING = [[1, 10, 0.9], [2, 20, 0.1]]


def faq_answers(queries: list[tuple[list[str], int | None]], budgets_s: list[float | None]) -> dict:
    """As FAQMatcher.match_many: per query, per question, top_k matches, or the ranking rows for top_k None."""
    results = [[RANKING if top_k is None else [MATCH] * top_k for _ in questions] for questions, top_k in queries]
    return {"results": results, "model_version": "faq-v1"}


def faq_stand_in() -> StandIn:
    return StandIn(
        status=lambda: {"ready": True, "model_version": "faq-v1", "batching": {"requests": 1.0}},
        match_many=faq_answers,
    )


def images_stand_in(ready: bool = True) -> StandIn:
    return StandIn(
        status=lambda: {"ready": ready, "model_version": "img", "device": "cpu", "torch_threads": 2},
        classify=lambda images, k, budget_s, caller: {"results": [[] for _ in images], "model_version": "img"},
    )


def build(
    monkeypatch,
    faq=None,
    images=None,
    auth: bool = True,
    grouping: dict | None = None,
    api_keys: str = API_KEY,
    **limits: Any,
):
    """The ingress's ASGI app, with ClientRequestIds in front as Ray Serve runs it when its hook is set."""
    monkeypatch.setenv("SERVE_APP_API_KEYS", api_keys)
    monkeypatch.delenv("SERVE_APP_JWT_SECRET", raising=False)
    user_class = next(cls for cls in Ingress.func_or_class.__mro__[1:] if cls.__name__ == "Ingress")
    ingress = user_class.__new__(user_class)
    faq, images = faq or faq_stand_in(), images or images_stand_in()
    user_class.__init__(ingress, faq, images, limits, grouping, {"enabled": auth})
    return ClientRequestIds(ingress.__serve_build_asgi_app__())


def call(app, method: str, path: str, authorized: bool = True, **kwargs: Any) -> httpx.Response:
    """One request; ``headers`` a dict, or a list of (name, value) pairs to send a header more than once."""
    extra = kwargs.pop("headers", {})
    headers = [("Authorization", f"Bearer {API_KEY}")] if authorized else []
    headers += list(extra.items()) if isinstance(extra, dict) else list(extra)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


def assert_no_echo(response: httpx.Response, value: str = HUGE) -> dict:
    """The error names the problem but repeats at most MAX_ECHO characters of the value."""
    assert 400 <= response.status_code < 500, response.text
    assert value[: MAX_ECHO + 1] not in response.text
    assert len(response.content) < 4096
    return response.json()["error"]


# --- errors never echo more than a short prefix of any input ------------------------------------------------


def test_a_huge_invalid_multipart_top_k_is_not_echoed(monkeypatch):
    app = build(monkeypatch)
    files = {"image": ("a.png", variants()["png"], "image/png")}
    error = assert_no_echo(call(app, "POST", "/images/classify", files=files, data={"top_k": HUGE}))
    assert error["type"] == "validation_error" and error["details"][0]["field"] == "top_k"
    assert "'9999" in error["message"] and "(200000 characters)" in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/faq/match", {"question": "sort an array", "top_k": HUGE}),
        ("/faq/match", {"question": "sort an array", HUGE: 1}),
        ("/faq/match", {"questions": ["sort", HUGE], "top_k": [HUGE]}),
        ("/score", {"input": "sort", HUGE: HUGE}),
        ("/images/classify", {"image": base64.b64encode(variants()["png"]).decode(), "top_k": HUGE}),
        ("/images/classify", {"images": [HUGE], HUGE: 1}),
    ],
    ids=["faq-top_k", "faq-extra-key", "faq-nested", "score-extra-key", "images-top_k", "images-extra-key"],
)
def test_huge_invalid_json_fields_and_keys_are_not_echoed(monkeypatch, path, body):
    error = assert_no_echo(call(build(monkeypatch), "POST", path, json=body))
    assert error["type"] == "validation_error"
    assert all(len(detail["field"]) < 100 for detail in error["details"])


def asgi_call(app, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
    """Straight through ASGI, for what HTTP client libraries refuse to send (a 200 KB query string)."""
    scope = http_scope(method, path, [(b"authorization", f"Bearer {API_KEY}".encode()), *headers], query)
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    content = b"".join(message.get("body", b"") for message in sent[1:])
    return httpx.Response(sent[0]["status"], headers=sent[0]["headers"], content=content)


def test_a_huge_invalid_query_parameter_is_not_echoed(monkeypatch):
    app = build(monkeypatch)
    image = [(b"content-type", b"image/png")]
    response = asgi_call(app, "POST", "/images/classify", f"top_k={HUGE}".encode(), image, variants()["png"])
    error = assert_no_echo(response)
    assert error["type"] == "validation_error" and error["details"][0]["field"] == "query.top_k"


def test_huge_content_types_are_not_echoed(monkeypatch):
    app = build(monkeypatch)
    huge_type = "text/" + "x" * 200_000
    raw = call(app, "POST", "/images/classify", content=b"abc", headers={"content-type": huge_type})
    assert assert_no_echo(raw, huge_type)["type"] == "unsupported_media_type"
    faq = call(app, "POST", "/faq/match", content=b'{"question": "x"}', headers={"content-type": huge_type})
    assert assert_no_echo(faq, huge_type)["type"] == "unsupported_media_type"


def test_a_huge_raw_body_that_is_not_json_is_not_echoed(monkeypatch):
    app = build(monkeypatch)
    body = b'{"question": "' + HUGE.encode()  # unterminated
    error = assert_no_echo(call(app, "POST", "/faq/match", content=body, headers={"content-type": "application/json"}))
    assert error["type"] == "invalid_json"


def test_hundreds_of_thousands_of_wrong_items_get_a_short_answer(monkeypatch):
    app = build(monkeypatch)
    # Each wrong item was an error of pydantic's, made into a detail in Python on the event loop: one now.
    response = call(app, "POST", "/faq/match", json={"questions": [1] * 9_000})
    error = assert_no_echo(response)
    assert response.status_code == 422 and len(error["details"]) == 1
    assert "'questions' must hold strings: 9000 of its items do not (item 0: int)" in error["message"]
    # A few are each named, as before.
    response = call(app, "POST", "/faq/match", json={"questions": ["a", 1, "b", None]})
    fields = [detail["field"] for detail in response.json()["error"]["details"]]
    assert response.status_code == 422 and fields == ["questions.1", "questions.3"]
    # Over MAX_LIST_ITEMS (10,000) the list is refused before any item is looked at: one problem.
    response = call(app, "POST", "/faq/match", json={"questions": [1] * 50_000})
    error = assert_no_echo(response)
    assert response.status_code == 422 and len(error["details"]) == 1
    assert "at most 10000 items" in error["details"][0]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"question": [' + b"[]," * 650_000 + b"[]]}",  # 0.17 s of json.loads, on the event loop
        b'{"question": "x", "top_k": 5, ' + b'"k": 0, ' * 60_000 + b'"q": 0}',  # unknown keys, each a , and a :
        b'{"questions": [' + b"0," * 900_000 + b"0]}",
    ],
    ids=["empty-lists", "keys", "zeros"],
)
def test_json_denser_than_any_request_is_refused_before_it_is_parsed(monkeypatch, body):
    app = build(monkeypatch)
    response = call(app, "POST", "/faq/match", content=body, headers={"content-type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 413 and error["type"] == "payload_too_large", response.text[:300]
    assert "limits.max_json_structure" in error["message"]


def test_the_densest_real_request_is_not_refused_as_too_dense(monkeypatch):
    # 64 questions of 10,000 characters of code-heavy text: ~40,000 of the characters , : [ { in 640 KB.
    words = ["loop", "array,", "object:", "fn[0]", "{a}", "the", "how", "do", "I", "JavaScript", "value", "map"]
    text = " ".join(words[(i * 7) % len(words)] for i in range(2_000))[:10_000]
    body = json.dumps({"questions": [text] * 64}).encode()
    assert 30_000 < sum(body.count(char) for char in (b",", b":", b"[", b"{")) < Limits().max_json_structure
    app = build(monkeypatch)
    response = call(app, "POST", "/faq/match", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    dense = b'{"question": [' + b"[]," * 650_000 + b"[]]}"
    lifted = build(monkeypatch, max_json_structure=0)  # 0 lifts it: parsed, then refused as not a string
    response = call(lifted, "POST", "/faq/match", content=dense, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]


@pytest.mark.parametrize(("path", "known"), [("/faq/match", {"question": "x"}), ("/images/classify", {"image": "x"})])
def test_a_body_of_150_000_unknown_keys_is_one_problem(monkeypatch, path, known):
    # 242,000 in 1.9 MB: pydantic's error for each took ~1 s of the ingress's event loop to become a 422. (With the
    # JSON structure limit lifted: it refuses so many keys before parsing, test_json_denser_than_any_request...)
    app = build(monkeypatch, max_json_structure=0)
    keys = [f"k{index}" for index in range(150_000)]
    response = call(app, "POST", path, json=dict.fromkeys(keys, 0) | known)
    error = assert_no_echo(response)
    assert response.status_code == 422 and len(error["details"]) == 1
    assert "150000 unknown fields (the first 'k0')" in error["message"]
    few = call(app, "POST", path, json=dict.fromkeys(keys[:3], 0) | known)  # a few are each named, as before
    assert [detail["field"] for detail in few.json()["error"]["details"]] == keys[:3]


# --- request ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        (b"req-1234", "req-1234"),
        (b"  padded id  ", "padded id"),
        (b"x" * 128, "x" * 128),
        (b"x" * 129, None),
        (b"caf\xc3\xa9", None),  # not ASCII
        (b"line\nbreak", None),
        (b"tab\there", None),
        (b"", None),
        (None, None),
    ],
)
def test_only_short_printable_ascii_client_request_ids_are_recorded(sent, recorded):
    assert client_request_id(sent) == recorded


def test_the_request_id_is_never_the_clients(monkeypatch, caplog):
    app = build(monkeypatch)
    seen: list[dict[str, str]] = []

    async def recorder(scope, receive, send):  # what Ray Serve's own middleware would see behind the hook
        seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await app.app(scope, receive, send)

    front = ClientRequestIds(recorder)
    sent = {"X-Request-Id": "chosen-by-client", "X-Client-Request-Id": "forged"}
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        response = call(front, "POST", "/faq/match", json={"question": "sort"}, headers=sent)
    assert response.status_code == 200
    assert "x-request-id" not in seen[0]  # Serve makes up its own
    assert seen[0]["x-client-request-id"] == "chosen-by-client"  # the forged one is gone
    assert response.headers.get_list("x-client-request-id") == ["chosen-by-client"]
    assert "chosen-by-client" not in response.headers.get("x-request-id", "")
    assert [r.client_request_id for r in caplog.records if hasattr(r, "client_request_id")] == ["chosen-by-client"]


def test_invalid_client_request_ids_are_dropped(monkeypatch):
    app = build(monkeypatch)
    response = call(app, "POST", "/faq/match", json={"question": "sort"}, headers={"X-Request-Id": "x" * 200})
    assert response.status_code == 200 and "x-client-request-id" not in response.headers


def test_refusals_carry_the_client_request_id_back_too(monkeypatch):
    app = build(monkeypatch)
    response = call(app, "POST", "/faq/match", authorized=False, json={}, headers={"X-Request-Id": "abc"})
    assert response.status_code == 401 and response.headers["x-client-request-id"] == "abc"


def test_without_the_hook_in_front_the_ingress_warns_and_adds_nothing(monkeypatch, caplog):
    app = build(monkeypatch).app  # Serve's HTTP server without serve_app.http:proxy_middlewares
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        for _ in range(2):
            response = call(app, "POST", "/faq/match", json={"question": "sort"}, headers={"X-Request-Id": "abc"})
            assert response.status_code == 200 and "x-client-request-id" not in response.headers
    warnings = [r.getMessage() for r in caplog.records if "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" in r.getMessage()]
    assert len(warnings) == 1


# --- readiness ----------------------------------------------------------------------------------------------


def test_anonymous_probes_learn_only_the_status(monkeypatch):
    app = build(monkeypatch)
    anonymous = call(app, "GET", "/readyz", authorized=False)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
    wrong_key = call(app, "GET", "/readyz", authorized=False, headers={"Authorization": "Bearer nope"})
    assert wrong_key.status_code == 200 and wrong_key.json() == {"status": "ready"}
    detailed = call(app, "GET", "/readyz").json()
    assert detailed["status"] == "ready" and detailed["ready"] is True
    assert detailed["models"]["images"]["device"] == "cpu" and "checked_s_ago" in detailed


def test_not_ready_is_503_for_everyone_with_details_only_for_callers_with_credentials(monkeypatch):
    app = build(monkeypatch, images=images_stand_in(ready=False))
    anonymous = call(app, "GET", "/readyz", authorized=False)
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "not_ready"}
    detailed = call(app, "GET", "/readyz")
    assert detailed.status_code == 503 and detailed.json()["models"]["images"]["ready"] is False


def test_with_authentication_off_everyone_sees_the_details(monkeypatch):
    app = build(monkeypatch, auth=False)
    assert "models" in call(app, "GET", "/readyz", authorized=False).json()


def test_probes_share_one_refresh_of_the_models_state(monkeypatch):
    faq, images = faq_stand_in(), images_stand_in()
    app = build(monkeypatch, faq=faq, images=images, readiness_cache_s=60)

    async def many() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            responses = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            responses += [await client.get("/readyz") for _ in range(50)]
        return [response.status_code for response in responses]

    assert asyncio.run(many()) == [200] * 100
    assert faq.calls["status"] == 1 and images.calls["status"] == 1


def test_the_cached_state_is_asked_again_once_older_than_its_limit():
    asks = []

    async def fetch() -> int:
        asks.append(1)
        await asyncio.sleep(0.02)
        return len(asks)

    async def scenario() -> list[int]:
        cached = CachedState(fetch, max_age_s=0.1)
        first = await asyncio.gather(*(cached.get() for _ in range(10)))  # one ask for all ten
        again = await cached.get()  # fresh enough
        await asyncio.sleep(0.12)
        later = await asyncio.gather(*(cached.get() for _ in range(10)))  # one more
        return [value for value, _ in [*first, again, *later]]

    assert asyncio.run(scenario()) == [1] * 11 + [2] * 10
    assert len(asks) == 2


def test_a_caller_that_goes_away_does_not_cancel_the_shared_refresh():
    async def fetch() -> str:
        await asyncio.sleep(0.05)
        return "state"

    async def scenario() -> str:
        cached = CachedState(fetch, max_age_s=10)
        impatient = asyncio.ensure_future(cached.get())
        await asyncio.sleep(0.01)
        impatient.cancel()
        value, _ = await cached.get()
        return value

    assert asyncio.run(scenario()) == "state"


def test_unknown_routes_still_answer_json(monkeypatch):
    response = call(build(monkeypatch), "GET", "/nope/" + "x" * 5000)
    assert response.status_code == 404 and "x" * (MAX_ECHO + 1) not in response.text
    assert json.loads(response.text)["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("path", "field", "limit"), [("/faq/match", "question", 50), ("/images/classify", "image", 20)]
)
def test_a_huge_number_out_of_range_is_not_echoed(monkeypatch, path, field, limit):
    digits = "9" * 3_000  # parses as an int (4,300 digits at most), then is out of range
    body = f'{{"{field}": "AAAA", "top_k": {digits}}}'.encode()
    response = call(build(monkeypatch), "POST", path, content=body, headers={"content-type": "application/json"})
    error = assert_no_echo(response, digits)
    message = f"must be between 1 and {limit}, got a number of about 3000 digits"
    assert error["details"] == [{"field": "top_k", "message": message}]


# --- FAQ requests: one batching, every route ------------------------------------------------------------------


def concurrently(app, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))

    return asyncio.run(go())


def test_score_and_match_requests_leave_together_in_grouped_calls(monkeypatch):
    faq = faq_stand_in()
    app = build(monkeypatch, faq=faq, grouping={"max_in_flight": 1})
    requests = [("/score", {"input": f"sort {i}"}) for i in range(6)]
    requests += [("/faq/match", {"question": f"sort {i}", "top_k": 1}) for i in range(6)]
    responses = concurrently(app, requests)
    assert [r.status_code for r in responses] == [200] * 12
    assert all(r.json() == RANKING for r in responses[:6])
    assert all(r.json()["matches"][0]["id"] == 1 for r in responses[6:])
    assert faq.calls == {"match_many": 2}  # the first at once; the other eleven waited for it, together


def test_faq_requests_beyond_max_in_flight_are_refused_at_once_not_queued(monkeypatch):
    # The requests waiting for a grouped call count against limits.max_in_flight from their arrival.
    app = build(monkeypatch, grouping={"max_in_flight": 1}, max_in_flight=3)
    responses = concurrently(app, [("/faq/match", {"question": f"sort {i}"}) for i in range(5)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 503, 503]
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"]["type"] == "overloaded" and refused.headers["retry-after"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InputTooLarge("image_too_large", "9000x9000 pixels is over the limit"), 413),
        (InvalidInput("corrupt_image", "the image could not be decoded"), 422),
    ],
)
def test_a_models_invalid_input_answers_with_the_status_of_its_class(monkeypatch, error, status):
    def refuse(images: list[bytes], k: int, budget_s: float, caller: str) -> dict:
        raise error.at("images.0")

    app = build(monkeypatch, images=StandIn(classify=refuse))
    response = call(app, "POST", "/images/classify", content=variants()["png"], headers={"content-type": "image/png"})
    assert response.status_code == status
    body = response.json()["error"]
    assert body["type"] == error.kind and body["message"] == f"images.0: {error.message}"
    assert body["details"] == [{"field": "images.0", "message": error.message}]


def test_a_model_that_cannot_load_answers_503_with_retry_after(monkeypatch):
    def unavailable(queries: list, budgets_s: list) -> Refused:  # as FAQMatcher answers without a model
        return Refused(ModelUnavailable("faq", "metadata.json is missing"))

    app = build(monkeypatch, faq=StandIn(match_many=unavailable))
    response = call(app, "POST", "/score", json={"input": "sort"})
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert response.json()["error"] == {
        "type": "model_unavailable",
        "message": "faq: metadata.json is missing",
        "details": [],
    }


# --- bytes of image bodies in flight ------------------------------------------------------------------------


def post_images(app, bodies: list[Any]) -> list[httpx.Response]:
    """Image uploads sent at once; a body that is an async iterator goes chunked, without Content-Length."""

    async def go() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {API_KEY}", "content-type": "image/png"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            return await asyncio.gather(*(client.post("/images/classify", content=body) for body in bodies))

    return asyncio.run(go())


def test_image_bodies_beyond_the_bytes_in_flight_are_refused_at_once_and_the_budget_comes_back(monkeypatch):
    png = variants()["png"]
    budget = int(2.5 * len(png))  # two declared bodies fit, a third does not
    app = build(monkeypatch, max_image_body_bytes=len(png), max_image_bytes_in_flight=budget)
    statuses = sorted(r.status_code for r in post_images(app, [png] * 5))
    assert statuses == [200, 200, 503, 503, 503]
    refused = next(r for r in post_images(app, [png] * 3) if r.status_code == 503)
    assert refused.json()["error"]["type"] == "overloaded" and refused.headers["retry-after"]
    assert str(budget) in refused.json()["error"]["message"]
    for _ in range(3):  # every reservation, answered or refused, was given back
        assert [r.status_code for r in post_images(app, [png, png])] == [200, 200]


def test_a_chunked_image_body_is_counted_as_it_arrives(monkeypatch):
    png = variants()["png"]

    async def chunked():
        for start in range(0, len(png), 256):
            yield png[start : start + 256]

    app = build(monkeypatch, max_image_body_bytes=len(png), max_image_bytes_in_flight=int(1.5 * len(png)))
    held, chunked_response = post_images(app, [png, chunked()])
    assert held.status_code == 200
    assert chunked_response.status_code == 503 and chunked_response.json()["error"]["type"] == "overloaded"
    assert [r.status_code for r in post_images(app, [chunked()])] == [200]  # alone it fits


def test_the_bytes_in_flight_must_hold_one_body_within_its_limit():
    with pytest.raises(ValueError, match="max_image_bytes_in_flight"):
        Limits(max_image_body_bytes=4096, max_image_bytes_in_flight=2048)


# --- HTTP details a hostile client found (round 4) -----------------------------------------------------------


@pytest.mark.parametrize(
    "encodings", [["gzip", "identity"], ["identity", "gzip"], ["identity, br"], ["identity", "identity, deflate"]]
)
def test_a_coding_on_any_content_encoding_line_is_refused(monkeypatch, encodings):
    # `gzip` then `identity` on two lines was read as identity (the last line won) and the body served.
    app = build(monkeypatch)
    headers = [("Content-Type", "application/json")] + [("Content-Encoding", value) for value in encodings]
    response = call(app, "POST", "/faq/match", content=b'{"question": "sort"}', headers=headers)
    assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_content_encoding"


@pytest.mark.parametrize(
    ("path", "fields"),
    [("/faq/match", {"question": "sort"}), ("/score", {"input": "sort"}), ("/images/classify", IMAGE_JSON)],
)
def test_a_content_type_sent_twice_is_read_as_the_routes_read_it(monkeypatch, path, fields):
    # The body limits read the last of two Content-Types, the routes the first: a UTF-16 JSON body declared
    # `application/json` then `text/plain` got past the UTF-8 check and was answered.
    app = build(monkeypatch)
    body = json.dumps(fields).encode("utf-16")
    for types in (["application/json", "text/plain"], ["text/plain", "application/json"]):
        headers = [("Content-Type", value) for value in types]
        response = call(app, "POST", path, content=body, headers=headers)
        assert 400 <= response.status_code < 500, (types, response.text)
        assert response.json()["error"]["type"] in {"invalid_json", "unsupported_media_type"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP "])
def test_a_compressed_body_is_refused_415_whatever_the_route(monkeypatch, encoding):
    # Not decoded anywhere: a gzip JSON body got a 400 saying it was not UTF-8.
    app = build(monkeypatch)
    for path, kwargs in (("/faq/match", {"json": {"question": "sort"}}), ("/images/classify", {"content": b"x"})):
        response = call(app, "POST", path, headers={"Content-Encoding": encoding}, **kwargs)
        assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_content_encoding"
    identity = call(app, "POST", "/faq/match", json={"question": "sort"}, headers={"Content-Encoding": "identity"})
    assert identity.status_code == 200


def test_a_trailing_slash_is_not_found_rather_than_redirected_to_the_clients_host(monkeypatch):
    app = build(monkeypatch)
    response = call(app, "POST", "/faq/match/", json={"question": "sort"}, headers={"Host": "evil.example"})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
    assert "location" not in response.headers


def test_a_method_the_route_lacks_gets_405_naming_the_allowed_ones(monkeypatch):
    response = call(build(monkeypatch), "PUT", "/faq/match", json={"question": "sort"})
    assert response.status_code == 405 and response.json()["error"]["type"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head_without_a_credential(monkeypatch, path):
    # A load balancer probing with HEAD saw a 405: a service down.
    app = build(monkeypatch)
    head, get = call(app, "HEAD", path, authorized=False), call(app, "GET", path, authorized=False)
    assert head.status_code == get.status_code == 200 and head.content == b""


def test_the_ingress_names_the_caller_to_the_image_replica(monkeypatch):
    # The image replica's turns (deployments/resnet/fair_queue.py) are between callers: the credential's name.
    callers: list[str] = []

    def classify(images: list[bytes], k: int, budget_s: float, caller: str) -> dict:
        callers.append(caller)
        return {"results": [[] for _ in images], "model_version": "img"}

    app = build(monkeypatch, images=StandIn(classify=classify))
    response = call(app, "POST", "/images/classify", content=variants()["png"], headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert callers == ["api_key:key:primary"]


@pytest.mark.parametrize("share, first_callers_statuses", [(0.5, [200, 200, 429]), (1.0, [200, 200, 200])])
def test_one_caller_holds_at_most_its_share_of_the_image_places(monkeypatch, share, first_callers_statuses):
    other_key = "unit-test-other-key-0123456789abcdef"
    answers = lambda images, k, budget_s, caller: {"results": [[] for _ in images], "model_version": "img"}  # noqa: E731
    images = StandIn(delay_s=0.3, classify=answers)
    app = build(
        monkeypatch, images=images, api_keys=f"{API_KEY},{other_key}", max_images_in_flight=4, caller_share=share
    )
    png = variants()["png"]

    async def go(requests: list[str]) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/images/classify",
                        content=png,
                        headers={"Authorization": f"Bearer {key}", "content-type": "image/png"},
                    )
                    for key in requests
                )
            )

    responses = asyncio.run(go([API_KEY] * 3 + [other_key]))
    assert [r.status_code for r in responses[:3]] == first_callers_statuses
    assert responses[3].status_code == 200  # the other caller's place was kept
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        assert response.json()["error"]["type"] == "too_many_in_flight" and response.headers["retry-after"] == "1"
    # Places come back when answered: the first caller's share is free again.
    assert [r.status_code for r in asyncio.run(go([API_KEY] * 2))] == [200, 200]


# --- JSON bodies are UTF-8 (RFC 8259 8.1), as the errors say -------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/faq/match", {"question": "How do I sort an array?"}),
        ("/score", {"input": "How do I sort an array?"}),
        ("/images/classify", IMAGE_JSON),
    ],
)
def test_json_bodies_in_utf16_or_utf32_are_refused_as_not_utf8(monkeypatch, encoding, path, body):
    # Python's json.loads detects UTF-16/32 from the bytes, so FastAPI's parser took them while the error text for
    # an unparsable body says UTF-8: one API, one encoding.
    app = build(monkeypatch)
    response = call(
        app, "POST", path, content=json.dumps(body).encode(encoding), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_json" and "UTF-8" in error["message"]


def test_the_same_json_bodies_in_utf8_are_answered(monkeypatch):
    app = build(monkeypatch)
    for path, body in [("/faq/match", {"question": "How do I sort?"}), ("/score", {"input": "How?"})]:
        response = call(
            app, "POST", path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text


# --- multipart bodies cost linear time at C speed; the body timeout is the client's time ---------------------


def _multipart(data: bytes, boundary: bytes = b"XyZ") -> bytes:
    head = b'--%s\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    return head % boundary + data + b"\r\n--%s--\r\n" % boundary


def test_a_boundary_repeated_inside_a_part_is_refused_before_parsing(monkeypatch):
    # The parser met each "\r\n--XyZ" + "a" byte by byte in Python: 8 MB took 0.73 s against 5 ms for other bytes,
    # on the ingress's event loop (and the body timeout counted it as the client being slow: a 408).
    app = build(monkeypatch)
    body = _multipart((b"\r\n--XyZ" + b"a") * 1_000)
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    response = call(app, "POST", "/images/classify", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_multipart"
    assert "boundary occurs inside a part" in response.json()["error"]["message"]
    # The same bytes without the full delimiter, and an ordinary file, are parsed as ever.
    for data in ((b"\r\n--XyQ" + b"a") * 1_000, variants()["png"]):
        response = call(app, "POST", "/images/classify", content=_multipart(data), headers=headers)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("where", ["opening", "between parts"])
def test_a_boundary_padded_with_more_than_a_few_spaces_is_refused_before_parsing(monkeypatch, where):
    # RFC 2046's transport padding after a delimiter, walked byte by byte in Python: 19 MB of spaces took 5.5 s of
    # the ingress's event loop (0.49 s for other bytes), every other request on the replica waiting.
    app = build(monkeypatch)
    png = variants()["png"]
    part = b'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    top_k = b'Content-Disposition: form-data; name="top_k"\r\n\r\n3'

    def body(padding: bytes) -> bytes:
        first, second = (padding, b"") if where == "opening" else (b"", padding)
        return b"--XyZ" + first + b"\r\n" + part + png + b"\r\n--XyZ" + second + b"\r\n" + top_k + b"\r\n--XyZ--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    refused = call(app, "POST", "/images/classify", content=body(b" \t" * 40), headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_multipart"
    assert "spaces or tabs after a boundary" in refused.json()["error"]["message"]
    # A few are padding as RFC 2046 means it (python-multipart takes none after the opening boundary).
    padded = call(app, "POST", "/images/classify", content=body(b" " * 64), headers=headers)
    assert padded.status_code == (400 if where == "opening" else 200), padded.text


def test_as_many_file_parts_as_allowed_and_one_more_keep_their_answers(monkeypatch):
    app = build(monkeypatch)
    png = variants()["png"]
    for count, status in ((Limits().max_images, 200), (Limits().max_images + 1, 422)):
        files = [("image", (f"{index}.png", png, "image/png")) for index in range(count)]
        response = call(app, "POST", "/images/classify", files=files)
        assert response.status_code == status, response.text


def _read_through_body_limits(client_delay_s: float, app_work_s: float, timeout_s: float = 0.5) -> int:
    """Three body pieces through BodyLimits: the client sends each after ``client_delay_s``, the app works
    ``app_work_s`` after each read (a parser). The status answered; StarletteHTTPException's for a refusal."""
    pieces = [b"a" * 10, b"b" * 10, b"c" * 10]
    sent: list[dict] = []

    async def client_receive() -> dict:
        await asyncio.sleep(client_delay_s)
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            await asyncio.sleep(app_work_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict) -> None:
        sent.append(message)

    limits = BodyLimits(app, limit_for_path=lambda path: 1_000, timeout_s=timeout_s)
    scope = {"type": "http", "path": "/images/classify", "headers": [(b"content-type", b"image/png")]}
    try:
        asyncio.run(limits(scope, client_receive, send))
    except StarletteHTTPException as refused:
        return refused.status_code
    return sent[0]["status"]


def test_the_body_timeout_counts_the_clients_time_not_the_apps():
    # The app's own work between reads, 0.9 s in all, is not the client being slow (a 408 before).
    assert _read_through_body_limits(client_delay_s=0.0, app_work_s=0.3) == 200
    # A client taking 0.6 s in all to send is.
    assert _read_through_body_limits(client_delay_s=0.2, app_work_s=0.0) == 408


@pytest.mark.parametrize(
    ("fields", "files", "message"),
    [
        ({"top_k": ["3", "999"]}, [], "given 2 times"),  # took the last one, 999
        ({}, [("top_k", ("k.txt", b"3", "text/plain"))], "must be a text field"),  # was ignored
    ],
)
def test_a_multipart_top_k_is_one_text_field(monkeypatch, fields, files, message):
    app = build(monkeypatch)
    image = [("image", ("a.png", variants()["png"], "image/png"))]
    response = call(app, "POST", "/images/classify", data=fields, files=image + files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "top_k" and message in error["message"]


def test_the_demo_page_answers_head_as_get(monkeypatch):
    # HEAD / was a 405 while GET / was a 200 (RFC 9110: a server that answers GET should answer HEAD).
    app = build(monkeypatch)
    page = call(app, "GET", "/", authorized=False)
    head = call(app, "HEAD", "/", authorized=False)
    assert page.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-security-policy"] == page.headers["content-security-policy"]


@pytest.mark.parametrize("form", ["multipart", "json"])
def test_top_k_in_both_the_query_and_the_body_is_refused(monkeypatch, form):
    # ?top_k=2 with a body top_k of 3 answered with 3, silently.
    app = build(monkeypatch)
    png = variants()["png"]
    if form == "multipart":
        kwargs = {"files": [("image", ("a.png", png, "image/png"))], "data": {"top_k": "3"}}
    else:
        kwargs = {"json": {"image": base64.b64encode(png).decode(), "top_k": 3}}
    response = call(app, "POST", "/images/classify?top_k=2", **kwargs)
    assert response.status_code == 422, response.text
    assert "both the query and the body" in response.json()["error"]["message"]
    assert call(app, "POST", "/images/classify", **kwargs).status_code == 200


def _unread_body_answer(app, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, int]:
    """(status, JSON body, times the app asked for the body) of a POST whose body is never sent."""
    reads = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        await asyncio.sleep(3600)  # a client that waits for `100 Continue` before it sends its body
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = http_scope("POST", path, [(b"host", b"test"), (b"authorization", f"Bearer {API_KEY}".encode()), *headers])
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), reads


@pytest.mark.parametrize("path", ["/faq/match", "/score", "/feedback"])
@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"text/plain"), (b"content-length", b"1000")],
        [(b"content-length", b"1000")],  # no Content-Type: FastAPI would not parse it as JSON either
        [(b"content-type", b"application/x-www-form-urlencoded"), (b"transfer-encoding", b"chunked")],
    ],
)
def test_a_json_route_refuses_another_body_type_before_reading_the_body(monkeypatch, path, headers):
    # /faq/match read the whole body (granting `100 Continue` to a client that asked to hear first) and only then
    # answered that it was not JSON; /images/classify refused first.
    status, body, reads = _unread_body_answer(build(monkeypatch), path, headers)
    assert (status, body["error"]["type"], reads) == (415, "unsupported_media_type", 0)
    assert "application/json" in body["error"]["message"]


def test_a_json_body_and_other_routes_still_reach_their_reading(monkeypatch):
    app = build(monkeypatch)
    answered = call(app, "POST", "/faq/match", json={"question": "sort"})
    assert answered.status_code == 200
    # Not a JSON route: the image route reads what it is sent (its own checks say what is wrong with it).
    refused = call(app, "POST", "/images/classify", content=b"x", headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415
    # No body at all: the route's own validation answers, as before (a body is required, and not of that type).
    missing = call(app, "POST", "/faq/match", headers={"Content-Type": "text/plain"})
    assert missing.status_code == 415, missing.text
    bare = call(app, "POST", "/faq/match")
    assert bare.status_code == 422 and bare.json()["error"]["message"] == "request body is required"
