"""The app the tests and benchmarks start runs on a new local Ray of its own, even where the machine's Ray temp
folder names a cluster that is gone (serve_app/ray_env.py OWN_LOCAL_RAY).

A `ray start` killed before `ray stop` leaves its address in <ray temp>/ray_current_cluster; a CI run once failed
every Ray start after one ("When connecting to an existing cluster, num_cpus and num_gpus must not be provided").
"""

import tempfile
from pathlib import Path

import httpx
import pytest

from serve_app.testing import AUTH_HEADERS, app_launch, free_port
from serve_app.testing.deployed import APP_PROBES
from serve_app.testing.process import running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Image weights that cannot load: only the FAQ route is probed, and ResNet-152 would cost start-up CPU.
NO_IMAGE_MODEL = {"SERVE_APP_IMAGES__WEIGHTS": "/nonexistent/resnet152.pt"}


def test_the_app_starts_its_own_ray_beside_a_stale_cluster_address(tmp_path: Path) -> None:
    # RAY_TMPDIR moves Ray's temp folder (and so the address file Ray reads) away from the machine's own; short,
    # as Ray's socket paths live under it.
    with tempfile.TemporaryDirectory(prefix="rt-", ignore_cleanup_errors=True) as ray_tmpdir:
        ray_temp = Path(ray_tmpdir) / "ray"
        ray_temp.mkdir()
        (ray_temp / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # no Ray listens there
        launch = app_launch(port := free_port(), cpus=2).with_env(NO_IMAGE_MODEL | {"RAY_TMPDIR": ray_tmpdir})
        faq_probe = [probe for probe in APP_PROBES if probe.path == "/faq/match"]
        with running("the app beside a stale address", launch, port, faq_probe, tmp_path / "server.log", AUTH_HEADERS):
            answer = httpx.post(
                f"http://127.0.0.1:{port}/faq/match", json={"question": "How do I copy an array?"}, headers=AUTH_HEADERS
            )
            sessions = list(ray_temp.glob("session_2*"))
        assert answer.status_code == 200 and answer.json()["matches"]
        # Ray used that folder (so it read the stale file there) for the session it started itself.
        assert len(sessions) == 1
