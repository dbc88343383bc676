"""kuberay/rayservice.yaml: generated from serve_config.yaml, valid for KubeRay's CRD and for Ray Serve."""

import tomllib

import jsonschema
import pytest
import yaml
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

from serve_app.kuberay import RAYSERVICE, ROOT, merge, render
from tests.conftest import SHARED
from tests.k8s.test_serve_config import assert_user_configs_are_the_settings

CRD = SHARED / "kuberay" / "crds" / "ray.io_rayservices.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(RAYSERVICE.read_text())


@pytest.fixture(scope="module")
def serve_config(manifest) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))


def test_committed_manifest_is_what_render_produces():
    assert RAYSERVICE.read_text() == render(), "stale: run `serve-app kuberay render`"


def test_validates_against_the_kuberay_crd(manifest):
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD not found at {CRD} (it ships in ../shared)")
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    jsonschema.validate(manifest, v1["schema"]["openAPIV3Schema"])
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"


def test_crd_validation_can_fail(manifest):
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD not found at {CRD}")
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    broken = merge(manifest, {"spec": {"rayClusterConfig": {"enableInTreeAutoscaling": "yes"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, v1["schema"]["openAPIV3Schema"])


def test_serve_config_v2_builds_like_serve_deploy(serve_config):
    (app,) = serve_config.applications
    module_name, attribute = app.import_path.split(":")
    builder = getattr(__import__(module_name), attribute)
    assert isinstance(call_user_app_builder_with_args_if_necessary(builder, app.args), Application)


def test_gpu_differences_come_from_the_overlay(serve_config):
    (app,) = serve_config.applications
    images = next(d for d in app.deployments if d.name == "ImageClassifier")
    assert images.ray_actor_options.num_gpus == 1
    assert images.max_ongoing_requests >= images.user_config["max_batch_size"]


def test_the_overlays_user_configs_are_the_deployments_settings(serve_config):
    assert_user_configs_are_the_settings(serve_config)


def test_cluster_shape(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] in ("sku", "nvidia.com/gpu") for t in gpu["template"]["spec"]["tolerations"])
    assert "agentpool" in gpu["template"]["spec"]["nodeSelector"]
    assert "deploymentUnhealthySecondThreshold" not in manifest["spec"]
    assert "serviceUnhealthySecondThreshold" not in manifest["spec"]


def _pod_templates(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [group["template"] for group in cluster["workerGroupSpecs"]]


def test_every_ray_pod_is_hardened_and_fast(manifest):
    policy = yaml.safe_load((ROOT / "kuberay" / "networkpolicy.yaml").read_text())
    for template in _pod_templates(manifest):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for key, value in policy["spec"]["podSelector"]["matchLabels"].items():
            assert template["metadata"]["labels"][key] == value  # the NetworkPolicy covers this pod
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/tmp", "/dev/shm"}
            assert container["resources"]["limits"]
            env = {variable["name"]: variable for variable in container["env"]}
            assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"
            assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]["value"] == "1"
            # NGINX is HAProxy's only client here: per-client limits would count every user as one.
            assert env["SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT"]["value"] == "0"
            assert env["SERVE_APP_HAPROXY_MAX_UPLOADS_PER_CLIENT"]["value"] == "0"
            assert env["SERVE_APP_HAPROXY_MAX_UPLOADS"]["value"] == "0"  # NGINX holds each body whole


def test_ray_version_matches_pyproject(manifest):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(dep for dep in pyproject["project"]["dependencies"] if dep.startswith("ray[serve]=="))
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == pin.split("==")[1]


def test_every_yaml_file_parses():
    for path in [*ROOT.glob("*.yaml"), *(ROOT / "kuberay").rglob("*.yaml")]:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_merge_rules():
    base = {"a": 1, "l": [{"name": "x", "v": 1, "k": 0}, {"name": "y"}], "d": {"p": 1}}
    overlay = {"l": [{"name": "x", "v": 2}, {"name": "z"}], "d": {"q": 2}}
    assert merge(base, overlay) == {
        "a": 1,
        "l": [{"name": "x", "v": 2, "k": 0}, {"name": "y"}, {"name": "z"}],
        "d": {"p": 1, "q": 2},
    }
