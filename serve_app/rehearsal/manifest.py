"""What the pods of a RayService would run, read from the manifest and the image's Dockerfile themselves.

Each pod of a Ray group (the head; each worker group's ``replicas``, at least one) becomes a ``PodSpec``: the
``ray start`` command KubeRay generates for it, the container's environment (Secret references resolved from a
given Secret, Ray's token as KubeRay adds it, the image's ``ENV`` underneath), its user, its writable volumes and
whether the root filesystem is read-only.
"""

import math
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

# KubeRay's defaults for every Ray container (ray-operator/controllers/ray/common/pod.go): the dashboard agent
# and metrics ports are fixed, and `--block` keeps the container's process in the foreground.
KUBERAY_START_PARAMS = {"block": None, "dashboard-agent-listen-port": "52365", "metrics-export-port": "8080"}
GCS_PORT = 6379
# With ``authOptions.mode: token`` KubeRay generates a Secret holding Ray's token under this key and gives it to
# every Ray container as RAY_AUTH_TOKEN, with RAY_AUTH_MODE=token (ray-operator/controllers/ray/common/pod.go).
# The rehearsal takes it from the Secret of this name in the secrets it is given.
RAY_TOKEN_SECRET = "kuberay-generated-ray-token"
RAY_TOKEN_KEY = "auth_token"
# With gcsFaultToleranceOptions KubeRay gives worker pods this long to reach a (remade) GCS, and the head's GCS a
# Redis key namespace: the RayCluster's UID unless externalStorageNamespace says otherwise (a fixed one here).
WORKER_GCS_RECONNECT_TIMEOUT_S = "600"
REHEARSAL_CLUSTER_UID = "serve-app-rehearsal"
# The Ray base image (rayproject/ray) runs as the user "ray", whose home is this.
IMAGE_HOME = "/home/ray"


class ManifestError(ValueError):
    """The manifest (or the Dockerfile) cannot produce a pod: what Kubernetes would refuse or never start."""


@dataclass(frozen=True)
class Volume:
    mount_path: str
    size_bytes: int | None  # emptyDir.sizeLimit; None: unbounded
    in_memory: bool
    # A secret volume: its files (name, content), shown read-only, as the kubelet mounts them; () for an emptyDir.
    files: tuple[tuple[str, str], ...] = ()


@dataclass
class PodSpec:
    group: str  # "head" or the worker group's name
    name: str  # the group's name, or with the pod's number when the group has several ("cpu-1")
    ray_start_params: dict[str, str | None]  # `ray start --KEY[=VALUE]`, without --head / --address
    env: dict[str, str]
    uid: int | None
    gid: int | None
    read_only_root: bool
    volumes: list[Volume]
    working_dir: str | None  # the container's workingDir, else the image's WORKDIR
    serve_endpoint: bool = True  # an endpoint of the Serve service once Ready (not the head when excluded)

    @property
    def is_head(self) -> bool:
        return self.group == "head"

    def ray_start_command(self, head_address: str) -> list[str]:
        command = ["ray", "start", "--head" if self.is_head else f"--address={head_address}:{GCS_PORT}"]
        for key, value in self.ray_start_params.items():
            command.append(f"--{key}" if value is None else f"--{key}={value}")
        return command


@dataclass
class ImageSpec:
    workdir: str
    user: str
    env: dict[str, str]


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("26Gi", "512Mi", "8G", "1024") in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]i?)?", str(quantity))
    if not match:
        raise ManifestError(f"not a memory quantity: {quantity!r}")
    number, unit = float(match.group(1)), match.group(2) or ""
    powers = "KMGTPE"
    base = 1024 if unit.endswith("i") else 1000
    return int(number * base ** (powers.index(unit[0]) + 1)) if unit else int(number)


def quantity_cpus(quantity: str) -> int:
    """KubeRay passes a CPU limit to `--num-cpus` rounded up to whole CPUs ("500m" -> 1)."""
    text = str(quantity)
    value = int(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return math.ceil(value)


def _start_params(group: dict[str, Any], container: dict[str, Any], is_head: bool, autoscaling: bool) -> dict:
    resources = container.get("resources", {})
    amounts = {**resources.get("requests", {}), **resources.get("limits", {})}
    params: dict[str, str | None] = dict(KUBERAY_START_PARAMS)
    if "cpu" in amounts:
        params["num-cpus"] = str(quantity_cpus(amounts["cpu"]))
    if "memory" in amounts:
        params["memory"] = str(quantity_bytes(amounts["memory"]))
    if "nvidia.com/gpu" in amounts:
        params["num-gpus"] = str(int(amounts["nvidia.com/gpu"]))
    if is_head and autoscaling:
        params["no-monitor"] = None  # the autoscaler runs in its own sidecar container
    for key, value in (group.get("rayStartParams") or {}).items():
        params[key] = None if value in ("", None) else str(value)
    return params


def _env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            raise ManifestError(f"env {item['name']}: only value and secretKeyRef are rehearsed")
        secret = secrets.get(ref["name"], {})
        if ref["key"] in secret:
            env[item["name"]] = secret[ref["key"]]
        elif not ref.get("optional", False):
            # The kubelet refuses to start such a container (CreateContainerConfigError).
            raise ManifestError(f"env {item['name']}: Secret {ref['name']!r} has no key {ref['key']!r}")
    return env


def _ray_auth_env(cluster: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """What KubeRay adds to every Ray container when the cluster asks for Ray's token authentication."""
    if (cluster.get("authOptions") or {}).get("mode") != "token":
        return {}
    token = secrets.get(RAY_TOKEN_SECRET, {}).get(RAY_TOKEN_KEY)
    if not token:
        raise ManifestError(f"authOptions.mode token: no {RAY_TOKEN_KEY!r} in Secret {RAY_TOKEN_SECRET!r}")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def _rayservice_env() -> dict[str, str]:
    """What KubeRay adds to every Ray container of a RayService's cluster (ray-operator/controllers/ray/common/
    pod.go): tighter GCS and Serve KV timeouts."""
    return {
        "RAY_timeout_ms_task_wait_for_death_info": "0",
        "RAY_gcs_server_request_timeout_seconds": "5",
        "RAY_SERVE_KV_TIMEOUT_S": "5",
    }


def _gcs_fault_tolerance(
    cluster: dict[str, Any], secrets: dict[str, dict[str, str]], is_head: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """(env, ray start params) KubeRay adds for ``gcsFaultToleranceOptions``: the head's GCS gets Redis's address,
    password and a storage namespace (the RayCluster's UID unless given); workers wait up to 600 s for a GCS."""
    options = cluster.get("gcsFaultToleranceOptions")
    if options is None:
        return {}, {}
    if not is_head:
        return {"RAY_gcs_rpc_server_reconnect_timeout_s": WORKER_GCS_RECONNECT_TIMEOUT_S}, {}
    container = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    own = {item["name"] for item in container.get("env", [])} & {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"}
    if own or "redis-password" in (cluster["headGroupSpec"].get("rayStartParams") or {}):
        # KubeRay's validation refuses the RayCluster: these come from gcsFaultToleranceOptions alone.
        raise ManifestError(f"gcsFaultToleranceOptions with the head's own {sorted(own) or 'redis-password'}")
    if "redisAddress" not in options:
        raise ManifestError("gcsFaultToleranceOptions: no redisAddress (only the Redis backend is rehearsed)")
    env = {
        "RAY_REDIS_ADDRESS": options["redisAddress"],
        "RAY_external_storage_namespace": options.get("externalStorageNamespace") or REHEARSAL_CLUSTER_UID,
    }
    password = options.get("redisPassword")
    if password is None:
        return env, {}
    if "value" in password:
        env["REDIS_PASSWORD"] = str(password["value"])
    else:
        env |= _env({"env": [{"name": "REDIS_PASSWORD", "valueFrom": password["valueFrom"]}]}, secrets)
    return env, {"redis-password": env["REDIS_PASSWORD"]}


def _same_directory(mount: dict[str, Any], mounts: list[dict[str, Any]]) -> bool:
    """A subPath mount that shows a directory already visible through another mount of its volume (the /tmp
    volume's ``ray`` at /tmp/ray): the same directory, which needs nothing more here."""
    return any(
        other["name"] == mount["name"]
        and "subPath" not in other
        and mount["mountPath"] == f"{other['mountPath'].rstrip('/')}/{mount['subPath']}"
        for other in mounts
    )


def _secret_files(name: str, volume: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[tuple[str, str], ...]:
    """The files of a secret volume: every key of the Secret, or those ``items`` lists, under their paths."""
    source = volume["secret"]
    secret = secrets.get(source["secretName"])
    optional = source.get("optional", False)
    if secret is None:
        if optional:
            return ()
        # The kubelet leaves such a pod in ContainerCreating (FailedMount) for good.
        raise ManifestError(f"volume {name!r}: no Secret {source['secretName']!r}")
    items = source.get("items") or [{"key": key, "path": key} for key in sorted(secret)]
    missing = [item["key"] for item in items if item["key"] not in secret]
    if missing and not optional:
        raise ManifestError(f"volume {name!r}: Secret {source['secretName']!r} has no key {missing[0]!r}")
    return tuple((item["path"], secret[item["key"]]) for item in items if item["key"] in secret)


def _volumes(pod: dict[str, Any], container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> list[Volume]:
    by_name = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = by_name.get(mount["name"])
        if volume is not None and "secret" in volume and "subPath" not in mount:
            files = _secret_files(mount["name"], volume, secrets)
            mounts.append(Volume(mount["mountPath"], None, True, files))
            continue
        if volume is None or "emptyDir" not in volume:
            raise ManifestError(f"volume {mount['name']!r}: only emptyDir and secret volumes are rehearsed")
        if "subPath" in mount:
            if _same_directory(mount, container["volumeMounts"]):
                continue
            raise ManifestError(f"volume {mount['name']!r}: a subPath is rehearsed only below the volume's mount")
        empty_dir = volume["emptyDir"] or {}
        size = empty_dir.get("sizeLimit")
        size_bytes = quantity_bytes(size) if size else None
        mounts.append(Volume(mount["mountPath"], size_bytes, empty_dir.get("medium") == "Memory"))
    return mounts


def _pod(group_name: str, group: dict, secrets: dict, cluster: dict[str, Any], auth_env: dict[str, str]) -> PodSpec:
    pod = group["template"]["spec"]
    container = pod["containers"][0]  # KubeRay runs Ray in the first container
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    is_head = group_name == "head"
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    ft_env, ft_params = _gcs_fault_tolerance(cluster, secrets, is_head)
    return PodSpec(
        group=group_name,
        name=group_name,
        ray_start_params=_start_params(group, container, is_head, autoscaling) | ft_params,
        env=_rayservice_env() | ft_env | auth_env | _env(container, secrets),
        uid=security.get("runAsUser"),
        gid=security.get("runAsGroup"),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        volumes=_volumes(pod, container, secrets),
        working_dir=container.get("workingDir"),
    )


def read_rayservice(path: Path, secrets: dict[str, dict[str, str]]) -> tuple[dict[str, Any], list[PodSpec]]:
    """The RayService's serveConfigV2 and its pods: the head first, then each worker group's."""
    manifest = yaml.safe_load(path.read_text())
    if manifest.get("kind") != "RayService":
        raise ManifestError(f"{path} is not a RayService")
    spec = manifest["spec"]
    cluster = spec["rayClusterConfig"]
    auth_env = _ray_auth_env(cluster, secrets)
    head = _pod("head", cluster["headGroupSpec"], secrets, cluster, auth_env)
    pods = [replace(head, serve_endpoint=not spec.get("excludeHeadPodFromServeSvc", False))]
    for group in cluster.get("workerGroupSpecs", []):
        pod = _pod(group["groupName"], group, secrets, cluster, auth_env)
        # The pods KubeRay starts (`replicas`), at least one: a group that starts at zero (the GPU group) is run
        # once all the same, so that every route can be called.
        count = max(1, int(group.get("replicas", 1)))
        pods += [pod] if count == 1 else [replace(pod, name=f"{pod.group}-{i}") for i in range(count)]
    return yaml.safe_load(spec["serveConfigV2"]), pods


def read_dockerfile(path: Path) -> ImageSpec:
    """The final stage's WORKDIR, USER and ENV (``ENV K=V [K=V ...]`` with line continuations)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    workdir, user, env = "/", "root", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            workdir, user, env = "/", "root", {}
        elif line.startswith("WORKDIR "):
            workdir = line.split(None, 1)[1]
        elif line.startswith("USER "):
            user = line.split(None, 1)[1]
        elif line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return ImageSpec(workdir=workdir, user=user, env=env)
