"""The per-request work budget on the model replicas, on the real models (the demo FAQ, seeded random ResNet-152
weights), called as Serve calls them: a request past its budget gets WorkBudgetExceeded and its remaining work is
not done; the requests grouped or batched with it are answered as usual."""

import asyncio
import math
import pickle
import random
import string
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from deployments.errors import ModelUnavailable, Refused, WorkBudgetExceeded
from deployments.faq.demo import demo_model
from deployments.faq.deployment import FAQMatcher
from deployments.faq.group_scoring import GroupScoring
from deployments.resnet.deployment import ImageClassifier
from serve_app.errors import status_of
from serve_app.settings import Limits
from tests.images import encode, sample_rgb
from tests.unit.test_ingress_app import MATCH, StandIn, build, concurrently

ORDINARY = "How do I remove a specific item from an array?"


def costly_question(seed: int, chars: int = 10_000) -> str:
    """Distinct random 5-letter words: the costliest text we know per character (~40 ms per 10,000 characters
    with a cold word cache: benchmarks/results/worst_inputs.md); the seed makes every word new."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(chars // 6))


@pytest.fixture(scope="module")
def model():
    model = demo_model().model  # shared by the session's tests: its word caches are left as they were found
    yield model
    model.cache_clear()
    for view in model.views:
        view.features.warm(view.known_words)


class Clock:
    """A clock the test moves: deadlines pass exactly between two chunks."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_chunks_take_each_querys_questions_in_turn_and_answer_as_one_product_does(model):
    queries = [([f"{ORDINARY} {i}" for i in range(5)], 3), (["How do I sort an array?"], None), ([ORDINARY], 1)]
    scoring = GroupScoring(model, queries, max_questions=2)
    chunks = 0
    while scoring.score_next_chunk():
        chunks += 1
    results = scoring.results()
    assert scoring.chunks == 4 and scoring.questions_scored == 7  # ceil(7 / 2)
    everything = model.probabilities([question for questions, _ in queries for question in questions])
    assert [[m["id"] for m in matches] for matches in results[0]] == [
        [m["id"] for m in model.match(row, 3)] for row in everything[:5]
    ]
    assert np.allclose([row[2] for row in results[1][0]], sorted(everything[5], reverse=True))
    assert [m["id"] for m in results[2][0]] == [m["id"] for m in model.match(everything[6], 1)]


def test_a_query_past_its_deadline_is_dropped_before_the_next_chunk_and_its_chunk_mates_are_answered(model):
    clock = Clock()
    costly = [f"{ORDINARY} variant {i}" for i in range(10)]
    queries = [(costly, 5), ([ORDINARY], 5), (["How do I sort an array?"] * 3, 5)]
    scoring = GroupScoring(model, queries, [0.5, None, 10.0], max_questions=4, clock=clock)
    assert scoring.score_next_chunk()  # in turn: costly 0, ordinary 0, third 0, costly 1
    clock.now += 1.0  # the costly query's deadline passes; the third's does not
    while scoring.score_next_chunk():
        pass
    results = scoring.results()
    assert isinstance(results[0], WorkBudgetExceeded)
    assert "after 2 of its 10 questions" in results[0].message and "0.5 s" in results[0].message
    assert [len(result) for result in results[1:]] == [1, 3]
    assert results[1][0][0]["score"] > 0
    # Its eight other questions were never scored: 4 in the first chunk, then the third query's last 2.
    assert scoring.questions_scored == 6 and scoring.chunks == 2
    assert scoring.over_budget == {0}


def test_a_query_that_finished_before_its_deadline_is_answered_though_the_deadline_passes_later(model):
    clock = Clock()
    scoring = GroupScoring(model, [([ORDINARY], 5), ([ORDINARY] * 4, 5)], [0.1, None], max_questions=2, clock=clock)
    scoring.score_next_chunk()  # both queries' first questions: the first query is complete
    clock.now += 1.0
    while scoring.score_next_chunk():
        pass
    assert not any(isinstance(result, WorkBudgetExceeded) for result in scoring.results())


def test_a_chunk_holds_at_most_max_chars_of_questions_but_always_one(model):
    queries = [(["a" * 300, "b" * 300, "c" * 700, "d" * 10], 1)]
    scoring = GroupScoring(model, queries, max_questions=10, max_chars=600)
    sizes = []
    more = True
    while more:
        before = scoring.questions_scored
        more = scoring.score_next_chunk()
        sizes.append(scoring.questions_scored - before)
    assert sizes == [2, 1, 1]  # 300 + 300; 700 alone, though over the bound; then 10


def test_a_query_sent_with_no_budget_left_costs_no_scoring(model):
    scoring = GroupScoring(model, [([ORDINARY] * 3, 5), (["How do I sort an array?"], 5)], [0.0, 5.0])
    while scoring.score_next_chunk():
        pass
    results = scoring.results()
    assert isinstance(results[0], WorkBudgetExceeded) and "after 0 of its 3" in results[0].message
    assert scoring.questions_scored == 1


def test_the_replica_stops_a_costly_query_at_its_budget_and_answers_the_rest_of_the_group(model):
    replica = FAQMatcher.func_or_class(None)
    costly = [costly_question(seed) for seed in range(64)]  # ~2.5 s of scoring alone on a quiet core
    queries = [(costly, 5), ([ORDINARY], 5), (["How do I sort an array?"], None)]
    budget_s = 0.3

    async def scenario() -> tuple[dict, float]:
        started = time.monotonic()
        answer = await replica.match_many(queries, [budget_s, budget_s, budget_s])
        return answer, time.monotonic() - started

    answer, took_s = asyncio.run(scenario())
    costly_result, ordinary, ranking = answer["results"]
    assert isinstance(costly_result, WorkBudgetExceeded), "the costly query was answered within its budget"
    assert ordinary[0][0]["score"] > 0 and len(ranking[0]) == len(model.originals)
    stats = replica.status()["batching"]
    assert stats["requests_over_budget"] == 1
    # Work stopped: at most two chunks (of two 10,000-character questions each) started after the deadline.
    assert stats["questions_scored"] < 32, stats
    assert took_s < budget_s + 2.0, took_s


def test_the_work_budget_is_at_most_the_upstream_timeout_and_defaults_to_it():
    assert Limits().work_budget == Limits().upstream_timeout_s
    assert Limits(work_budget_s=2).work_budget == 2
    with pytest.raises(ValidationError, match="must not exceed upstream_timeout_s"):
        Limits(upstream_timeout_s=5, work_budget_s=6)


def test_work_budget_exceeded_keeps_its_class_and_fields_through_pickling_and_answers_504():
    error = WorkBudgetExceeded("ran out").at("images.2")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is WorkBudgetExceeded
    assert (copy.kind, copy.message, copy.field) == ("work_budget_exceeded", "ran out", "images.2")
    assert status_of(copy) == 504


@pytest.fixture(scope="module")
def images_replica():
    return ImageClassifier.func_or_class({"weights": "random:0", "decode_threads": 2})


def test_an_image_request_with_no_budget_left_is_not_decoded(images_replica):
    jpeg = encode(sample_rgb(), "JPEG")
    before = dict(images_replica.batching)
    with pytest.raises(WorkBudgetExceeded) as raised:
        asyncio.run(images_replica.classify([jpeg, jpeg], 3, 0.0))
    assert raised.value.field == "images.0" and "decoding" in raised.value.message
    after = images_replica.batching
    assert after["images_over_budget"] - before["images_over_budget"] == 2
    assert after["forward_passes"] == before["forward_passes"]


def test_an_image_past_its_deadline_is_left_out_of_its_batch_and_its_batch_mate_is_classified(images_replica):
    # The batch function itself, with a batch as Serve forms it (serve.batch needs a running replica).
    forward = ImageClassifier.func_or_class._forward.__wrapped__
    tensors = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    now = time.monotonic()
    batch = [(tensors[0], now + 60), (tensors[1], now - 0.001), (tensors[2], math.inf)]
    before = dict(images_replica.batching)
    results = asyncio.run(forward(images_replica, batch))
    assert results[1] is None
    alone = images_replica.classifier.probabilities(tensors[[0, 2]])
    assert torch.allclose(torch.stack([results[0], results[2]]), alone, atol=1e-5)
    after = images_replica.batching
    assert after["forward_passes"] - before["forward_passes"] == 1
    assert after["images"] - before["images"] == 2 and after["largest_batch"] >= 2
    assert after["images_over_budget"] - before["images_over_budget"] == 1
    # A batch whose images all ran out costs no forward pass.
    assert asyncio.run(forward(images_replica, [(tensors[0], now - 1)])) == [None]
    assert images_replica.batching["forward_passes"] == after["forward_passes"]


def test_the_ingress_sends_the_seconds_left_and_answers_an_over_budget_query_504_and_its_group_mates_200(monkeypatch):
    # The FAQ deployment stood in for (tests/hostile/test_work_budget_http.py runs the real one): what the ingress
    # sends and how it answers each query of a grouped call.
    budgets_sent: list[float] = []

    def match_many(queries: list, budgets_s: list[float]) -> dict:
        budgets_sent.extend(budgets_s)
        results = [
            WorkBudgetExceeded("ran out") if questions == ["costly"] else [[MATCH] * top_k for _ in questions]
            for questions, top_k in queries
        ]
        return {"results": results, "model_version": "faq-v1"}

    app = build(monkeypatch, faq=StandIn(match_many=match_many), grouping={"max_in_flight": 1}, work_budget_s=2.0)
    requests = [("/faq/match", {"question": question, "top_k": 1}) for question in ("first", "costly", "mate")]
    first, costly, mate = concurrently(app, requests)
    assert first.status_code == 200 and mate.status_code == 200, (first.text, mate.text)
    assert mate.json()["matches"] == [MATCH]
    assert costly.status_code == 504
    assert costly.json()["error"] == {"type": "work_budget_exceeded", "message": "ran out", "details": []}
    assert len(budgets_sent) == 3 and all(0 < budget <= 2.0 for budget in budgets_sent), budgets_sent


def test_an_image_the_model_cannot_use_is_answered_refused_not_raised(images_replica):
    # Raised, Ray logs it at ERROR with its traceback in the replica: any client could fill the log with TIFFs.
    answer = asyncio.run(images_replica.classify([encode(sample_rgb(), "JPEG"), encode(sample_rgb(), "TIFF")], 3))
    assert isinstance(answer, Refused)
    assert (answer.error.kind, answer.error.field) == ("unsupported_image_format", "images.1")
    copy = pickle.loads(pickle.dumps(answer)).error  # crosses Ray's handle whole
    assert (copy.kind, copy.message, copy.field) == (answer.error.kind, answer.error.message, "images.1")


def test_without_a_model_both_replicas_answer_refused_not_raised(tmp_path):
    # Raised, Ray logs every request's ModelUnavailable at ERROR with its traceback, beside the one load error.
    faq = FAQMatcher.func_or_class(str(tmp_path / "missing"))
    images = ImageClassifier.func_or_class({"weights": str(tmp_path / "missing.pt")})
    faq_answer = asyncio.run(faq.match_many([(["sort an array"], 3)]))
    images_answer = asyncio.run(images.classify([encode(sample_rgb(), "JPEG")], 3))
    for answer, model in ((faq_answer, "faq"), (images_answer, "images")):
        assert isinstance(answer, Refused) and isinstance(answer.error, ModelUnavailable)
        assert answer.error.model == model and "missing" in answer.error.reason
        assert pickle.loads(pickle.dumps(answer)).error.reason == answer.error.reason  # crosses Ray's handle whole
