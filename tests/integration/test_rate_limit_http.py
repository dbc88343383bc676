"""Per-caller rate limiting through the real Serve application: each caller has its own bucket."""

import pytest
from ray import serve

from serve_app.app import build_app
from serve_app.settings import AppArgs
from tests.integration.conftest import API_KEYS, BROKEN_MODEL_URI, BROKEN_WEIGHTS

pytestmark = pytest.mark.integration

PREFIX = "/limited"
BURST = 3


@pytest.fixture(scope="module")
def limited(serve_apps):
    # Rate 0.01/s: a spent bucket stays spent for the whole test. Models that cannot load keep the app cheap;
    # the limit is checked before any model is called.
    args = AppArgs(
        faq_model_uri=BROKEN_MODEL_URI,
        images={"weights": BROKEN_WEIGHTS},
        rate_limit={"requests_per_s": 0.01, "burst": BURST},
    )
    serve.run(build_app(args), name="limited", route_prefix=PREFIX)
    yield serve_apps
    serve.delete("limited")


def test_a_caller_over_its_rate_gets_429_and_others_do_not(limited):
    with limited.client(PREFIX, api_key=API_KEYS[0]) as primary, limited.client(PREFIX, api_key=API_KEYS[1]) as other:
        statuses = [primary.get("/version").status_code for _ in range(BURST)]
        assert statuses == [200] * BURST
        refused = primary.get("/version")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert other.get("/version").status_code == 200  # the secondary key has a bucket of its own
        assert primary.get("/healthz").status_code == 200  # probes are never limited
