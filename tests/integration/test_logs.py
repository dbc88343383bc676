"""Logs never carry credentials or what users sent (questions, images); they do carry the request id."""

import time
from pathlib import Path

import pytest
import ray

from tests.integration.conftest import API_KEYS

pytestmark = pytest.mark.integration
MARKER = "zebracorn-7f3a"  # a word no log line would contain by chance


def _session_logs() -> str:
    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    return "\n".join(path.read_text(errors="replace") for path in logs.rglob("*") if path.is_file())


def test_credentials_and_inputs_stay_out_of_the_logs(serve_apps, client):
    answered = client.post(
        "/faq/match", json={"question": f"how do I sort a {MARKER} array"}, headers={"X-Request-Id": f"req-{MARKER}-id"}
    )
    assert answered.status_code == 200
    with serve_apps.client(api_key=f"wrong-{MARKER}") as stranger:
        assert stranger.post("/faq/match", json={"question": MARKER}).status_code == 401
    assert client.post("/faq/match", json={"question": MARKER * 5000}).status_code == 422  # over the limit
    time.sleep(2)  # replicas flush their log files
    logs = _session_logs()
    assert f"req-{MARKER}-id" in logs  # the request was logged, by its id ...
    assert f"sort a {MARKER}" not in logs and MARKER * 2 not in logs  # ... but not what it asked
    assert f"wrong-{MARKER}" not in logs
    for key in API_KEYS:
        assert key not in logs
