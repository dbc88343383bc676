"""One real Ray Serve instance per test session, on a free local port, always shut down.

Four applications run side by side: ``main`` (the default graph, with seeded random ResNet weights since
none can be downloaded here), ``no-images`` (image weights that cannot load) and ``broken`` (neither model
loads), so tests see the happy path and the narrow degradation of each model that cannot load, and
``crashing`` (the ingress in front of a model stand-in whose replicas die on a marker question).
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from serve_app.app import bind_ingress, build_app
from serve_app.ingress import Ingress
from serve_app.ray_env import OWN_LOCAL_RAY
from serve_app.settings import AppArgs
from serve_app.testing import free_port
from tests.integration.crashing_model import CrashingFaq

BROKEN_MODEL_URI = "/nonexistent/faq-model"
BROKEN_WEIGHTS = "/nonexistent/resnet152.pt"
IMAGE_WEIGHTS = "random:0"
API_KEYS = ("integration-primary-key-0123456789", "integration-secondary-key-0123456789")
JWT_SECRET = "integration-signing-secret-0123456789abcdef"


# Upstream timeout well above three replica restarts on a busy box, so the death limit answers, not the timeout.
CRASHING_APP_ARGS = AppArgs(limits={"upstream_timeout_s": 90})


@dataclass(frozen=True)
class ServeApps:
    base_url: str
    deaths_dir: Path  # one file per replica of the ``crashing`` app that died (tests.integration.crashing_model)

    def client(self, prefix: str = "", api_key: str | None = API_KEYS[0], timeout_s: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base_url + prefix, timeout=timeout_s, headers=_bearer(api_key))

    def async_client(self, timeout_s: float = 60) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=_bearer(API_KEYS[0]))


def _bearer(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@pytest.fixture(scope="session")
def serve_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeApps]:
    port = free_port()
    deaths_dir = tmp_path_factory.mktemp("replica-deaths")
    # Replicas read their credentials from the environment, as from a Kubernetes Secret; they inherit it.
    saved_environ = dict(os.environ)
    os.environ["SERVE_APP_API_KEYS"] = ",".join(API_KEYS)
    os.environ["SERVE_APP_JWT_SECRET"] = JWT_SECRET
    # Logical CPUs: the replicas of the four apps here and of the test modules' own apps (rate limiting) must
    # fit, though most of them idle; a replica that does not fit waits forever and its serve.run never returns.
    ray.init(address=OWN_LOCAL_RAY, num_cpus=10, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = {
            "main": AppArgs(images={"weights": IMAGE_WEIGHTS}),
            "no-images": AppArgs(images={"weights": BROKEN_WEIGHTS}),
            "broken": AppArgs(faq_model_uri=BROKEN_MODEL_URI, images={"weights": BROKEN_WEIGHTS}),
        }
        for name, args in apps.items():
            serve.run(build_app(args), name=name, route_prefix="/" if name == "main" else f"/{name}")
        # The real ingress in front of a FAQ stand-in that crashes on a marker question (both model handles:
        # the image routes are not used there, and an image replica would only cost memory).
        crashing = CrashingFaq.bind(str(deaths_dir))
        crashing_app = bind_ingress(Ingress, CRASHING_APP_ARGS, crashing, crashing)
        serve.run(crashing_app, name="crashing", route_prefix="/crashing")
        yield ServeApps(base_url=f"http://127.0.0.1:{port}", deaths_dir=deaths_dir)
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_environ)


@pytest.fixture()
def client(serve_apps: ServeApps) -> Iterator[httpx.Client]:
    with serve_apps.client() as http:
        yield http
