"""The rehearsal's reading of the RayService and the Dockerfile (no Ray, no namespaces)."""

from pathlib import Path

import pytest
import yaml

from serve_app.kuberay import ROOT
from serve_app.rehearsal.checks import running_replicas_by_pod, unschedulable
from serve_app.rehearsal.manifest import ManifestError, quantity_bytes, quantity_cpus, read_dockerfile, read_rayservice
from serve_app.rehearsal.pods import Filesystem, conditions_script
from serve_app.rehearsal.run import generated_secret, without_gpu

MANIFEST = ROOT / "kuberay" / "rayservice.yaml"


def test_quantities_as_kuberay_reads_them():
    assert quantity_bytes("26Gi") == 26 * 2**30 and quantity_bytes("8G") == 8 * 10**9 and quantity_bytes("512") == 512
    assert quantity_cpus("500m") == 1 and quantity_cpus("7") == 7 and quantity_cpus("2.5") == 3


def test_every_group_becomes_a_pod_with_kuberays_start_command():
    serve_config, pods = read_rayservice(MANIFEST, generated_secret())
    # The cpu group's two pods (replicas: 2); the GPU group, at zero, run once.
    assert [(pod.group, pod.name) for pod in pods] == [
        ("head", "head"),
        ("cpu", "cpu-0"),
        ("cpu", "cpu-1"),
        ("gpu", "gpu"),
    ]
    head, cpu, _, gpu = pods
    assert "--head" in head.ray_start_command("10.0.0.2") and head.ray_start_params["num-cpus"] == "0"
    assert "--address=10.0.0.2:6379" in cpu.ray_start_command("10.0.0.2")
    assert gpu.ray_start_params["num-gpus"] == "1"
    assert all(pod.read_only_root and pod.uid == 1000 for pod in pods)
    assert {v.mount_path for v in head.volumes} == {"/tmp", "/dev/shm"}
    assert serve_config["applications"][0]["import_path"] == "serve_app:build_app"


def test_a_missing_secret_is_what_the_kubelet_refuses(tmp_path: Path):
    secrets = generated_secret()
    del secrets["serve-app-api-keys"]
    with pytest.raises(ManifestError, match="no Secret 'serve-app-api-keys'"):
        read_rayservice(MANIFEST, secrets)


def test_the_secret_volume_is_written_read_only_where_the_host_has_no_such_directory(tmp_path: Path):
    _, pods = read_rayservice(MANIFEST, generated_secret())
    image = read_dockerfile(ROOT / "kuberay" / "Dockerfile")
    script = conditions_script(pods[1], image, Filesystem(project=ROOT, baked_home=tmp_path))
    (mount,) = [v.mount_path for v in pods[1].volumes if v.files]
    assert f"mount -o remount,ro {mount}" in script and f"chmod 0644 {mount}/api-keys" in script
    assert pods[1].volumes and generated_secret()["serve-app-api-keys"]["api-keys"] not in script  # base64 only


def test_the_dockerfile_gives_workdir_user_and_env():
    image = read_dockerfile(ROOT / "kuberay" / "Dockerfile")
    assert image.workdir == "/home/ray/app" and image.user.startswith("1000")
    assert image.env["SERVE_APP_NUMBA_CACHE_SEED"].startswith("/home/ray/")


def test_only_a_cuda_device_is_changed_for_this_machine():
    serve_config, _ = read_rayservice(MANIFEST, generated_secret())
    changed, notes = without_gpu(serve_config)
    assert notes == ["serve_app: images.device cuda -> cpu"]
    changed["applications"][0]["args"]["images"]["device"] = "cuda"
    assert changed == serve_config


def test_the_container_filesystem_is_read_only_but_for_its_volumes(tmp_path: Path):
    _, pods = read_rayservice(MANIFEST, generated_secret())
    image = read_dockerfile(ROOT / "kuberay" / "Dockerfile")
    script = conditions_script(pods[1], image, Filesystem(project=ROOT, baked_home=tmp_path))
    assert "mount -o remount,bind,ro" in script and "setpriv --reuid=1000 --regid=100" in script
    assert f"mount -t tmpfs -o mode=777,size={16 * 2**30} tmpfs /tmp" in script  # emptyDir.sizeLimit: 16Gi
    assert f"cd {ROOT.resolve()}" in script  # the image's WORKDIR holds the project


def test_secrets_reach_the_pods_as_kuberay_and_the_kubelet_give_them():
    secrets = generated_secret()
    _, pods = read_rayservice(MANIFEST, secrets)
    ray_token = secrets["kuberay-generated-ray-token"]["auth_token"]
    for pod in pods:  # authOptions.mode token: KubeRay gives every Ray container the token
        assert pod.env["RAY_AUTH_MODE"] == "token" and pod.env["RAY_AUTH_TOKEN"] == ray_token
    # Only where the ingress replicas run, and as files of a read-only secret volume, not as variables.
    assert not any("SERVE_APP_API_KEYS" in pod.env or "SERVE_APP_JWT_SECRET" in pod.env for pod in pods)
    files = {pod.group: dict(f for v in pod.volumes for f in v.files) for pod in pods}
    assert files["head"] == files["gpu"] == {}
    assert files["cpu"] == {
        "api-keys": secrets["serve-app-api-keys"]["api-keys"],
        "jwt-secret": secrets["serve-app-api-keys"]["jwt-secret"],
    }
    cpu = pods[1]
    (mount,) = [v.mount_path for v in cpu.volumes if v.files]
    assert cpu.env["SERVE_APP_API_KEYS_FILE"] == f"{mount}/api-keys"
    assert cpu.env["SERVE_APP_JWT_SECRET_FILE"] == f"{mount}/jwt-secret"
    with pytest.raises(ManifestError, match="auth_token"):
        read_rayservice(MANIFEST, {"serve-app-api-keys": secrets["serve-app-api-keys"]})


def test_gcs_fault_tolerance_reaches_the_head_and_the_workers_as_kuberay_gives_it():
    secrets = generated_secret()
    _, pods = read_rayservice(MANIFEST, secrets)
    head, workers = pods[0], pods[1:]
    password = secrets["serve-app-redis"]["password"]
    assert head.env["RAY_REDIS_ADDRESS"] == "serve-app-redis:6379" and head.env["REDIS_PASSWORD"] == password
    assert head.ray_start_params["redis-password"] == password and head.env["RAY_external_storage_namespace"]
    # Workers wait up to 600 s for a remade GCS (Ray's default, 60 s, would take them down with a slow head).
    assert all(pod.env["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600" for pod in workers)
    assert not any("RAY_REDIS_ADDRESS" in pod.env or "redis-password" in pod.ray_start_params for pod in workers)
    # What KubeRay adds to every container of a RayService's cluster.
    assert all(pod.env["RAY_SERVE_KV_TIMEOUT_S"] == "5" for pod in pods)
    # excludeHeadPodFromServeSvc: the clients reach the workers only.
    assert [pod.serve_endpoint for pod in pods] == [False, True, True, True]
    del secrets["serve-app-redis"]
    with pytest.raises(ManifestError, match="Secret 'serve-app-redis' has no key 'password'"):
        read_rayservice(MANIFEST, secrets)


def test_a_head_that_names_redis_itself_beside_gcs_fault_tolerance_is_refused_as_kuberay_refuses_it(tmp_path: Path):
    manifest = yaml.safe_load(MANIFEST.read_text())
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["env"].append({"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"})
    path = tmp_path / "rayservice.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match="RAY_REDIS_ADDRESS"):
        read_rayservice(path, generated_secret())


def test_a_subpath_below_its_volumes_own_mount_is_the_same_directory(tmp_path: Path):
    _, pods = read_rayservice(MANIFEST, generated_secret())
    head = pods[0]
    assert [(v.mount_path, v.size_bytes) for v in head.volumes] == [("/tmp", 16 * 2**30), ("/dev/shm", 2 * 2**30)]
    manifest = yaml.safe_load(MANIFEST.read_text())
    container = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (session,) = [m for m in container["volumeMounts"] if "subPath" in m]
    session["mountPath"] = "/var/ray"  # not below /tmp: another directory, which the rehearsal does not make
    path = tmp_path / "rayservice.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match="subPath"):
        read_rayservice(path, generated_secret())


def test_a_manifest_that_is_not_a_rayservice_is_refused(tmp_path: Path):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"kind": "RayCluster", "spec": {}}))
    with pytest.raises(ManifestError):
        read_rayservice(path, {})


def scheduling_message(required: str, available: str) -> dict:
    message = (
        "Deployment 'D' in application 'serve_app' has 2 replicas that have taken more than 30s to be scheduled. "
        f"Resources required for each replica: {required}, total resources available: {available}. Use `ray status`."
    )
    return {"deployments": {"D": {"message": message}}}


def test_only_a_replica_that_cannot_fit_is_unschedulable():
    # Slow to start on a busy machine (the resources are free) is not a reason to give up early.
    assert not unschedulable(scheduling_message('{"CPU": 1.0}', '{"CPU": 3.0}'))
    assert unschedulable(scheduling_message('{"CPU": 0.0, "GPU": 1.0}', '{"CPU": 3.0}'))
    assert unschedulable(scheduling_message('{"CPU": 4.0}', '{"CPU": 3.0}'))
    without_figures = "has 1 replicas that have taken more than 30s to be scheduled"
    assert unschedulable({"deployments": {"D": {"message": without_figures}}})
    assert not unschedulable({"deployments": {"D": {"message": "Deploying new version"}}})


def test_placement_counts_running_replicas_by_pod_name():
    application = {
        "deployments": {
            "Ingress": {
                "replicas": [
                    {"state": "RUNNING", "node_ip": "10.0.0.3"},
                    {"state": "RUNNING", "node_ip": "10.0.0.3"},
                    {"state": "STARTING", "node_ip": "10.0.0.4"},  # not serving yet: not counted
                ]
            },
            "FAQMatcher": {"replicas": [{"state": "RUNNING", "node_ip": "10.0.0.9"}]},  # no pod known by that IP
        }
    }
    placement = running_replicas_by_pod(application, {"10.0.0.3": "cpu-0", "10.0.0.4": "cpu-1"})
    assert placement == {"Ingress": {"cpu-0": 2}, "FAQMatcher": {"10.0.0.9": 1}}
