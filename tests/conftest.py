"""Fixtures shared across test folders: the shared data, and the deployed configuration as a server.

``deployed``: the fast ingress (HAProxy + direct ingress, auth on) in a process of its own, as production
runs it, for hostile-input and overload tests: what reaches a cluster first is HAProxy and the ingress
replica's uvicorn. Started once per session, on first use.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.peers.isolation import free_port
from benchmarks.peers.servers import AUTH_HEADERS, PEERS, running
from benchmarks.workloads import SCENARIOS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAQ_DATA = SHARED / "data" / "stackoverflow-faq"
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


@pytest.fixture(scope="session")
def faq_data() -> Path:
    if not (FAQ_DATA / "orig-q.tsv").exists():
        pytest.skip(f"shared Stack Overflow data not found at {FAQ_DATA} (it sits beside the project root)")
    return FAQ_DATA
