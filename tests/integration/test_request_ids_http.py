"""Over real HTTP through Serve's own proxy: request ids are the service's, errors repeat at most a short prefix of
what was sent, and /readyz tells strangers only whether the service is ready."""

import os
import re
import socket
import time
import uuid
from urllib.parse import urlparse

import pytest

from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV
from tests.images import variants
from tests.integration.conftest import API_KEYS
from tests.integration.test_logs import _session_logs

# Serve's proxy reads its middleware hook from the environment Ray starts in (docs/security.md "Request ids"):
# set here, at collection, before the session's Ray cluster starts (tests/integration/conftest.py), as
# `ray start` would have it.
os.environ.setdefault(PROXY_HOOK_ENV, PROXY_HOOK)

pytestmark = pytest.mark.integration

HUGE = "7" * 200_000  # an invalid value of 200 KB
UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")


def test_the_request_id_is_always_the_services_own(client):
    chosen = f"client-{uuid.uuid4().hex[:8]}"
    response = client.post("/faq/match", json={"question": "sort an array"}, headers={"X-Request-Id": chosen})
    assert response.status_code == 200
    ours = response.headers.get_list("x-request-id")
    assert len(ours) == 1 and ours[0] != chosen and UUID.match(ours[0]), ours
    assert response.headers.get_list("x-client-request-id") == [chosen]
    time.sleep(2)  # replicas flush their log files
    logs = _session_logs()
    assert ours[0] in logs  # the request is logged under our id ...
    assert f"client request id {chosen}" in logs  # ... with the client's beside it (a field in JSON logs)


@pytest.mark.parametrize("chosen", ["x" * 129, "caf\u00e9", "tab\there"], ids=["too-long", "not-ascii", "control"])
def test_invalid_client_request_ids_are_dropped(client, chosen):
    response = client.get("/version", headers={"X-Request-Id": chosen.encode("utf-8")})
    assert response.status_code == 200
    assert "x-client-request-id" not in response.headers
    assert UUID.match(response.headers["x-request-id"])


def test_a_refused_request_gets_our_id_too(serve_apps):
    with serve_apps.client(api_key=None) as anonymous:
        response = anonymous.post("/faq/match", json={"question": "x"}, headers={"X-Request-Id": "mine"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] != "mine" and response.headers["x-client-request-id"] == "mine"


def assert_not_echoed(response, value: str = HUGE) -> dict:
    assert 400 <= response.status_code < 500, response.text[:300]
    assert value[:65] not in response.text and len(response.content) < 4096
    return response.json()["error"]


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/faq/match", {"json": {"question": "sort", "top_k": HUGE}}),
        ("/faq/match", {"json": {"question": "sort", HUGE: 1}}),
        ("/score", {"json": {"input": "sort", HUGE: 1}}),
        ("/images/classify", {"json": {"images": [HUGE], "top_k": HUGE}}),
        ("/images/classify", {"files": {"image": ("a.png", variants()["png"], "image/png")}, "data": {"top_k": HUGE}}),
        ("/images/classify", {"content": HUGE.encode(), "headers": {"content-type": "image/png"}}),
        ("/faq/match", {"content": b'{"question": "' + HUGE.encode(), "headers": {"content-type": "application/json"}}),
    ],
    ids=["json-value", "json-key", "score-key", "images-json", "multipart-field", "raw-image-body", "raw-json-body"],
)
def test_a_200_kb_invalid_input_is_not_echoed(client, path, kwargs):
    error = assert_not_echoed(client.post(path, **kwargs))
    assert error["type"] in {"validation_error", "not_an_image", "invalid_json"}


def raw_post(base_url: str, target: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One request over a plain socket, for what HTTP client libraries refuse to send (a 200 KB URL)."""
    url = urlparse(base_url)
    head = f"POST {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    answer = b""
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        try:
            sock.sendall(head.encode() + body)
            while chunk := sock.recv(65_536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):  # refused while still sending: no echo either
            pass
    return answer


def test_a_200_kb_query_parameter_is_not_echoed(serve_apps):
    headers = {"Authorization": f"Bearer {API_KEYS[0]}", "Content-Type": "image/png"}
    # Refused by the HTTP server before the application (its limit on a request line) or by the application.
    answer = raw_post(serve_apps.base_url, f"/images/classify?top_k={HUGE}", variants()["png"], headers)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert HUGE[:65].encode() not in answer
    short = "8" * 2_000  # short enough to reach the application
    with serve_apps.client() as client:
        response = client.post(f"/images/classify?top_k={short}", content=variants()["png"], headers=headers)
    assert assert_not_echoed(response, short)["type"] == "validation_error"


def test_strangers_probing_readiness_learn_only_the_status(serve_apps, client):
    with serve_apps.client(api_key=None) as anonymous:
        answers = [anonymous.get("/readyz") for _ in range(30)]
    assert {(a.status_code, a.text) for a in answers} == {(200, '{"status":"ready"}')}
    detailed = client.get("/readyz").json()
    assert detailed["status"] == "ready" and detailed["models"]["faq"]["ready"] is True
    # The 30 probes were answered from the models' state, asked at most once a second.
    assert 0 <= detailed["checked_s_ago"] < 1.0 + 0.5
