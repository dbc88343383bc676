"""Model data collection without Ray: records and privacy modes, the rolling writer, the buffered collector, the
feedback outcome of a remembered prediction, and the ingress's routes with collection on and off."""

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from serve_app.collection import CollectionSettings, Collector, RecentPredictions, prediction_record
from serve_app.collection.recent import RecentPrediction, outcome_of
from serve_app.collection.records import image_format, image_input, text_input
from serve_app.collection.writer import RollingWriter
from serve_app.ingress import Ingress
from serve_app.report import build_report
from serve_app.schemas import FeedbackRequest
from tests.images import variants
from tests.unit.test_ingress_app import API_KEY, faq_stand_in, images_stand_in

QUESTION = "How do I reverse a list in place?"


def collected(destination: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(destination.rglob("*.jsonl")) for line in path.read_text().splitlines()]


def record(request_id: str, model_version: str = "v1") -> dict[str, Any]:
    return prediction_record(
        request_id=request_id,
        route="/faq/match",
        model="faq",
        model_version=model_version,
        caller="key:primary",
        latency_ms=1.5,
        status=200,
        inputs=[{}],
        outputs=[{"ids": [1, 2], "scores": [0.9, 0.1]}],
    )


def settings(tmp_path: Path, **overrides: Any) -> CollectionSettings:
    return CollectionSettings(enabled=True, destination=str(tmp_path / "collected"), **overrides)


# --- records -----------------------------------------------------------------------------------------------


def test_privacy_modes_of_a_question():
    assert text_input(QUESTION, "none") == {}
    assert text_input(QUESTION, "hashed") == {"sha256": hashlib.sha256(QUESTION.encode()).hexdigest()}
    assert text_input(QUESTION, "full") == {"text": QUESTION}


@pytest.mark.parametrize(
    ("variant", "name"), [("jpeg", "jpeg"), ("png", "png"), ("webp", "webp"), ("gif-animated", "gif"), ("bmp", "bmp")]
)
def test_privacy_modes_of_an_image(variant, name):
    data = variants()[variant]
    assert image_format(data) == name
    assert image_input(data, "none") == {"bytes": len(data), "format": name}
    assert image_input(data, "hashed")["sha256"] == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(image_input(data, "full")["base64"]) == data
    assert "base64" not in image_input(data, "hashed")


def test_collection_needs_a_destination_when_enabled():
    assert not CollectionSettings().enabled
    with pytest.raises(ValidationError, match="destination is required"):
        CollectionSettings(enabled=True)


# --- writer ------------------------------------------------------------------------------------------------


def test_files_are_partitioned_by_date_and_model_version(tmp_path):
    writer = RollingWriter(str(tmp_path), "replica/1", roll_bytes=1 << 20, roll_age_s=60)
    writer.write([record("a", "v1"), record("b", "v 2")])
    writer.close()
    date = record("x")["time"][:10]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert files == [
        f"date={date}/model_version=v1/replica_1-000000.jsonl",
        f"date={date}/model_version=v_2/replica_1-000001.jsonl",
    ]


def test_files_roll_by_size_and_by_age(tmp_path):
    writer = RollingWriter(str(tmp_path / "size"), "r", roll_bytes=1024, roll_age_s=3600)
    for index in range(20):
        writer.write([record(str(index))])
    writer.close()
    assert len(list((tmp_path / "size").rglob("*.jsonl"))) > 2
    assert [r["request_id"] for r in collected(tmp_path / "size")] == [str(i) for i in range(20)]

    writer = RollingWriter(str(tmp_path / "age"), "r", roll_bytes=1 << 20, roll_age_s=1e-9)
    writer.write([record("a")])
    writer.write([record("b")])
    writer.close()
    assert len(list((tmp_path / "age").rglob("*.jsonl"))) == 2


def test_fsspec_urls_are_destinations():
    writer = RollingWriter("memory://collection-test", "r", roll_bytes=1 << 20, roll_age_s=60)
    writer.write([record("a")])
    writer.close()
    paths = writer.fs.glob("/collection-test/**/*.jsonl")
    assert len(paths) == 1 and json.loads(writer.fs.cat(paths[0]))["request_id"] == "a"


# --- collector ---------------------------------------------------------------------------------------------


def test_records_are_written_in_order_with_sequence_numbers_and_flushed_on_close(tmp_path):
    outcomes: list[tuple[str, str, int]] = []

    async def go() -> None:
        collector = Collector(settings(tmp_path), "r1", lambda *outcome: outcomes.append(outcome))
        for index in range(50):
            assert collector.submit(record(str(index)))
            if index % 10 == 0:
                await asyncio.sleep(0)  # let the flusher run between submissions
        await collector.close()

    asyncio.run(go())
    records = collected(tmp_path / "collected")
    assert [r["seq"] for r in records] == list(range(50))
    assert [r["request_id"] for r in records] == [str(i) for i in range(50)]
    assert {r["replica"] for r in records} == {"r1"}
    assert sum(n for outcome, _, n in outcomes if outcome == "written") == 50


def test_a_full_buffer_drops_and_counts_never_waits(tmp_path):
    outcomes: list[tuple[str, str, int]] = []

    async def go() -> list[bool]:
        # An interval longer than the test: nothing is written until close.
        observe = lambda *outcome: outcomes.append(outcome)  # noqa: E731
        collector = Collector(settings(tmp_path, buffer_records=4, flush_interval_s=3600), "r", observe)
        accepted = [collector.submit(record(str(i))) for i in range(6)]
        await collector.close()
        assert not collector.submit(record("late"))
        return accepted

    accepted = asyncio.run(go())
    assert accepted == [True] * 4 + [False] * 2
    assert [r["seq"] for r in collected(tmp_path / "collected")] == [0, 1, 2, 3]  # 4 and 5: the gap of the drops
    assert sorted(outcomes) == [
        ("collected", "prediction", 6),
        ("dropped_buffer_full", "prediction", 2),
        ("written", "prediction", 4),
    ]


def test_sampling_records_about_the_share_asked_for(tmp_path):
    collector = Collector(settings(tmp_path, sample_rate=0.25), "r")
    share = sum(collector.sampled() for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    assert all(Collector(settings(tmp_path, sample_rate=1.0), "r").sampled() for _ in range(100))


def test_a_failing_destination_drops_and_counts(tmp_path):
    outcomes: list[tuple[str, str, int]] = []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    async def go() -> None:
        collector = Collector(
            CollectionSettings(enabled=True, destination=str(blocker)), "r", lambda *o: outcomes.append(o)
        )
        collector.submit(record("a"))
        await collector.close()

    asyncio.run(go())
    assert ("dropped_write_error", "prediction", 1) in outcomes


# --- feedback outcomes -------------------------------------------------------------------------------------


def test_feedback_outcomes_of_a_remembered_prediction():
    recent = RecentPredictions(capacity=2)
    recent.remember("a", RecentPrediction("faq", "v1", ((7, 8, 9, 10),)))
    assert outcome_of(recent.get("a"), 0, {"faq_id": 7}) == "top1"
    assert outcome_of(recent.get("a"), 0, {"faq_id": 9}) == "top3"
    assert outcome_of(recent.get("a"), 0, {"faq_id": 10}) == "miss"
    assert outcome_of(recent.get("a"), 1, {"faq_id": 7}) == "unknown"
    assert outcome_of(recent.get("a"), 0, {"helpful": False}) == "unhelpful"
    recent.remember("b", RecentPrediction("faq", "v1", ((1,),)))
    recent.remember("c", RecentPrediction("faq", "v1", ((1,),)))
    assert recent.get("a") is None and outcome_of(None, 0, {"faq_id": 7}) == "unknown"


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r", "faq_id": 1, "helpful": True},
        {"request_id": "r"},
        {"request_id": "", "faq_id": 1},
        {"request_id": "r", "faq_id": True},
        {"request_id": "r", "image_class": 1000},
        {"request_id": "r\n", "faq_id": 1},
        {"request_id": "r", "faq_id": 1, "extra": 1},
        {"request_id": "r", "faq_id": 10**4200},
        {"request_id": "r", "faq_id": -(2**63) - 1},
    ],
    ids=[
        "two-labels",
        "no-label",
        "empty-id",
        "bool-id",
        "class-range",
        "control-char",
        "extra",
        "huge-id",
        "below-int64",
    ],
)
def test_invalid_feedback_is_refused(body):
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate(body)


# --- the ingress's routes ----------------------------------------------------------------------------------


OTHER_KEY = "other-unit-test-key-0123456789abcdef"


def ingress_app(monkeypatch, collection: dict[str, Any], keys: str = API_KEY) -> tuple[Any, Any]:
    monkeypatch.setenv("SERVE_APP_API_KEYS", keys)
    monkeypatch.delenv("SERVE_APP_JWT_SECRET", raising=False)
    user_class = next(cls for cls in Ingress.func_or_class.__mro__[1:] if cls.__name__ == "Ingress")
    ingress = user_class.__new__(user_class)
    images = images_stand_in()
    images.classify.remote = _classify_remote
    user_class.__init__(ingress, faq_stand_in(), images, None, None, {"enabled": True}, None, collection)
    return ingress, ingress.__serve_build_asgi_app__()


def _classify_remote(images: list[bytes], top_k: int, budget_s: float, caller: str) -> asyncio.Future:
    async def answer() -> dict:
        prediction = {"label": "tench", "class_index": 0, "score": 0.8}
        return {"results": [[prediction] for _ in images], "model_version": "img-v1"}

    return asyncio.ensure_future(answer())


def exchange(ingress: Any, app: Any, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send the requests in order in one event loop, then shut the ingress down as Serve does (``__del__``)."""

    async def go() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            responses = []
            for method, path, kwargs in requests:
                responses.append(await client.request(method, path, **kwargs))
        await ingress.__del__()
        return responses

    return asyncio.run(go())


@pytest.mark.parametrize("privacy", ["none", "hashed", "full"])
def test_answered_requests_are_collected_as_the_privacy_mode_allows(monkeypatch, tmp_path, privacy):
    destination = tmp_path / "collected"
    ingress, app = ingress_app(monkeypatch, {"enabled": True, "destination": str(destination), "privacy": privacy})
    image = variants()["png"]
    responses = exchange(
        ingress,
        app,
        [
            ("POST", "/faq/match", {"json": {"question": QUESTION, "top_k": 2}}),
            ("POST", "/score", {"json": {"input": QUESTION}}),
            ("POST", "/images/classify", {"content": image, "headers": {"Content-Type": "image/png"}}),
            ("POST", "/faq/match", {"json": {"question": "", "top_k": 2}}),  # refused: not a model answer
        ],
    )
    assert [r.status_code for r in responses] == [200, 200, 200, 422]
    records = collected(destination)
    assert [(r["route"], r["model"], r["seq"]) for r in records] == [
        ("/faq/match", "faq", 0),
        ("/score", "faq", 1),
        ("/images/classify", "images", 2),
    ]
    faq, score, classified = records
    assert faq["outputs"] == [{"ids": [1, 1], "scores": [0.9, 0.9]}] and faq["model_version"] == "faq-v1"
    assert score["outputs"] == [{"ids": [1, 2], "scores": [0.9, 0.1]}]
    assert classified["outputs"] == [{"ids": [0], "scores": [0.8]}] and classified["model_version"] == "img-v1"
    assert faq["caller"] == "key:primary" and API_KEY not in json.dumps(records)
    assert faq["status"] == 200 and faq["latency_ms"] > 0
    text = json.dumps(records)
    assert (QUESTION in text) == (privacy == "full")
    assert classified["inputs"][0]["format"] == "png" and ("base64" in classified["inputs"][0]) == (privacy == "full")


def test_feedback_is_collected_and_counted_by_outcome(monkeypatch, tmp_path):
    destination = tmp_path / "collected"
    ingress, app = ingress_app(monkeypatch, {"enabled": True, "destination": str(destination)})
    exchange(ingress, app, [("POST", "/faq/match", {"json": {"question": QUESTION}})])
    request_id = collected(destination)[0]["request_id"]

    ingress, app = ingress_app(monkeypatch, {"enabled": True, "destination": str(destination)})
    ingress.recent.remember(request_id, RecentPrediction("faq", "faq-v1", ((1, 5, 6),), "key:primary"))
    responses = exchange(
        ingress,
        app,
        [
            ("POST", "/feedback", {"json": {"request_id": request_id, "faq_id": 5}}),
            ("POST", "/feedback", {"json": {"request_id": request_id, "image_class": 5}}),
            ("POST", "/feedback", {"json": {"request_id": "never-seen", "helpful": True}}),
            ("POST", "/feedback", {"json": {"request_id": request_id}}),
            # The request had one question: a second is a mistake to point out, not an unknown outcome.
            ("POST", "/feedback", {"json": {"request_id": request_id, "item": 1, "faq_id": 5}}),
        ],
    )
    assert [r.status_code for r in responses] == [202, 422, 202, 422, 422]
    assert responses[0].json() == {"request_id": request_id, "outcome": "top3"}
    assert responses[1].json()["error"]["details"][0]["field"] == "image_class"
    assert responses[2].json()["outcome"] == "helpful"
    assert responses[3].json()["error"]["type"] == "validation_error"
    assert responses[4].json()["error"]["details"][0]["field"] == "item"
    assert "had 1 item(s)" in responses[4].json()["error"]["message"]
    feedback = [r for r in collected(destination) if r["kind"] == "feedback"]
    assert [(f["request_id"], f.get("faq_id"), f.get("helpful")) for f in feedback] == [
        (request_id, 5, None),
        ("never-seen", None, True),
    ]
    assert feedback[0]["model_version"] == "faq-v1" and feedback[1]["model_version"] == "unknown"


def test_feedback_on_another_callers_answer_tells_nothing_and_is_not_counted(monkeypatch, tmp_path):
    # Any key holding a request id got where its label ranked in another caller's answer (top1 / miss: that
    # caller's answers, probed one by one) and relabelled it in the report.
    destination, keys = tmp_path / "collected", f"{API_KEY},{OTHER_KEY}"
    ingress, app = ingress_app(monkeypatch, {"enabled": True, "destination": str(destination)}, keys)
    exchange(ingress, app, [("POST", "/faq/match", {"json": {"question": QUESTION}})])
    asked = collected(destination)[0]
    request_id = asked["request_id"]

    ingress, app = ingress_app(monkeypatch, {"enabled": True, "destination": str(destination)}, keys)
    ingress.recent.remember(request_id, RecentPrediction("faq", "faq-v1", ((1, 5, 6),), asked["caller"]))
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    responses = exchange(
        ingress,
        app,
        [
            ("POST", "/feedback", {"json": {"request_id": request_id, "faq_id": 1}}),  # the caller answered
            ("POST", "/feedback", {"json": {"request_id": request_id, "faq_id": 1}, "headers": other}),
            # Not a 422 naming the model that answered: nothing about another caller's request.
            ("POST", "/feedback", {"json": {"request_id": request_id, "image_class": 5}, "headers": other}),
            # Later than the caller's own label: it would have replaced it.
            ("POST", "/feedback", {"json": {"request_id": request_id, "faq_id": 9}, "headers": other}),
            # Nor how many questions it had.
            ("POST", "/feedback", {"json": {"request_id": request_id, "item": 1, "faq_id": 9}, "headers": other}),
        ],
    )
    assert [(r.status_code, r.json()["outcome"]) for r in responses] == [(202, "top1")] + [(202, "unknown")] * 4
    # The second ingress's writer starts its files afresh: the prediction recorded before, and the feedback now.
    feedback = [r for r in collected(destination) if r["kind"] == "feedback"]
    report = build_report([asked, *feedback])
    assert report.foreign_feedback == 4
    stats = report.versions[("faq", "faq-v1")]
    assert (stats.labelled, sum(stats.top1)) == (1, 1)


def test_feedback_without_collection_is_409_and_nothing_is_written(monkeypatch, tmp_path):
    ingress, app = ingress_app(monkeypatch, {})
    (response,) = exchange(ingress, app, [("POST", "/feedback", {"json": {"request_id": "r", "faq_id": 1}})])
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "collection_disabled" and "collection.enabled" in error["message"]
    assert ingress.collector is None


def test_feedback_beyond_a_callers_rate_is_a_429_and_not_written(monkeypatch, tmp_path):
    # Every feedback is a record written, whatever its request id (one answered elsewhere, or made up).
    destination, keys = tmp_path / "collected", f"{API_KEY},{OTHER_KEY}"
    settings = {"enabled": True, "destination": str(destination), "feedback_per_s": 0.5, "feedback_burst": 3}
    ingress, app = ingress_app(monkeypatch, settings, keys)
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    sends = [("POST", "/feedback", {"json": {"request_id": f"made-up-{n}", "helpful": True}}) for n in range(5)]
    responses = exchange(ingress, app, [*sends, ("POST", "/feedback", {"json": sends[0][2]["json"], "headers": other})])
    assert [r.status_code for r in responses] == [202, 202, 202, 429, 429, 202]  # another caller has its own
    refused = responses[3]
    assert refused.json()["error"]["type"] == "rate_limited" and "collection.feedback_per_s" in refused.text
    assert refused.headers["retry-after"] == "2"  # a token every 2 s
    written = [r["request_id"] for r in collected(destination) if r["kind"] == "feedback"]
    assert sorted(written) == ["made-up-0", "made-up-0", "made-up-1", "made-up-2"]
