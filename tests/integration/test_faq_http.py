"""The FAQ routes over real HTTP against the real Serve application."""

import asyncio
import time

import pytest

from serve_app.settings import AppArgs

pytestmark = pytest.mark.integration

DEEP_COPY = "How do I make a deep copy of an object?"


def fresh_readiness(client) -> dict:
    """/readyz's details as of now: it answers from a state up to limits.readiness_cache_s old, so wait that out."""
    time.sleep(max(0.0, AppArgs().limits.readiness_cache_s - client.get("/readyz").json()["checked_s_ago"]) + 0.05)
    answer = client.get("/readyz").json()
    assert answer["checked_s_ago"] < 0.5, answer
    return answer


def test_probes_and_version(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"]["faq"]["model_version"] == "demo"
    # The replica runs with the shipped GIL switch interval (deployments.faq.gil), not Python's 5 ms.
    assert ready.json()["models"]["faq"]["gil_switch_interval_s"] == pytest.approx(0.0005)
    version = client.get("/version").json()
    assert version["models"] == {"faq": "demo", "images": "resnet152-random-seed0"}
    assert version["ray_version"].startswith("2.")


def test_openapi_documents_the_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/faq/match", "/score", "/healthz", "/readyz", "/version"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_match_one_question(client):
    response = client.post("/faq/match", json={"question": "clone an object that has nested arrays", "top_k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "demo"
    matches = body["matches"]
    assert len(matches) == 3
    assert matches[0]["question"] == DEEP_COPY
    assert {"id", "answer_id", "question", "score", "url", "answer"} <= set(matches[0])
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-9


def test_match_several_questions_keeps_order(client):
    questions = ["put text on the clipboard", "clone an object that has nested arrays", "random dice roll"]
    response = client.post("/faq/match", json={"questions": questions, "top_k": 1})
    assert response.status_code == 200
    tops = [result["matches"][0]["question"] for result in response.json()["results"]]
    assert tops == ["How do I copy text to the clipboard?", DEEP_COPY, "How do I generate a random integer in a range?"]


def test_default_top_k_is_five(client):
    assert len(client.post("/faq/match", json={"question": "sort by price"}).json()["matches"]) == 5


def test_score_answers_like_the_reference_service(client):
    response = client.post("/score", json={"input": "clone an object that has nested arrays"})
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 24 and all(len(row) == 3 for row in rows)
    assert rows[0][:2] == [1, 1]
    probabilities = [row[2] for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0)


BAD_REQUESTS = [
    (
        "invalid JSON",
        {"content": b'{"question": ', "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    (
        "wrong content type",
        {"content": b"question=x", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("JSON without a content type", {"content": b'{"question": "x"}'}, 415, "unsupported_media_type"),
    ("no body", {"headers": {"content-type": "application/json"}}, 422, "validation_error"),
    ("no body and no content type", {}, 422, "validation_error"),
    ("missing question", {"json": {"top_k": 3}}, 422, "validation_error"),
    ("both forms", {"json": {"question": "a", "questions": ["b"]}}, 422, "validation_error"),
    ("empty question", {"json": {"question": "   "}}, 422, "validation_error"),
    ("invisible question", {"json": {"question": "\u200b\u200b\ufeff\u202e\x00"}}, 422, "validation_error"),
    (
        "lone surrogate question",
        {"content": b'{"question": "\\udfff"}', "headers": {"content-type": "application/json"}},
        422,
        "validation_error",
    ),
    ("question not a string", {"json": {"question": 42}}, 422, "validation_error"),
    ("top_k not an integer", {"json": {"question": "a", "top_k": "many"}}, 422, "validation_error"),
    ("top_k a numeric string", {"json": {"question": "a", "top_k": "3"}}, 422, "validation_error"),
    ("top_k a boolean", {"json": {"question": "a", "top_k": True}}, 422, "validation_error"),
    ("top_k zero", {"json": {"question": "a", "top_k": 0}}, 422, "validation_error"),
    ("top_k too large", {"json": {"question": "a", "top_k": 51}}, 422, "validation_error"),
    ("question too long", {"json": {"question": "x" * 10_001}}, 422, "validation_error"),
    ("too many questions", {"json": {"questions": ["q"] * 65}}, 422, "validation_error"),
    ("empty question list", {"json": {"questions": []}}, 422, "validation_error"),
    ("one empty question in a list", {"json": {"questions": ["fine", ""]}}, 422, "validation_error"),
    ("unknown field", {"json": {"question": "a", "extra": 1}}, 422, "validation_error"),
    ("JSON array body", {"json": ["a"]}, 422, "validation_error"),
    ("body over the limit", {"json": {"question": "x" * (3 * 1024 * 1024)}}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("case", "request_kwargs", "status", "error_type"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_a_json_4xx(client, case, request_kwargs, status, error_type):
    response = client.post("/faq/match", **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]


def test_limit_names_itself(client):
    error = client.post("/faq/match", json={"question": "x" * 10_001}).json()["error"]
    assert "10000 characters" in error["message"] and error["details"][0]["field"] == "question"
    error = client.post("/faq/match", json={"questions": ["a", "b", ""]}).json()["error"]
    assert error["details"][0]["field"] == "questions.2"
    error = client.post("/faq/match", json={"questions": [" "]}).json()["error"]
    assert error["details"][0]["field"] == "questions.0"
    error = client.post("/score", json={"input": "x" * 10_001}).json()["error"]
    assert error["details"][0]["field"] == "input"


def test_streamed_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    response = client.post("/faq/match", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


def test_bad_score_request(client):
    response = client.post("/score", json={"inputs": "typo in field name"})
    assert response.status_code == 422
    assert "input" in response.json()["error"]["message"]


def test_unknown_route_and_method(client):
    assert client.get("/nope").json()["error"]["type"] == "not_found"
    assert client.get("/faq/match").status_code == 405


def test_still_serving_after_bad_input(client):
    for _, kwargs, _, _ in BAD_REQUESTS:
        client.post("/faq/match", **kwargs)
    assert client.post("/faq/match", json={"question": "sort by price"}).status_code == 200


def test_concurrent_requests_are_scored_in_batches(serve_apps, client):
    before = fresh_readiness(client)["models"]["faq"]["batching"]

    async def burst() -> list[int]:
        async with serve_apps.async_client() as http:
            requests = [http.post("/faq/match", json={"question": f"sort by field {i}"}) for i in range(48)]
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 48
    after = fresh_readiness(client)["models"]["faq"]["batching"]
    requests = after["requests"] - before["requests"]
    assert requests == 48
    assert after["batches"] - before["batches"] < requests
    assert after["largest_batch"] > 1


def test_a_model_that_cannot_load_degrades_narrowly(serve_apps, client):
    with serve_apps.client("/broken") as broken:
        ready = broken.get("/readyz")
        assert ready.status_code == 503
        faq = ready.json()["models"]["faq"]
        assert faq["ready"] is False and "/nonexistent/faq-model" in faq["error"]
        response = broken.post("/faq/match", json={"question": "sort by price"})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "model_unavailable"
        message = response.json()["error"]["message"]
        assert "metadata.json is missing" in message
        assert "Traceback" not in message and "File " not in message and "ray::" not in message
        assert response.headers["retry-after"]
        assert broken.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
