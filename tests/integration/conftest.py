"""One real Ray Serve instance per test session, on a free local port, always shut down.

Two applications run side by side: ``main`` (the default graph) and ``broken`` (an FAQ model URI that does
not exist), so tests see both the happy path and the narrow degradation of a model that cannot load.
"""

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import ray
from ray import serve

from serve_app.app import build_app
from serve_app.settings import AppArgs

BROKEN_MODEL_URI = "/nonexistent/faq-model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServeApps:
    base_url: str

    def client(self, prefix: str = "") -> httpx.Client:
        return httpx.Client(base_url=self.base_url + prefix, timeout=60)


@pytest.fixture(scope="session")
def serve_apps() -> Iterator[ServeApps]:
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(AppArgs()), name="main", route_prefix="/")
        serve.run(build_app(AppArgs(faq_model_uri=BROKEN_MODEL_URI)), name="broken", route_prefix="/broken")
        yield ServeApps(base_url=f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture()
def client(serve_apps: ServeApps) -> Iterator[httpx.Client]:
    with serve_apps.client() as http:
        yield http
