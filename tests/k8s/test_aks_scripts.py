"""kuberay/aks/setup.sh and teardown.sh, run against recording stubs of az, kubectl and helm.

The stubs keep what exists in a small JSON state (resource groups, registries, clusters, node pools, images,
the registry attachment, Secrets), answer "exists" / "not found" from it like the real tools, and log every
call (argv, and stdin for `-f -`). A first run against an empty state must create everything once; a second run
against the state the first one left must create nothing and leave the Secret alone.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve_app.kuberay import ROOT

SETUP = ROOT / "kuberay" / "aks" / "setup.sh"
TEARDOWN = ROOT / "kuberay" / "aks" / "teardown.sh"
TAG = "created-by=serve-app-setup"
ACR = "serveapptest"
HOST = "serve.test.example.org"
GROUP = "rg-test"
CLUSTER = "aks-test"

STUB = r"""
import json, os, sys
from pathlib import Path

state_dir = Path(os.environ["STUB_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]
stdin = sys.stdin.read() if "-f" in args and args[args.index("-f") + 1] == "-" else None
context = None
if args[:2] == ["acr", "build"]:
    context = sorted(os.listdir(args[-1]))
with open(state_dir / "calls.jsonl", "a") as log:
    log.write(json.dumps({"tool": tool, "argv": args, "stdin": stdin, "context": context}) + "\n")
state_file = state_dir / "state.json"
state = json.loads(state_file.read_text())
res = state["resources"]


def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default


def tags():
    value = opt("--tags")
    return dict([value.split("=", 1)]) if value else {}


def save():
    state_file.write_text(json.dumps(state))


def missing(what):
    sys.stderr.write(f"ERROR: ({what}NotFound) not found\n")
    sys.exit(3)


def show(key):
    if key not in res:
        missing(key.split("/")[0])
    query = opt("--query", "")
    if "tags" in query:
        print(res[key]["tags"].get("created-by", ""))
    elif query == "id":
        print("/subscriptions/s/resourceGroups/" + res[key]["rg"] + "/providers/" + key)
    elif "kubeletidentity" in query:
        print("kubelet-object-id")
    sys.exit(0)


def create(key):
    if key in res:
        sys.stderr.write(f"ERROR: {key} already exists\n")
        sys.exit(1)
    res[key] = {"rg": opt("--resource-group", opt("--name")), "tags": tags()}
    save()


def delete(key):
    res.pop(key, None)
    save()


verb = " ".join(a for a in args[:3] if not a.startswith("-"))
if tool == "helm":
    sys.exit(0)
if tool == "az":
    name = opt("--name")
    routes = {
        "group show": lambda: show(f"group/{name}"),
        "group create": lambda: create(f"group/{name}"),
        "group delete": lambda: delete(f"group/{name}"),
        "acr show": lambda: show(f"acr/{name}"),
        "acr check-name": lambda: print("false" if name in state.get("taken", []) else "true"),
        "acr create": lambda: create(f"acr/{name}"),
        "acr delete": lambda: delete(f"acr/{name}"),
        "acr repository show": lambda: show(f"image/{name}/{opt('--image')}"),
        "acr build": lambda: create(f"image/{opt('--registry')}/{opt('--image')}"),
        "aks show": lambda: show(f"aks/{name}"),
        "aks create": lambda: create(f"aks/{name}"),
        "aks delete": lambda: delete(f"aks/{name}"),
        "aks nodepool show": lambda: show(f"nodepool/{opt('--cluster-name')}/{name}"),
        "aks nodepool add": lambda: create(f"nodepool/{opt('--cluster-name')}/{name}"),
        "aks update": lambda: create(f"attached/{opt('--attach-acr')}"),
        "aks get-credentials": lambda: None,
        "role assignment list": lambda: print("assignment-id" if f"attached/{opt('--scope')}" in res else ""),
    }
    if verb == "acr list":
        group = opt("--resource-group")
        for key, value in res.items():
            if key.startswith("acr/") and value["rg"] == group and value["tags"].get("created-by") == "serve-app-setup":
                print(key.split("/", 1)[1])
        sys.exit(0)
    if verb not in routes:
        sys.exit(f"az stub: unexpected call: {args}")
    routes[verb]()
    sys.exit(0)
if tool == "kubectl":
    if args[:2] == ["get", "secret"]:
        if args[2] not in state["secrets"]:
            sys.stderr.write(f'Error from server (NotFound): secrets "{args[2]}" not found\n')
            sys.exit(1)
        print(f"secret/{args[2]}")
    elif args[:3] == ["create", "secret", "generic"]:
        if args[3] in state["secrets"]:
            sys.exit(f'error: secrets "{args[3]}" already exists')
        data = {}
        for arg in args:
            if arg.startswith("--from-file="):
                key, path = arg.removeprefix("--from-file=").split("=", 1)
                data[key] = Path(path).read_text()
                state.setdefault("secret_files", []).append(path)
                state.setdefault("secret_modes", []).append(Path(path).stat().st_mode & 0o777)
                state.setdefault("secret_dir_modes", []).append(Path(path).parent.stat().st_mode & 0o777)
        state["secrets"][args[3]] = data
        save()
    elif args[:2] == ["get", "service"]:
        print("20.1.2.3", end="")
    elif args[:1] in (["apply"], ["config"]) or args[:2] in (
        ["get", "namespace"],
        ["create", "namespace"],
        ["rollout", "status"],
    ):
        pass
    else:
        sys.exit(f"kubectl stub: unexpected call: {args}")
"""


def _stub_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("az", "kubectl", "helm"):
        stub = bin_dir / tool
        stub.write_text(f"#!{sys.executable} -IS\n{STUB}")
        stub.chmod(0o755)
    return bin_dir


class Stubs:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "state"
        self.dir.mkdir()
        self.bin = _stub_dir(tmp_path)
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.write({"resources": {}, "secrets": {}})

    def write(self, state):
        (self.dir / "state.json").write_text(json.dumps(state))

    def state(self):
        return json.loads((self.dir / "state.json").read_text())

    def add(self, key, group, tags=None):
        state = self.state()
        state["resources"][key] = {"rg": group, "tags": tags or {}}
        self.write(state)

    def calls(self):
        path = self.dir / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return [json.loads(line) for line in lines]

    def run(self, script, *args, stdin="", **env):
        environment = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.home),
            "STUB_STATE": str(self.dir),
            "RESOURCE_GROUP": GROUP,
            "CLUSTER": CLUSTER,
            **env,
        }
        result = subprocess.run(
            ["bash", str(script), *args], env=environment, input=stdin, capture_output=True, text=True, timeout=60
        )
        return result, self.calls()


def setup_env(**extra):
    return {"ACR_NAME": ACR, "HOST": HOST, "ACME_EMAIL": "ops@example.org", **extra}


def commands(calls, tool=None):
    return [" ".join([c["tool"], *c["argv"]]) for c in calls if tool in (None, c["tool"])]


def started(calls, prefix):
    return [c for c in calls if " ".join([c["tool"], *c["argv"]]).startswith(prefix)]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    stubs = Stubs(tmp_path_factory.mktemp("aks"))
    first, first_calls = stubs.run(SETUP, **setup_env())
    assert first.returncode == 0, first.stderr + first.stdout
    after_first = stubs.state()
    second, second_calls = stubs.run(SETUP, **setup_env())
    assert second.returncode == 0, second.stderr + second.stdout
    return {
        "first": first,
        "first_calls": first_calls,
        "after_first": after_first,
        "second": second,
        "second_calls": second_calls,
        "after_second": stubs.state(),
    }


CREATES = (
    "az group create",
    "az acr create",
    "az aks create",
    "az aks nodepool add",
    "az aks update",
    "az acr build",
    "kubectl create",
)


def test_first_run_creates_each_resource_once_and_tags_it(two_runs):
    calls = two_runs["first_calls"]
    for prefix in CREATES[:-1]:
        assert len(started(calls, prefix)) == (2 if prefix == "az aks nodepool add" else 1), prefix
    for prefix in ("az group create", "az acr create", "az aks create"):
        argv = started(calls, prefix)[0]["argv"]
        assert argv[argv.index("--tags") + 1] == TAG, prefix
    [registry] = started(calls, "az acr create")
    assert registry["argv"][registry["argv"].index("--sku") + 1] in ("Basic", "Standard")
    [attach] = started(calls, "az aks update")
    assert attach["argv"][attach["argv"].index("--attach-acr") + 1].endswith(f"/acr/{ACR}")
    gpu = next(c["argv"] for c in started(calls, "az aks nodepool add") if "gpupool" in c["argv"])
    assert gpu[gpu.index("--node-taints") + 1] == "sku=gpu:NoSchedule"
    assert gpu[gpu.index("--min-count") + 1] == "0" and "--enable-cluster-autoscaler" in gpu
    assert "--network-policy" in started(calls, "az aks create")[0]["argv"]


def test_image_is_built_in_acr_from_a_minimal_context(two_runs):
    [build] = started(two_runs["first_calls"], "az acr build")
    argv = build["argv"]
    assert argv[argv.index("--registry") + 1] == ACR
    assert argv[argv.index("--image") + 1] == "serve-app:0.1.0"
    assert argv[argv.index("--file") + 1] == str(ROOT / "kuberay" / "Dockerfile")
    assert {"pyproject.toml", "README.md", "serve_app", "deployments", "models"} <= set(build["context"])
    assert ".venv" not in build["context"] and ".git" not in build["context"]
    [check] = started(two_runs["first_calls"], "az acr repository show")
    assert check["argv"][check["argv"].index("--image") + 1] == "serve-app:0.1.0"


def test_manifests_are_applied_with_the_registry_image_and_the_host(two_runs):
    applied = [c["stdin"] for c in started(two_runs["first_calls"], "kubectl apply") if c["stdin"]]
    documents = [doc for text in applied for doc in yaml.safe_load_all(text)]
    kinds = {doc["kind"]: doc for doc in documents}
    assert {"ClusterIssuer", "RayService", "Ingress"} <= set(kinds)
    rayservice = yaml.dump(kinds["RayService"])
    assert f"image: {ACR}.azurecr.io/serve-app:0.1.0" in rayservice
    assert "serveappacr" not in rayservice
    ingress = kinds["Ingress"]["spec"]
    assert ingress["rules"][0]["host"] == HOST and ingress["tls"][0]["hosts"] == [HOST]
    assert kinds["ClusterIssuer"]["spec"]["acme"]["email"] == "ops@example.org"
    import kubernetes_validate

    kubernetes_validate.validate(kinds["Ingress"], "1.33", strict=True)
    applied_files = [" ".join(c["argv"]) for c in started(two_runs["first_calls"], "kubectl apply")]
    assert any("networkpolicy.yaml" in argv for argv in applied_files)
    assert any("disruption-budget.yaml" in argv for argv in applied_files)


def test_redis_is_up_before_the_rayservice_that_keeps_its_gcs_state_there(two_runs):
    calls = [" ".join([c["tool"], *c["argv"]]) for c in two_runs["first_calls"]]
    redis = next(i for i, call in enumerate(calls) if call.startswith("kubectl apply") and "redis.yaml" in call)
    waited = calls.index(next(c for c in calls if c.startswith("kubectl rollout status deployment/serve-app-redis")))
    rayservice = next(i for i, c in enumerate(two_runs["first_calls"]) if "kind: RayService" in (c["stdin"] or ""))
    assert calls.index(next(c for c in calls if "create secret generic serve-app-redis" in c)) < redis < waited
    assert waited < rayservice


def test_secrets_are_created_once_from_files_and_keys_never_appear_on_a_command_line(two_runs):
    creates = {c["argv"][3]: c["argv"] for c in started(two_runs["first_calls"], "kubectl create secret")}
    assert set(creates) == {"serve-app-api-keys", "serve-app-redis"}
    assert not any(arg.startswith("--from-literal") for argv in creates.values() for arg in argv)
    assert sum(arg.startswith("--from-file=") for arg in creates["serve-app-api-keys"]) == 2
    redis_password = two_runs["after_first"]["secrets"]["serve-app-redis"]["password"]
    assert re.fullmatch(r"[0-9a-f]{64}", redis_password)
    data = two_runs["after_first"]["secrets"]["serve-app-api-keys"]
    keys = data["api-keys"].split(",")
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in [*keys, data["jwt-secret"]])
    # The files the keys came from were private, and are gone once the script ends.
    assert set(two_runs["after_first"]["secret_modes"]) == {0o600}
    assert set(two_runs["after_first"]["secret_dir_modes"]) == {0o700}
    assert not any(Path(path).exists() for path in two_runs["after_first"]["secret_files"])
    every_arg = " ".join(arg for run in ("first_calls", "second_calls") for c in two_runs[run] for arg in c["argv"])
    outputs = "".join(two_runs[run].stdout + two_runs[run].stderr for run in ("first", "second"))
    for secret in [*keys, data["jwt-secret"], redis_password]:
        assert secret not in every_arg and secret not in outputs
    assert "jsonpath='{.data.api-keys}' | base64 -d" in two_runs["first"].stdout


def test_second_run_creates_nothing_and_keeps_the_secret(two_runs):
    calls = two_runs["second_calls"]
    for prefix in CREATES:
        assert not started(calls, prefix), prefix
    secret_calls = [c for c in calls if c["tool"] == "kubectl" and "secret" in c["argv"]]
    assert secret_calls and all(c["argv"][0] == "get" for c in secret_calls)
    assert two_runs["after_second"]["secrets"] == two_runs["after_first"]["secrets"]
    assert two_runs["after_second"]["resources"] == two_runs["after_first"]["resources"]


def _helm_installs(calls):
    installs = {}
    for c in calls:
        if c["tool"] == "helm" and c["argv"][:2] == ["upgrade", "--install"]:
            installs[c["argv"][2]] = c["argv"]
    return installs


def test_every_chart_is_pinned_and_waited_for(two_runs):
    installs = _helm_installs(two_runs["first_calls"])
    assert set(installs) == {"nvdp", "kuberay-operator", "ingress-nginx", "cert-manager"}
    for release, argv in installs.items():
        assert "--wait" in argv and "--timeout" in argv, release
        version = argv[argv.index("--version") + 1]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", version), (release, version)
    assert installs["kuberay-operator"][installs["kuberay-operator"].index("--version") + 1] == "1.7.0"


def test_ingress_nginx_gets_the_azure_health_probe_path(two_runs):
    argv = _helm_installs(two_runs["first_calls"])["ingress-nginx"]
    annotation = r"service\.beta\.kubernetes\.io/azure-load-balancer-health-probe-request-path"
    assert f"controller.service.annotations.{annotation}=/healthz" in argv


def test_device_plugin_targets_the_aks_gpu_nodes_and_tolerates_their_taint(two_runs):
    argv = _helm_installs(two_runs["first_calls"])["nvdp"]
    values = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--set-json")
    tolerations = json.loads(values["tolerations"])
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in tolerations
    terms = json.loads(values["affinity"])["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = [e for term in terms["nodeSelectorTerms"] for e in term["matchExpressions"]]
    assert expressions == [{"key": "kubernetes.azure.com/accelerator", "operator": "In", "values": ["nvidia"]}]


def test_setup_stops_before_touching_azure_without_its_parameters(tmp_path):
    stubs = Stubs(tmp_path)
    for missing in ("ACR_NAME", "HOST", "ACME_EMAIL"):
        env = setup_env()
        del env[missing]
        result, calls = stubs.run(SETUP, **env)
        assert result.returncode != 0 and missing in result.stderr
        assert calls == []
    result, calls = stubs.run(SETUP, **setup_env(HOST="serve-app.example.com"))
    assert result.returncode != 0 and calls == []


def test_teardown_of_a_group_setup_did_not_create_keeps_the_group_and_what_was_there(tmp_path):
    stubs = Stubs(tmp_path)
    stubs.add(f"group/{GROUP}", GROUP)  # the user's group, untagged
    stubs.add("acr/usersregistry", GROUP)  # something of the user's in it
    result, calls = stubs.run(SETUP, **setup_env())
    assert result.returncode == 0, result.stderr
    assert not started(calls, "az group create") and len(started(calls, "az acr create")) == 1

    result, calls = stubs.run(TEARDOWN, "--yes")
    assert result.returncode == 0, result.stderr
    assert not started(calls, "az group delete")
    assert len(started(calls, f"az aks delete --resource-group {GROUP} --name {CLUSTER}")) == 1
    assert [c["argv"][c["argv"].index("--name") + 1] for c in started(calls, "az acr delete")] == [ACR]
    resources = stubs.state()["resources"]
    assert f"group/{GROUP}" in resources and "acr/usersregistry" in resources
    assert f"aks/{CLUSTER}" not in resources and f"acr/{ACR}" not in resources


def test_a_registry_that_already_exists_is_used_and_never_deleted(tmp_path):
    stubs = Stubs(tmp_path)
    stubs.add("acr/sharedregistry", "other-rg")
    result, calls = stubs.run(SETUP, **setup_env(ACR_NAME="sharedregistry"))
    assert result.returncode == 0, result.stderr
    assert not started(calls, "az acr create") and len(started(calls, "az aks update")) == 1
    result, calls = stubs.run(TEARDOWN, "--yes")
    assert result.returncode == 0, result.stderr
    assert not started(calls, "az acr delete") and "acr/sharedregistry" in stubs.state()["resources"]


def test_a_registry_name_taken_elsewhere_stops_setup(tmp_path):
    stubs = Stubs(tmp_path)
    state = stubs.state()
    state["taken"] = [ACR]
    stubs.write(state)
    result, calls = stubs.run(SETUP, **setup_env())
    assert result.returncode != 0 and "taken" in result.stderr
    assert not started(calls, "az acr create") and not started(calls, "az aks create")


def test_teardown_deletes_the_group_setup_created_after_confirmation(tmp_path):
    stubs = Stubs(tmp_path)
    result, _ = stubs.run(SETUP, **setup_env())
    assert result.returncode == 0, result.stderr

    refused, calls = stubs.run(TEARDOWN, stdin="n\n")
    assert refused.returncode != 0 and not started(calls, "az group delete") and not started(calls, "az aks delete")
    no_tty, calls = stubs.run(TEARDOWN)
    assert no_tty.returncode != 0 and not started(calls, "az group delete")

    result, calls = stubs.run(TEARDOWN, YES="1")
    assert result.returncode == 0, result.stderr
    assert commands(calls, "az")[-1].startswith(f"az group delete --name {GROUP} --yes")
    assert not started(calls, "az aks delete") and not started(calls, "az acr delete")


def test_ingress_limits_sit_above_the_application_limits():
    annotations = yaml.safe_load((ROOT / "kuberay" / "ingress.yaml").read_text())["metadata"]["annotations"]
    rayservice = yaml.safe_load((ROOT / "kuberay" / "rayservice.yaml").read_text())
    limits = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]["limits"]
    body = re.fullmatch(r"(\d+)m", annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert int(body.group(1)) * 1024 * 1024 > limits["max_image_body_bytes"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > limits["upstream_timeout_s"]
