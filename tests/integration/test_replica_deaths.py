"""A request whose model replicas die under it is sent again, but only until the configured number died.

The ``crashing`` app is the real ingress in front of a FAQ stand-in whose process exits on a marker question
(tests.integration.crashing_model): real replicas, really dying.
"""

from serve_app.settings import Limits
from tests.integration.conftest import CRASHING_APP_ARGS, ServeApps
from tests.integration.crashing_model import CRASH_MARKER


def test_a_request_that_kills_replicas_is_answered_500_after_the_configured_deaths(serve_apps: ServeApps):
    deaths = CRASHING_APP_ARGS.limits.max_replica_deaths_per_call
    assert deaths == Limits().max_replica_deaths_per_call  # the shipped default
    assert deaths > 1, "with 1 no call is ever sent again, and the re-sending would go untested"
    died_before = set(serve_apps.deaths_dir.iterdir())
    # Each death waits for Serve to start a new replica (~12 s on a busy 2-core box) before the next try.
    with serve_apps.client("/crashing", timeout_s=150) as http:
        response = http.post("/faq/match", json={"question": f"please {CRASH_MARKER} now"})
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert error["type"] == "replica_crashed"
        assert "max_replica_deaths_per_call" in error["message"]
        # Each death was a different replica process, and no more died than the limit allows.
        assert len(set(serve_apps.deaths_dir.iterdir()) - died_before) == deaths
        # Other requests are served by the replica Serve starts in place of the last one.
        assert http.post("/faq/match", json={"question": "How do I sort an array?"}).status_code == 200
        assert http.post("/score", json={"input": "How do I sort an array?"}).json() == []
