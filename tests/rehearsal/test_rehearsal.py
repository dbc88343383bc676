"""The deployment rehearsal, run for real: the shipped RayService passes it, and manifests with a runtime
defect put back fail it, each with the reason. Needs root (namespaces); skipped with the reason elsewhere."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve_app.kuberay import ROOT
from serve_app.rehearsal import pods

MANIFEST = ROOT / "kuberay" / "rayservice.yaml"
SERVE_APP = str(Path(sys.executable).with_name("serve-app"))

try:
    pods.preflight()
    # The RayService keeps its GCS's state in Redis (kuberay/redis.yaml): the rehearsal runs one.
    UNAVAILABLE = None if shutil.which("redis-server") else "needs redis-server (Debian: redis-server)"
except pods.PodsUnavailable as reason:
    UNAVAILABLE = str(reason)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"pods cannot be made here: {UNAVAILABLE}"),
]


# A remade pod whose `ray start` timed out on a busy GCS is started again, as the kubelet would
# (serve_app/rehearsal/kubelet.py): the run then takes longer than its usual ~9 minutes on 2 cores.
REHEARSAL_TIMEOUT_S = 1800


def rehearse(manifest: Path, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [SERVE_APP, "kuberay", "rehearse", "--manifest", str(manifest), *extra],
        capture_output=True,
        text=True,
        timeout=REHEARSAL_TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    print(result.stdout, result.stderr)
    return result.returncode, result.stdout


def broken(tmp_path: Path, change) -> Path:
    """kuberay/rayservice.yaml with one defect put back (anchors are expanded: each pod gets its own copy)."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    change(manifest["spec"]["rayClusterConfig"])
    path = tmp_path / "rayservice.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def without_env(name: str):
    """A defect: every Ray container loses the environment variable ``name``."""

    def change(cluster: dict) -> None:
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            container = group["template"]["spec"]["containers"][0]
            container["env"] = [e for e in container["env"] if e["name"] != name]

    return change


@pytest.mark.timeout(REHEARSAL_TIMEOUT_S + 60)
def test_the_shipped_rayservice_loses_no_request_to_a_cpu_node_head_or_redis_death_or_a_config_update():
    # A CPU node dies under load (one of the cpu group's two pods), with clients that never send a request
    # again: the other pod's ingress and FAQ replicas take over what the dead ones held, and the remade pod gets
    # an ingress replica back and becomes Ready. Then the head pod dies under load: with the GCS's state in Redis
    # the workers keep serving, and the remade head takes them over with the Serve controller's state. Then Redis
    # dies and comes back on its volume: the GCS exits, the head container is restarted and recovers. Then
    # serveConfigV2 changes in place under load (through the remade head's controller): every replica is
    # replaced, one at a time where max_replicas_per_node leaves no room, and no request fails.
    code, output = rehearse(
        MANIFEST,
        *("--kill-pod", "cpu", "--kill-pod", "head", "--kill-pod", "redis"),
        *("--client-retries", "0", "--update-under-load"),
    )
    assert code == 0 and "rehearsal passed" in output
    assert "ok   POST /images/classify with a key" in output and "scheduled -> serving" in output
    assert "ok   pod cpu-0 killed under load at 15 s" in output and "no request failed" in output
    assert "ok   the remade pod cpu-0 passes KubeRay's readiness probe after the load" in output
    assert "ok   pod head killed under load at 15 s" in output
    assert "ok   pod redis killed under load at 15 s" in output
    assert "ok   Redis answering again on its volume" in output
    assert "ok   the head container exited with its GCS and was restarted" in output
    assert "ok   the Serve application RUNNING again through the remade head, no replica started again" in output
    assert "ok   the pods that stayed passed KubeRay's readiness probe throughout" in output
    assert "ok   the remade pod head passes KubeRay's readiness probe after the load" in output
    assert (
        "ok   serveConfigV2 updated in place under load at 15 s (every replica replaced): no request failed" in output
    )
    assert "ok   every replica replaced and the application RUNNING" in output


def test_a_read_only_root_without_a_numba_cache_directory_is_caught(tmp_path: Path):
    code, output = rehearse(broken(tmp_path, without_env("NUMBA_CACHE_DIR")))
    assert code == 1 and "does not import" in output and "cannot cache function" in output


def test_a_missing_api_key_variable_is_caught(tmp_path: Path):
    code, output = rehearse(broken(tmp_path, without_env("SERVE_APP_API_KEYS_FILE")))
    # Auth stays on and fails closed: every call with the (now unknown) key is refused.
    assert code == 1 and "FAIL POST /faq/match with a key: 200 and 3 matches: 401" in output


def test_a_group_without_the_resources_a_deployment_needs_is_caught(tmp_path: Path):
    def gpu_group_without_gpus(cluster: dict) -> None:
        for group in cluster["workerGroupSpecs"]:
            resources = group["template"]["spec"]["containers"][0]["resources"]
            for amounts in resources.values():
                amounts.pop("nvidia.com/gpu", None)

    code, output = rehearse(broken(tmp_path, gpu_group_without_gpus), "--timeout-s", "240")
    assert code == 1 and "did not reach RUNNING" in output and "ImageClassifier" in output
