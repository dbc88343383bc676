"""The deployed configuration (fast ingress: HAProxy + direct ingress, auth on) in a process of its own, for
hostile-input tests: what reaches a production cluster first is HAProxy and the ingress replica's uvicorn."""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.peers.servers import AUTH_HEADERS, PEERS, running
from benchmarks.workloads import SCENARIOS
from tests.integration.conftest import free_port

BODY_TIMEOUT_S = 2.0  # short, so the slow-body test is quick; the default is 30 s


@pytest.fixture(scope="session")
def deployed() -> Iterator[str]:
    calls = SCENARIOS["mixed"].calls(PEERS["serve-fast"].paths)
    settings = {"SERVE_APP_IMAGES__WEIGHTS": "random:0", "SERVE_APP_LIMITS__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with tempfile.TemporaryDirectory() as folder:
        server = running(
            PEERS["serve-fast"],
            ("faq", "image"),
            [calls() for _ in range(3)],
            free_port(),
            Path(folder) / "log",
            {"cpus": 4},
            settings,
        )
        with server as url:
            yield url


@pytest.fixture(scope="session")
def auth_headers() -> dict[str, str]:
    return AUTH_HEADERS
