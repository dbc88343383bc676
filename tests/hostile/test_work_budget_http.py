"""A request whose scoring runs past the work budget is answered 504 work_budget_exceeded and its work stops on the
FAQ replica, while a request sent beside it is answered as usual, and the replica is free right after: the deployed
configuration (HAProxy, the fast ingress, the real FAQ replica) with a small budget, speaking HTTP."""

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from serve_app.testing import AUTH_HEADERS, app_launch, free_port
from serve_app.testing.deployed import APP_PROBES
from serve_app.testing.process import running
from tests.unit.test_work_budget import ORDINARY, costly_question

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUDGET_S = 0.5
COSTLY_QUESTIONS = 64  # limits.max_questions: ~2.5 s of scoring on a quiet core, five times the budget
# Image weights that cannot load: the image model is not what this is about, and ResNet-152 would cost a
# replica's start-up CPU (its route answers 503, which nothing here asks).
SETTINGS = {
    "SERVE_APP_LIMITS__WORK_BUDGET_S": str(BUDGET_S),
    "SERVE_APP_IMAGES__WEIGHTS": "/nonexistent/resnet152.pt",
}
# One FAQ replica, so that its status (through /readyz) counts all the work done.
ONE_FAQ_REPLICA = {"FAQMatcher": {"autoscaling_config": None, "num_replicas": 1}}


@pytest.fixture(scope="module")
def budgeted_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    launch = app_launch(port := free_port(), cpus=2, deployments=ONE_FAQ_REPLICA).with_env(SETTINGS)
    faq_probe = [probe for probe in APP_PROBES if probe.path == "/faq/match"]
    log = tmp_path_factory.mktemp("work-budget") / "server.log"
    with running("the app with a work budget", launch, port, faq_probe, log, AUTH_HEADERS) as url:
        yield url


async def faq_work(client: httpx.AsyncClient) -> dict[str, int]:
    """The FAQ replica's counters, fresh (/readyz answers from state at most limits.readiness_cache_s old)."""
    await asyncio.sleep(1.1)
    return (await client.get("/readyz")).json()["models"]["faq"]["batching"]


async def timed_post(client: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post("/faq/match", json=body)
    return response, time.monotonic() - started


def test_a_costly_request_over_its_budget_gets_504_and_stops_while_a_request_beside_it_gets_200(budgeted_app):
    costly = {"questions": [costly_question(seed) for seed in range(COSTLY_QUESTIONS)], "top_k": 1}

    async def scenario() -> tuple:
        async with httpx.AsyncClient(base_url=budgeted_app, headers=AUTH_HEADERS, timeout=60) as client:
            assert (await client.post("/faq/match", json={"question": ORDINARY})).status_code == 200
            before = await faq_work(client)
            costly_call = asyncio.ensure_future(timed_post(client, costly))
            await asyncio.sleep(0.2)  # the costly request is scoring now
            beside = await timed_post(client, {"question": ORDINARY})
            refused = await costly_call
            after_refusal = await timed_post(client, {"question": ORDINARY + " again"})
            return before, refused, beside, after_refusal, await faq_work(client)

    before, (refused, refused_s), (beside, beside_s), (after, after_s), work = asyncio.run(scenario())
    assert refused.status_code == 504, refused.text
    error = refused.json()["error"]
    assert error["type"] == "work_budget_exceeded", error
    scored = int(re.search(r"after (\d+) of its 64 questions", error["message"]).group(1))
    assert scored < COSTLY_QUESTIONS
    assert refused_s < BUDGET_S + 2.0, refused_s  # answered at its budget, not when its work would have ended
    assert beside.status_code == 200 and beside.json()["matches"], beside.text
    assert beside_s < BUDGET_S, beside_s
    assert after.status_code == 200 and after_s < BUDGET_S, after_s
    # The replica stopped: the rest of the costly questions were never scored.
    assert work["requests_over_budget"] - before["requests_over_budget"] == 1
    assert work["questions_scored"] - before["questions_scored"] == scored + 2, (before, work)
