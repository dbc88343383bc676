"""The Kubernetes side as a hostile client (or a compromised pod) meets it: who holds which secret, who can reach
which port, what bounds each pod's disk and memory, how each container is confined. Offline, on the rendered
kuberay/rayservice.yaml, kuberay/networkpolicy.yaml and kuberay/ingress.yaml."""

import re
from dataclasses import dataclass, field

import pytest
import yaml

from serve_app.kuberay import RAYSERVICE, ROOT
from serve_app.rehearsal.manifest import quantity_bytes, quantity_cpus

KUBERAY = ROOT / "kuberay"
SETUP = (KUBERAY / "aks" / "setup.sh").read_text()
WORST_INPUTS = ROOT / "benchmarks" / "results" / "worst_inputs.md"
API_SECRET = "serve-app-api-keys"
MiB = 2**20
GiB = 2**30


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]


@pytest.fixture(scope="module")
def app() -> dict:
    manifest = yaml.safe_load(RAYSERVICE.read_text())
    (application,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    return application


def groups(cluster: dict) -> dict[str, dict]:
    return {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay runs Ray in the first container


def deployment(app: dict, name: str) -> dict:
    return next(d for d in app["deployments"] if d["name"] == name)


def ray_cpus(group: dict) -> int:
    """The CPUs Ray advertises for the group: rayStartParams num-cpus, else the container's CPU limit."""
    if "num-cpus" in (group.get("rayStartParams") or {}):
        return int(group["rayStartParams"]["num-cpus"])
    return quantity_cpus(ray_container(group)["resources"]["limits"]["cpu"])


# --- secrets ---------------------------------------------------------------------------------------------------


def secret_names(container: dict, volumes: list[dict] | None = None) -> set[str]:
    """Every Secret a container can read: env references, envFrom, and mounted secret volumes."""
    names = {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
    names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    mounted = {m["name"] for m in container.get("volumeMounts", [])}
    return names | {v["secret"]["secretName"] for v in volumes or [] if "secret" in v and v["name"] in mounted}


def test_the_api_credentials_reach_only_the_group_that_runs_ingress_replicas(cluster, app):
    ingress_cpus = deployment(app, "Ingress")["ray_actor_options"]["num_cpus"]
    can_run_ingress = {name for name, group in groups(cluster).items() if ray_cpus(group) >= ingress_cpus}
    assert can_run_ingress == {"cpu"}
    for name, group in groups(cluster).items():
        volumes = group["template"]["spec"].get("volumes", [])
        holds = {API_SECRET in secret_names(c, volumes) for c in group["template"]["spec"]["containers"]}
        assert holds == {name in can_run_ingress}, name
        unread = [
            v
            for v in volumes
            if "secret" in v
            and not any(
                v["name"] in {m["name"] for m in c.get("volumeMounts", [])}
                for c in group["template"]["spec"]["containers"]
            )
        ]
        assert not unread, f"{name}: a Secret volume no process here reads"


def test_the_api_credentials_are_files_not_environment_variables(cluster):
    # A variable is copied into every process of the pod (raylet, GCS, every Ray worker) and shown by
    # /proc/<pid>/environ; the mounted files are read by the ingress replicas alone.
    cpu = groups(cluster)["cpu"]["template"]["spec"]
    container = cpu["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "SERVE_APP_API_KEYS" not in env and "SERVE_APP_JWT_SECRET" not in env
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-credentials"]
    assert mount["readOnly"] is True
    assert env["SERVE_APP_API_KEYS_FILE"]["value"] == mount["mountPath"] + "/api-keys"
    assert env["SERVE_APP_JWT_SECRET_FILE"]["value"] == mount["mountPath"] + "/jwt-secret"
    assert not secret_names(cluster["autoscalerOptions"])


def test_only_the_autoscaler_holds_a_kubernetes_api_token(cluster):
    for name, group in groups(cluster).items():
        spec = group["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        token_volumes = {
            v["name"]
            for v in spec.get("volumes", [])
            if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
        }
        for container in spec["containers"]:
            assert not {m["name"] for m in container.get("volumeMounts", [])} & token_volumes, name
        if name == "head":  # the autoscaler sidecar scales the worker groups through the API
            mounted = {m["name"]: m for m in cluster["autoscalerOptions"]["volumeMounts"]}
            (token,) = token_volumes
            assert mounted[token]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
            assert mounted[token]["readOnly"] is True
        else:
            assert not token_volumes, name


def test_rays_own_apis_want_rays_token(cluster):
    """Token authentication: the dashboard, its job API, the GCS and the Ray client refuse calls without it."""
    assert cluster["authOptions"]["mode"] == "token"
    assert "enableK8sTokenAuth" not in cluster["authOptions"]  # unsupported for a RayService (KubeRay 1.7)


# --- network -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str
    labels: dict = field(default_factory=dict, hash=False)


RAY_POD = Peer("a Ray pod", "default", {"app.kubernetes.io/part-of": "serve-app"})
OPERATOR = Peer("the KubeRay operator", "kuberay", {"app.kubernetes.io/name": "kuberay-operator"})
OTHER_IN_KUBERAY = Peer("another pod in the operator's namespace", "kuberay", {"app": "webhook"})
CONTROLLER = Peer(
    "the ingress controller",
    "ingress-nginx",
    {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
)
ADMISSION_JOB = Peer(
    "ingress-nginx's admission job",
    "ingress-nginx",
    {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "admission-webhook"},
)
ANY_POD = Peer("any other pod", "default", {"app": "notebook"})
PEERS = [RAY_POD, OPERATOR, OTHER_IN_KUBERAY, CONTROLLER, ADMISSION_JOB, ANY_POD]


def _matches(selector: dict | None, labels: dict) -> bool:
    assert not (selector or {}).get("matchExpressions"), "only matchLabels is evaluated here"
    return all(labels.get(key) == value for key, value in (selector or {}).get("matchLabels", {}).items())


def _peer_matches(rule_peer: dict, peer: Peer, policy_namespace: str) -> bool:
    assert "ipBlock" not in rule_peer, "an ipBlock admits addresses outside the cluster's pods"
    if "namespaceSelector" in rule_peer:
        namespace_ok = _matches(rule_peer["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace})
    else:
        namespace_ok = peer.namespace == policy_namespace  # a podSelector alone means the policy's namespace
    return namespace_ok and _matches(rule_peer.get("podSelector"), peer.labels)


def admitted(policy: dict, peer: Peer, port: int, namespace: str = "default") -> bool:
    """NetworkPolicy semantics for ingress to the selected pods: any rule whose peers and ports both match."""
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        port_ok = ports is None or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
        peers = rule.get("from")
        peer_ok = peers is None or any(_peer_matches(p, peer, namespace) for p in peers)
        if port_ok and peer_ok:
            return True
    return False


@pytest.fixture(scope="module")
def policy() -> dict:
    return yaml.safe_load((KUBERAY / "networkpolicy.yaml").read_text())


@pytest.mark.parametrize(
    ("port", "who"),
    [
        (8265, {RAY_POD, OPERATOR}),  # dashboard + job API: the operator deploys serveConfigV2 through it
        (52365, {RAY_POD}),  # dashboard agent: probed from inside the pod only
        (6379, {RAY_POD}),  # GCS
        (10001, {RAY_POD}),  # Ray client: runs code
        (8000, {RAY_POD, CONTROLLER}),  # Serve HTTP: the clients, through the ingress controller
    ],
)
def test_each_port_admits_only_whom_it_serves(policy, port, who):
    assert {peer for peer in PEERS if admitted(policy, peer, port)} == who


def test_the_policy_evaluation_can_fail(policy):
    opened = yaml.safe_load(yaml.safe_dump(policy))
    opened["spec"]["ingress"].append({"from": [{"namespaceSelector": {}}], "ports": [{"port": 8265}]})
    assert admitted(opened, ANY_POD, 8265) and not admitted(policy, ANY_POD, 8265)


def test_the_policy_names_where_setup_sh_installs_the_operator_and_the_controller(policy):
    operator = re.search(r"helm upgrade --install (\S+) kuberay/(\S+) .*\n\s*--namespace (\S+)", SETUP)
    controller = re.search(r"helm upgrade --install (\S+) ingress-nginx/(\S+) .*\n\s*--namespace (\S+)", SETUP)
    # The charts label their pods app.kubernetes.io/name: <chart name> (no nameOverride in setup.sh).
    assert "nameOverride" not in SETUP
    assert OPERATOR.namespace == operator.group(3) and OPERATOR.labels["app.kubernetes.io/name"] == operator.group(2)
    assert CONTROLLER.namespace == controller.group(3)
    assert CONTROLLER.labels["app.kubernetes.io/name"] == controller.group(2)
    assert admitted(policy, OPERATOR, 8265) and admitted(policy, CONTROLLER, 8000)


def test_the_dashboard_is_exposed_by_no_service_or_ingress(cluster):
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)
    backends = [
        path["backend"]["service"]
        for document in yaml.safe_load_all((KUBERAY / "ingress.yaml").read_text())
        for rule in document["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": "serve-app-serve-svc", "port": {"number": 8000}}]
    ray_pod_labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    for path in KUBERAY.rglob("*.yaml"):
        documents = [d or {} for d in yaml.safe_load_all(path.read_text())]
        kinds = {d.get("kind") for d in documents}
        assert not kinds & {"Route", "HTTPRoute", "Gateway"}, f"{path}: exposes something"
        for service in (d for d in documents if d.get("kind") == "Service"):
            # A Service of the cluster's own (kuberay/redis.yaml's), never one in front of a Ray pod.
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{path}: exposes something"
            selector = service["spec"]["selector"]
            assert not selector.items() & ray_pod_labels.items(), f"{path}: selects Ray pods"
            assert not any(key.startswith("ray.io/") for key in selector), f"{path}: selects Ray pods"


# --- disk and memory ---------------------------------------------------------------------------------------------


def volumes_kuberay_adds(cluster: dict, name: str, group: dict) -> list[str]:
    """The emptyDirs KubeRay 1.7 adds to a pod (ray-operator/controllers/ray/common/pod.go, BuildPod), none of
    them with a size limit on disk: /tmp/ray in the head's Ray and autoscaler containers when autoscaling is on,
    /dev/shm in the Ray container unless plasma-directory is set. Each is skipped when the container already
    mounts something at exactly that path."""
    added = []
    containers = [("ray", ray_container(group))]
    if name == "head" and cluster.get("enableInTreeAutoscaling"):
        containers.append(("autoscaler", {"volumeMounts": cluster["autoscalerOptions"].get("volumeMounts", [])}))
    for label, container in containers:
        paths = {m["mountPath"] for m in container.get("volumeMounts", [])}
        wanted = ["/tmp/ray"] if name == "head" and cluster.get("enableInTreeAutoscaling") else []
        if label == "ray" and "plasma-directory" not in (group.get("rayStartParams") or {}):
            wanted.append("/dev/shm")
        added += [f"{label}:{path}" for path in wanted if path not in paths]
    return added


def test_every_emptydir_is_sized_including_those_kuberay_would_add(cluster):
    for name, group in groups(cluster).items():
        assert volumes_kuberay_adds(cluster, name, group) == [], name
        spec = group["template"]["spec"]
        for volume in spec["volumes"]:
            if "emptyDir" in volume:
                assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) > 0, f"{name}: {volume['name']}"
        mounts = ray_container(group)["volumeMounts"] + (
            cluster["autoscalerOptions"]["volumeMounts"] * (name == "head")
        )
        for mount in mounts:  # /tmp/ray is a subPath of the sized /tmp volume, not a volume of its own
            if mount["mountPath"] == "/tmp/ray":
                assert mount["name"] == "tmp" and mount["subPath"] == "ray"


def sizes(group: dict) -> tuple[int, int, int]:
    """(object store, /dev/shm size limit, memory limit) of a group, in bytes."""
    spec = group["template"]["spec"]
    container = ray_container(group)
    (shm_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (shm,) = [v for v in spec["volumes"] if v["name"] == shm_mount["name"]]
    assert shm["emptyDir"]["medium"] == "Memory"
    store = int(group["rayStartParams"]["object-store-memory"])
    return (
        store,
        quantity_bytes(shm["emptyDir"]["sizeLimit"]),
        quantity_bytes(container["resources"]["limits"]["memory"]),
    )


def test_each_object_store_is_set_and_fits_its_shm_and_the_memory_limit(cluster):
    """Left to Ray, the GPU pod's object store (30% of 180 GiB, capped at 10 GB) outgrew its 8 GiB /dev/shm and Ray
    put it on disk in /tmp; the tmpfs pages of /dev/shm count against the container's memory limit."""
    for name, group in groups(cluster).items():
        store, shm, memory = sizes(group)
        assert store + 512 * MiB <= shm, f"{name}: Ray wants /dev/shm at least as large as the object store"
        assert shm <= memory // 2, f"{name}: the object store would leave too little of the memory limit"


def worst_single_image_peak_bytes() -> int:
    """The largest peak RSS growth of decoding one image within the limits (benchmarks/results/worst_inputs.md)."""
    rows = re.findall(r"^\| ([^|]+) \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", WORST_INPUTS.read_text(), re.M)
    assert len(rows) >= 10, "the images table of worst_inputs.md changed shape"
    return int(max(float(mib) for _, mib in rows) * MiB)


# Ray's processes, the replicas' imported libraries, the model and CUDA's host memory. Measured idle in the
# rehearsal (private memory of all of a pod's processes): head 1.9 GiB, CPU pod with 2 ingress and 2 FAQ replicas
# 0.9 GiB, GPU pod with its replica on the CPU 1.1 GiB; CUDA's host memory comes on top on a GPU. Not measured under
# load, hence an allowance several times those.
RUNTIME_ALLOWANCE = 8 * GiB


def test_the_gpu_pods_memory_limit_covers_the_measured_worst_with_room(cluster, app):
    gpu = next(g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in ray_container(g)["resources"]["limits"])
    store, _, memory = sizes(gpu)
    classifier = deployment(app, "ImageClassifier")
    body = app["args"]["limits"]["max_image_body_bytes"]
    decode = app["args"]["images"]["decode_threads"] * worst_single_image_peak_bytes()  # one pool per replica
    bodies = classifier["max_ongoing_requests"] * body  # held in the replica's heap while it works on them
    assert bodies <= store, "a full replica's request bodies would spill out of the object store"
    assert memory >= 1.25 * (store + decode + bodies + RUNTIME_ALLOWANCE)


def test_the_cpu_pods_memory_limit_covers_its_faq_replicas_with_room(cluster, app):
    cpu = groups(cluster)["cpu"]
    store, _, memory = sizes(cpu)
    faq = deployment(app, "FAQMatcher")
    replicas = ray_cpus(cpu) // faq["ray_actor_options"]["num_cpus"]
    worst_call = 7.9 * MiB  # 64 worst questions, peak allocations (worst_inputs.md, "Reading")
    assert memory >= 1.25 * (store + replicas * faq["max_ongoing_requests"] * worst_call + RUNTIME_ALLOWANCE)


# What an ingress replica keeps per byte of image body it admitted, for the whole model call: the body, and at
# worst (base64 JSON) the parsed text and the decoded bytes (serve_app.image_input).
BODY_COPIES = 3


def test_the_cpu_pods_memory_limit_covers_two_ingress_replicas_full_of_image_bodies(cluster, app):
    """Counting image requests is not enough (512 in flight x 20 MiB = 10 GiB a replica on the GPU cluster): the
    bytes of bodies an ingress replica holds are bounded (serve_app.admission.BodyBytesInFlight)."""
    store, _, memory = sizes(groups(cluster)["cpu"])
    limits = app["args"]["limits"]
    replicas = deployment(app, "Ingress")["num_replicas"]
    by_count = replicas * limits["max_images_in_flight"] * limits["max_image_body_bytes"]
    assert store + by_count + RUNTIME_ALLOWANCE > memory, "the count alone would bound it: this test checks nothing"
    bodies = replicas * limits["max_image_bytes_in_flight"] * BODY_COPIES
    assert memory >= 1.25 * (store + bodies + RUNTIME_ALLOWANCE)


# --- confinement -------------------------------------------------------------------------------------------------


def test_every_container_runs_restricted(cluster):
    """The restricted Pod Security Standard, for the Ray containers and the autoscaler sidecar KubeRay adds."""
    contexts = [("autoscaler", cluster["autoscalerOptions"]["securityContext"])]
    for name, group in groups(cluster).items():
        pod = group["template"]["spec"]["securityContext"]
        assert (
            pod["runAsNonRoot"] is True and pod["runAsUser"] != 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
        )
        contexts += [(name, c["securityContext"]) for c in group["template"]["spec"]["containers"]]
        assert not group["template"]["spec"].get("initContainers"), name
    for name, context in contexts:
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add"), name
        assert not context.get("privileged", False), name


def as_pods(cluster: dict) -> list[dict]:
    """Each group's pod template, and the autoscaler sidecar with the head's volumes, as Pods for the schema."""
    pods = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": group["template"]["spec"]}
        for name, group in groups(cluster).items()
    ]
    options = cluster["autoscalerOptions"]
    sidecar = {key: options[key] for key in ("securityContext", "volumeMounts", "resources")}
    head_volumes = cluster["headGroupSpec"]["template"]["spec"]["volumes"]
    spec = {"containers": [{"name": "autoscaler", "image": "ray", **sidecar}], "volumes": head_volumes}
    return [*pods, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "autoscaler"}, "spec": spec}]


def test_pod_fields_are_kubernetes_own():
    """The CRD's schema lets unknown fields through, and the API server would drop them silently: a misspelt
    automountServiceAccountToken or sizeLimit would leave the pod as open as before. Kubernetes' own schema, strict,
    refuses them."""
    import kubernetes_validate

    cluster = yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]
    for pod in as_pods(cluster):
        kubernetes_validate.validate(pod, "1.33", strict=True)
    misspelt = as_pods(cluster)[0]
    misspelt["spec"]["automountServiceAcountToken"] = misspelt["spec"].pop("automountServiceAccountToken")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, "1.33", strict=True)
