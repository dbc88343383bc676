"""The application as production runs it, in a process of its own: Ray's HAProxy in front of the ingress
replicas (with this project's admission limits), throughput-optimized Serve, and an API key required.

The ingress mode is fixed when Ray starts, from the environment, which is why the app needs its own process to
run as deployed; several can run side by side on one machine (serve_app.testing.ports).
"""

import io
import json
import secrets
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from serve_app.ray_env import QUIET_BACKGROUND, ray_process_env
from serve_app.testing.ports import free_port, private_fast_ingress_env
from serve_app.testing.process import Launch, running

# The one key every app started here accepts; send AUTH_HEADERS with each request (authentication stays on, as
# deployed). Made anew in each process that imports this module, so no test depends on a known secret.
API_KEY = "test-key-" + secrets.token_hex(16)
AUTH_HEADERS = {"Authorization": f"Bearer {API_KEY}"}
# A second caller (the key named "secondary"): what one caller does to another (fair turns, per-caller limits).
OTHER_API_KEY = "other-key-" + secrets.token_hex(16)
OTHER_AUTH_HEADERS = {"Authorization": f"Bearer {OTHER_API_KEY}"}

# What the pytest plugin's ``deployed`` app runs with: seeded random ResNet-152 weights (the same compute as the
# pretrained ones, which need a download) and a short body timeout, so that a test of a body that never finishes
# is quick (the default is 30 s).
BODY_TIMEOUT_S = 2.0
TEST_SETTINGS = {"SERVE_APP_IMAGES__WEIGHTS": "random:0", "SERVE_APP_LIMITS__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}


def fast_ingress_env() -> dict[str, str]:
    """Ray's settings for the deployed ingress mode, with files and ports of this server's own."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # As the image sets them: HAProxy with per-replica limits and JSON 503s (serve_app/bin/haproxy-with-limits),
        # and the project's hook in Serve's own proxy (HAProxy's backup server).
        **ray_process_env(fast_ingress=True),
        # Tests and benchmarks stop the app right after they are done with it; production keeps the 30 s drain.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        **private_fast_ingress_env(),  # several servers run side by side in a test session
    }


@dataclass(frozen=True)
class Post:
    path: str
    body: bytes
    content_type: str


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


# Started means both models answer through the whole path (HAProxy, ingress replica, model replica).
APP_PROBES = (
    Post("/faq/match", json.dumps({"question": "How do I loop over an array?"}).encode(), "application/json"),
    Post("/images/classify", _small_jpeg(), "image/jpeg"),
)


def app_launch(
    port: int,
    fast_ingress: bool = True,
    *,
    cpus: float = 2,
    deployments: Mapping[str, dict] | None = None,
    config: Path | None = None,
    dashboard_port: int = 8265,
) -> Launch:
    """The app on ``port`` (serve_app.testing.server), with ``cpus`` logical CPUs for Ray and Serve options by
    deployment name; or, with ``config``, deployed declaratively from that Serve config through the dashboard."""
    command = [sys.executable, "-m", "serve_app.testing.server", "--port", str(port), "--cpus", str(cpus)]
    command += ["--options", json.dumps(deployments or {})]
    if config:
        command += ["--config", str(config), "--dashboard-port", str(dashboard_port)]
    env = {"SERVE_APP_API_KEYS": f"{API_KEY},{OTHER_API_KEY}"}
    # Serve's background intervals as deployed in both modes (fast_ingress_env has them), so the two compare.
    env |= fast_ingress_env() if fast_ingress else QUIET_BACKGROUND
    return Launch(command, env)


@contextmanager
def deployed_app(settings: Mapping[str, str] | None = None, cpus: float = 4) -> Iterator[str]:
    """The app as deployed, with ``settings`` (``SERVE_APP_*`` variables, as the manifest sets them) on a free
    port; yields its base URL once both models answer, and stops it with every process it started."""
    launch = app_launch(port := free_port(), cpus=cpus).with_env(settings or {})
    with tempfile.TemporaryDirectory(prefix="serve-app-deployed-") as folder:
        log = Path(folder) / "server.log"
        with running("the deployed app", launch, port, APP_PROBES, log, AUTH_HEADERS) as url:
            yield url
