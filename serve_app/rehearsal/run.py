"""``serve-app kuberay rehearse``: kuberay/rayservice.yaml run on this machine as its pods would run it.

1. Build: the image's build-time products (weights in $TORCH_HOME, the compiled FAQ kernels) are made into a
   directory that every pod mounts, read-only, as the image's home.
2. Pods: the head, then each worker group's ``replicas`` (at least one), each in its own network and mount
   namespace with the container's conditions (pods.py) and the `ray start` command KubeRay generates for it
   (manifest.py);
   the GPU group advertises its GPUs to Ray, while the model runs on the CPU.
3. The application is first imported under each pod's conditions (a quick, clear failure), then serveConfigV2
   is deployed through the head's dashboard as the KubeRay operator does (with Ray's token when it is on),
   unchanged but for one thing: an ``images.device`` of ``cuda`` becomes ``cpu``, since no GPU is here (said in
   the output).
4. Checks, as the RayService's health checks and a client would: the application RUNNING, /readyz 200, every
   route answering with a key and refusing without one, and (with ``authOptions.mode: token``) the dashboard
   refusing a caller without Ray's token. Prints the time from start to ready and each replica's cold start
   (actor start to serving). ``kills``: pods killed under load one after the other and remade, a worker's or
   the head's (kill_scenario.py; the load sent to a Serve endpoint that stays, or through NGINX configured as
   kuberay/ingress.yaml), the remade pod's container started again whenever it exits, as the kubelet would
   (kubelet.py). ``update_client_retries``: then serveConfigV2 changed in place under load, every
   replica replaced (config_update.py), and a GPU pod added when a surging replacement waits for a GPU, as the
   Ray autoscaler would (autoscaler.py). With ``gcsFaultToleranceOptions`` a redis-server holds the GCS's state
   (redis_store.py), and a kill of ``redis`` is Redis's pod lost and remade, the head container restarted by a
   kubelet stand-in as it exits (redis_kill.py). Not rehearsed: the rest of the Ray autoscaler and the Kubernetes
   objects around the pods (Service, Ingress, NetworkPolicy).
"""

import copy
import itertools
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from serve_app.rehearsal import autoscaler, checks, config_update, image, pod_kill, pods
from serve_app.rehearsal.kill_scenario import PodKill, killed_under_load, serve_recovered
from serve_app.rehearsal.kubelet import Kubelet
from serve_app.rehearsal.manifest import (
    RAY_TOKEN_KEY,
    RAY_TOKEN_SECRET,
    ManifestError,
    PodSpec,
    read_dockerfile,
    read_rayservice,
)
from serve_app.rehearsal.redis_kill import RedisDeath
from serve_app.rehearsal.redis_store import RedisStore

# Run in each pod after importing the builder: the replicas' model libraries load when a replica starts, not with
# the graph, and a pod that cannot import them (a read-only root without numba's cache directory) must fail here.
IMPORT_REPLICA_MODULES = "import serve_app.app; serve_app.app.import_replica_modules()"
SECRET_NAME = "serve-app-api-keys"
ADDED_PODS = 1  # the GPU pod an update's surging ImageClassifier needs (autoscaler.py)
REDIS_SECRET = "serve-app-redis"  # kuberay/redis.yaml's password, as kuberay/aks/setup.sh creates it


@dataclass
class Outcome:
    passed: bool
    lines: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)


def generated_secret() -> dict[str, dict[str, str]]:
    """The Secret kuberay/aks/setup.sh would create and the one KubeRay generates for Ray's token, fresh."""
    keys = f"{secrets.token_hex(16)},{secrets.token_hex(16)}"
    return {
        SECRET_NAME: {"api-keys": keys, "jwt-secret": secrets.token_hex(32)},
        RAY_TOKEN_SECRET: {RAY_TOKEN_KEY: secrets.token_hex(32)},
        REDIS_SECRET: {"password": secrets.token_hex(32)},
    }


def without_gpu(serve_config: dict) -> tuple[dict, list[str]]:
    """serveConfigV2 with ``images.device: cuda`` made ``cpu`` (the one change; no GPU is here)."""
    config, changed = copy.deepcopy(serve_config), []
    for app in config.get("applications", []):
        images = (app.get("args") or {}).get("images") or {}
        if images.get("device") == "cuda":
            images["device"] = "cpu"
            changed.append(f"{app['name']}: images.device cuda -> cpu")
    return config, changed


def import_check(pod: PodSpec, command: list[str], log: Path) -> None:
    """Import the application's builder under the pod's conditions: what every Ray worker of it will do."""
    process = pods.PodProcess(command, log)
    code = process.process.wait(timeout=300)
    if code:
        raise RuntimeError(f"the application does not import in the {pod.name} pod:\n{process.tail(12)}")


def shown(command: list[str]) -> list[str]:
    """``command`` as KubeRay writes it into the pod spec: Redis's password by the variable's name."""
    return ["--redis-password=$REDIS_PASSWORD" if arg.startswith("--redis-password=") else arg for arg in command]


def rehearse(
    manifest: Path,
    dockerfile: Path,
    project: Path,
    workdir: Path,
    timeout_s: float,
    kills: tuple[PodKill, ...] = (),
    update_client_retries: int | None = None,
) -> Outcome:
    outcome = Outcome(passed=False)
    say = outcome.lines.append
    secret = generated_secret()
    try:
        serve_config, pod_specs = read_rayservice(manifest, secret)
        image_spec = read_dockerfile(dockerfile)
    except (ManifestError, KeyError, TypeError) as error:
        say(f"FAIL manifest: {error}")
        return outcome
    # The operator's token for the dashboard, when the manifest turns Ray's token authentication on.
    token = pod_specs[0].env.get("RAY_AUTH_TOKEN")
    if any(kill.group == "redis" for kill in kills) and "RAY_REDIS_ADDRESS" not in pod_specs[0].env:
        say("FAIL --kill-pod redis: the RayService has no gcsFaultToleranceOptions, so no Redis")
        return outcome
    serve_config, changes = without_gpu(serve_config)
    for change in changes:
        say(f"note: {change}")
    fs = pods.Filesystem(project=project, baked_home=workdir / "home")
    fs.baked_home.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    image.bake(image_spec, fs)
    outcome.timings["build_s"] = round(time.monotonic() - start, 1)
    # Besides the manifest's pods, room for those the autoscaler stand-in may add (autoscaler.py).
    network = pods.PodNetwork(len(pod_specs) + ADDED_PODS)
    running: list[pods.PodProcess] = []
    redis: RedisStore | None = None
    deaths: list[RedisDeath] = []
    kubelets: list[Kubelet] = []
    scalers: list[autoscaler.GpuAutoscaler] = []
    try:
        network.up()
        addresses, spare_addresses = network.pods[: len(pod_specs)], network.pods[len(pod_specs) :]
        head_ip = addresses[0].ip
        if "RAY_REDIS_ADDRESS" in pod_specs[0].env:
            redis = RedisStore(pod_specs[0].env.get("REDIS_PASSWORD"), workdir)
            named = pod_specs[0].env["RAY_REDIS_ADDRESS"]
            say(f"ok   Redis for the GCS's state at {redis.address} (the manifest's {named})")
        commands = {}
        for spec, address in zip(pod_specs, addresses, strict=True):
            script = pods.conditions_script(spec, image_spec, fs)
            env = pods.pod_environment(spec, image_spec, fs, address, head_ip)
            if redis is not None and spec.is_head:
                env["RAY_REDIS_ADDRESS"] = redis.address  # the Service's name, resolved
            commands[spec.name] = (script, env)
            import_path = serve_config["applications"][0]["import_path"]
            module, _, attribute = import_path.partition(":")
            # The builder, and what the replicas import when they start (the model libraries load there, not here).
            probe = ["python", "-c", f"import {module}; {module}.{attribute}; {IMPORT_REPLICA_MODULES}"]
            import_check(spec, pods.pod_command(address, script, env, probe), workdir / f"import-{spec.name}.log")
        say(f"ok   the application imports in every pod ({', '.join(s.name for s in pod_specs)})")

        latest: dict[str, pods.PodProcess] = {}  # each pod's container, the last started

        def start_pod(spec: PodSpec, address: pods.PodAddress, log_name: str) -> None:
            """KubeRay's `ray start` for ``spec``'s group in its pod (again for a remade pod)."""
            script, env = commands[spec.name]
            command = pods.pod_command(address, script, env, spec.ray_start_command(head_ip))
            running.append(pods.PodProcess(command, workdir / log_name))
            latest[spec.name] = running[-1]

        def container_kubelet(spec: PodSpec, address: pods.PodAddress, number: int) -> Kubelet:
            """The kubelet stand-in for the pod's container (kubelet.py), once a kill has remade it; stopped in
            the teardown if not before."""
            restarts = itertools.count()
            kubelets.append(
                Kubelet(
                    exited=lambda: latest[spec.name].exited() is not None,
                    clean_up=partial(pod_kill.kill_pod, address.name),
                    restart=lambda: start_pod(
                        spec, address, f"pod-{spec.name}-restarted-{number}-{next(restarts)}.log"
                    ),
                )
            )
            return kubelets[-1]

        def remade_pod(spec: PodSpec, address: pods.PodAddress, number: int) -> tuple[Callable[[], None], Kubelet]:
            """A killed pod made again (KubeRay's part), then its container restarted whenever it exits (the
            kubelet's): a remade worker's `ray start` gives up when the GCS is too busy to register it in time
            (seen under the rehearsal's load on 2 cores), and on Kubernetes its container would start again."""
            kubelet = container_kubelet(spec, address, number)

            def remake() -> None:
                start_pod(spec, address, f"pod-{spec.name}-remade-{number}.log")
                kubelet.start()

            return remake, kubelet

        start = time.monotonic()
        for spec, address in zip(pod_specs, addresses, strict=True):
            start_pod(spec, address, f"pod-{spec.name}.log")
            say(f"     pod {spec.name} at {address.ip}: {' '.join(shown(spec.ray_start_command(head_ip))[1:])}")
            if spec.is_head:
                checks.wait_for("the head's dashboard", lambda: checks.alive_nodes(head_ip, token), 120)
        nodes = len(pod_specs)
        checks.wait_for("every pod's Ray node", lambda: len(checks.alive_nodes(head_ip, token)) == nodes, 120)
        outcome.timings["nodes_alive_s"] = round(time.monotonic() - start, 1)
        say(f"ok   {len(pod_specs)} Ray nodes alive after {outcome.timings['nodes_alive_s']} s")
        checks.deploy(head_ip, serve_config, token)
        times = checks.ReplicaTimes()
        app_name = serve_config["applications"][0]["name"]
        checks.wait_until_running(head_ip, app_name, timeout_s, times, token)
        outcome.timings["running_s"] = round(time.monotonic() - start, 1)
        say(f"ok   application {app_name} RUNNING {outcome.timings['running_s']} s after the pods started")
        # The clients call the Serve service: the first of its endpoints (the head only when it is one).
        pairs = zip(pod_specs, addresses, strict=True)
        endpoints = {spec.name: address for spec, address in pairs if spec.serve_endpoint}
        base_url = f"http://{next(iter(endpoints.values())).ip}:{checks.SERVE_PORT}"
        checks.wait_until_ready(base_url, 120)
        outcome.timings["ready_s"] = round(time.monotonic() - start, 1)
        say(f"ok   /readyz 200 {outcome.timings['ready_s']} s after the pods started")
        results = [
            (f"pod {spec.name}: KubeRay's readiness probe", *checks.readiness_probe(address.name, spec.is_head))
            for spec, address in zip(pod_specs, addresses, strict=True)
        ]
        api_key = secret[SECRET_NAME]["api-keys"].split(",")[0]
        results += checks.client_checks(base_url, api_key)
        if token:
            results += checks.dashboard_checks(head_ip, serve_config)
        pod_names = {pod.ip: pod_spec.name for pod_spec, pod in zip(pod_specs, addresses, strict=True)}

        def placement() -> dict[str, dict[str, int]]:
            return checks.running_replicas_by_pod(checks.application_status(head_ip, app_name, token), pod_names)

        def controller_pod() -> str | None:
            node_ip = checks.controller_node_ip(head_ip, token)
            return pod_names.get(node_ip or "", node_ip)

        for number, kill in enumerate(kills):
            # The group's first pod: with several, the others keep serving while it is gone. Redis's death takes
            # the head down (its GCS exits), and the kubelet remakes it, not the rehearsal.
            group = "head" if kill.group == "redis" else kill.group
            index = [spec.group for spec in pod_specs].index(group)
            spec, address = pod_specs[index], addresses[index]
            kill_processes: Callable[[], int] | None = None
            death: RedisDeath | None = None
            if kill.group == "redis":
                # Redis's death takes the head container down, and the kubelet alone starts it again.
                assert redis is not None  # refused before the pods started otherwise
                death = RedisDeath(redis, container_kubelet(spec, address, number))
                deaths.append(death)
                kill_processes, remake, kubelet = death.kill, death.remake, death.kubelet
            else:
                remake, kubelet = remade_pod(spec, address, number)
            stays = [a for a in endpoints.values() if a != address]
            if not stays:
                raise RuntimeError(f"pod {spec.name} is the Serve service's one endpoint: none serves while it is dead")
            load_url = f"http://{stays[0].ip}:{checks.SERVE_PORT}"
            before, controller = placement(), controller_pod()
            old_replicas = config_update.replica_ids(checks.application_status(head_ip, app_name, token))
            killed, record = killed_under_load(
                kill, spec, address, endpoints, remake, load_url, api_key, workdir, kill_processes
            )
            if spec.is_head:
                killed.append(serve_recovered(head_ip, app_name, token, old_replicas, record))
            if death is not None:
                killed += death.checks()
                death.stop()  # its kubelet stand-in must not race a later kill of the head
                record.update(death.record())
            else:
                kubelet.stop()  # nor the remade pod's a later kill of it
                record["remade_pod_container_restarted_at_s"] = list(kubelet.restarted_at_s)
            record["replicas_by_pod_before_kill"], record["replicas_by_pod_after"] = before, placement()
            record["serve_controller_pod_before_kill"] = controller
            record["serve_controller_pod_after"] = controller_pod()
            # A pod becomes one of the Serve service's endpoints only when Ready, and its Serve proxy (which the
            # probe asks) runs only while the pod holds a replica: a remade pod left without one serves nothing.
            ready, seen = checks.readiness_probe(address.name, spec.is_head)
            killed.append((f"the remade pod {spec.name} passes KubeRay's readiness probe after the load", ready, seen))
            results += killed
            outcome.timings.setdefault("pod_kills", []).append(record)
            say(f"     pod {kill.group if death else spec.name} killed: {json.dumps(record)}")
        if update_client_retries is not None:
            gpu_spec = next((spec for spec in pod_specs if "num-gpus" in spec.ray_start_params), None)
            gpu_deployments, added_pods = autoscaler.gpu_deployments(serve_config), itertools.count()

            def add_gpu_pod() -> None:
                """What the autoscaler asks KubeRay for: one more pod of the GPU group, on a spare address."""
                assert gpu_spec is not None
                number = next(added_pods)
                spec, address = replace(gpu_spec, name=f"{gpu_spec.group}-added-{number}"), spare_addresses[number]
                env = pods.pod_environment(spec, image_spec, fs, address, head_ip)
                commands[spec.name] = (pods.conditions_script(spec, image_spec, fs), env)
                pod_names[address.ip] = spec.name
                start_pod(spec, address, f"pod-{spec.name}.log")

            if gpu_spec is not None and gpu_deployments:
                scalers.append(
                    autoscaler.GpuAutoscaler(
                        lambda: autoscaler.unplaced_replicas(
                            checks.application_status(head_ip, app_name, token), gpu_deployments
                        ),
                        add_gpu_pod,
                        max_pods=len(spare_addresses),
                    )
                )
            updated, record = config_update.updated_under_load(
                serve_config,
                head_ip,
                token,
                base_url,
                api_key,
                placement,
                update_client_retries,
                scalers[-1] if scalers else None,
            )
            results += updated
            outcome.timings["config_update"] = record
            say(f"     serveConfigV2 updated: {json.dumps(record)}")
        for label, passed, seen in results:
            say(f"{'ok  ' if passed else 'FAIL'} {label}" + ("" if passed else f": {seen}"))
        times.observe(checks.application_status(head_ip, app_name, token))
        outcome.timings["replica_cold_start_s"] = [
            {"deployment": d, "replica": r, "seconds": round(s, 1)} for d, r, s in times.cold_starts()
        ]
        for d, r, s in times.cold_starts():
            say(f"     replica {d} {r}: scheduled -> serving {s:.1f} s")
        outcome.passed = all(passed for _, passed, _ in results)
    except (RuntimeError, TimeoutError, OSError) as error:
        say(f"FAIL {error}")
        for process in running:
            if process.exited() is not None:
                say(f"     a pod's process exited ({process.exited()}):\n{process.tail(15)}")
    finally:
        for death in deaths:
            death.stop()
        for kubelet in kubelets:
            kubelet.stop()
        for scaler in scalers:
            scaler.stop()
        for process in reversed(running):
            process.stop()
        network.down()
        if redis is not None:
            redis.stop()
    return outcome


def main(
    manifest: Path,
    dockerfile: Path,
    project: Path,
    timeout_s: float,
    keep: Path | None,
    out: Path | None = None,
    kills: tuple[PodKill, ...] = (),
    update_client_retries: int | None = None,
) -> int:
    try:
        pods.preflight()
    except pods.PodsUnavailable as error:
        print(f"rehearsal skipped: {error}")
        return 77
    with tempfile.TemporaryDirectory(prefix="serve-app-rehearsal-") as scratch:
        workdir = keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        outcome = rehearse(manifest, dockerfile, project, workdir, timeout_s, kills, update_client_retries)
    print("\n".join(outcome.lines))
    print(json.dumps(outcome.timings))
    print("rehearsal passed" if outcome.passed else "rehearsal FAILED")
    if out is not None:
        record = {"passed": outcome.passed, "manifest": manifest.name, **outcome.timings, "output": outcome.lines}
        out.write_text(json.dumps(record, indent=1) + "\n")
    return 0 if outcome.passed else 1
