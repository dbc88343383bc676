"""A tampered FAQ model set through ``user_config.model_uri`` is refused under load, with a clear error, while a
good model keeps answering every request.

``serve.run`` gives every deployment a new code version, so this update restarts the replicas: a new replica
loads its baseline (``faq_model_uri``, the last known-good model), then refuses the configured tampered one.
The in-place path (``serve deploy`` / RayService changing only user_config: a good model swapped in, a tampered
one refused, then a full redeploy, all under load) is tests/faults/test_redeploy.py.
"""

import asyncio
from collections import Counter

import pytest
from ray import serve

from benchmarks.redeploy import make_artifacts, version_of
from serve_app.app import build_graph
from serve_app.settings import FAQ_USER_CONFIG, AppArgs
from tests.integration.conftest import BROKEN_WEIGHTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP, PREFIX = "update", "/update"
QUESTION = {"question": "clone an object that has nested arrays", "top_k": 3}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, str]:
    return make_artifacts(tmp_path_factory.mktemp("faq-models"))


def deploy(model_uri: str | None, faq_model_uri: str | None = None) -> None:
    user_config = {**FAQ_USER_CONFIG.model_dump(), "model_uri": model_uri}
    args = AppArgs(faq_model_uri=faq_model_uri, images={"weights": BROKEN_WEIGHTS})
    serve.run(build_graph(args, {"FAQMatcher": {"user_config": user_config}}), name=APP, route_prefix=PREFIX)


async def update_under_load(serve_apps, model_uri: str, baseline: str | None) -> Counter:
    """Send FAQ questions from 4 clients while the running app is re-configured; count (status, version)."""
    seen: Counter = Counter()
    done = asyncio.Event()

    async def client_loop() -> None:
        async with serve_apps.async_client() as http:
            while not done.is_set():
                response = await http.post(f"{PREFIX}/faq/match", json=QUESTION)
                body = response.json() if response.headers.get("content-type") == "application/json" else {}
                seen[(response.status_code, body.get("model_version") or body.get("error") or response.text[:80])] += 1

    clients = [asyncio.create_task(client_loop()) for _ in range(4)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(deploy, model_uri, baseline)
    await asyncio.sleep(1.0)
    done.set()
    await asyncio.gather(*clients)
    return seen


@pytest.fixture(scope="module")
def update_app(serve_apps, artifacts):
    deploy(None, faq_model_uri=artifacts["v2"])  # the last known-good model is the baseline
    yield serve_apps
    serve.delete(APP)


def test_tampered_model_is_refused_and_a_good_one_keeps_serving(update_app, artifacts, client):
    v2 = version_of(artifacts["v2"])
    assert client.get(f"{PREFIX}/version").json()["models"]["faq"] == v2

    seen = asyncio.run(update_under_load(update_app, artifacts["tampered"], baseline=artifacts["v2"]))

    assert seen and set(seen) == {(200, v2)}, seen
    ready = client.get(f"{PREFIX}/readyz").json()["models"]["faq"]
    assert ready["ready"] and ready["model_version"] == v2
    assert "sha256 does not match" in ready["update_error"] and v2 in ready["update_error"]
