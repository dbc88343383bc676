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
   (actor start to serving). ``PodKill``: a worker pod killed under load and remade, the load sent to the head
   or through NGINX configured as kuberay/ingress.yaml (nginx_front.py). ``update_client_retries``: then
   serveConfigV2 changed in place under load, every replica replaced (config_update.py). Not rehearsed: the Ray
   autoscaler and the Kubernetes objects around the pods (Service, Ingress, NetworkPolicy).
"""

import copy
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from serve_app.rehearsal import checks, config_update, image, pod_kill, pods
from serve_app.rehearsal.manifest import (
    RAY_TOKEN_KEY,
    RAY_TOKEN_SECRET,
    ManifestError,
    PodSpec,
    read_dockerfile,
    read_rayservice,
)
from serve_app.rehearsal.nginx_front import nginx_front, sent_again, tries

# Run in each pod after importing the builder: the replicas' model libraries load when a replica starts, not with
# the graph, and a pod that cannot import them (a read-only root without numba's cache directory) must fail here.
IMPORT_REPLICA_MODULES = "import serve_app.app; serve_app.app.import_replica_modules()"
SECRET_NAME = "serve-app-api-keys"


@dataclass(frozen=True)
class PodKill:
    """A worker group's first pod killed under load after the checks (a node failure), then remade."""

    group: str
    client_retries: int = pod_kill.CLIENT_RETRIES  # times a client sends a request again (0: never)
    nginx_front: bool = False  # the load through NGINX as kuberay/ingress.yaml configures it, to every pod


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


def killed_under_load(
    kill: PodKill,
    pod_name: str,
    address: pods.PodAddress,
    addresses: list[pods.PodAddress],
    remake: Callable[[], None],
    base_url: str,
    api_key: str,
    workdir: Path,
) -> tuple[list[tuple[str, bool, str]], dict]:
    """The pod at ``address`` killed under load, sent to the head, or to NGINX in front of every pod as the Serve
    service's endpoints; how long its remade copy takes to pass KubeRay's readiness probe is timed either way.
    Here the remade pod comes back at the killed one's address, so behind NGINX that address leaves the
    upstreams as the pod is remade (a moment after the kill) and returns once the probe passes in it, as a new
    pod becomes an endpoint when Ready."""
    stop = threading.Event()
    ready_after: list[float] = []
    last_probe: list[str] = []

    def watch_readiness(began: float, on_ready: Callable[[], None]) -> None:
        while not stop.is_set():
            ready, seen = checks.readiness_probe(address.name)
            last_probe[:] = [seen]
            if ready:
                on_ready()
                ready_after.append(round(time.monotonic() - began, 1))
                return
            stop.wait(1.0)

    def remade_and_watched(on_ready: Callable[[], None] = lambda: None) -> None:
        began = time.monotonic()
        remake()
        threading.Thread(target=watch_readiness, args=(began, on_ready), daemon=True).start()

    folder = workdir / "nginx"
    listen = f"{pods.HOST_ADDRESS}:{checks.SERVE_PORT}"  # the host's end of the pods' network
    endpoints = [f"{pod.ip}:{checks.SERVE_PORT}" for pod in addresses]
    if kill.nginx_front:
        folder.mkdir(exist_ok=True)
    with nginx_front(folder, listen, endpoints) if kill.nginx_front else nullcontext() as front:
        url, remake_it = base_url, remade_and_watched
        if front is not None:
            killed_endpoint = f"{address.ip}:{checks.SERVE_PORT}"

            def remake_behind_front() -> None:
                front.set_upstreams([e for e in endpoints if e != killed_endpoint])
                remade_and_watched(on_ready=lambda: front.set_upstreams(endpoints))

            url, remake_it = f"http://{listen}", remake_behind_front
        try:
            killed, record = pod_kill.pod_kill_under_load(
                url, api_key, pod_name, address.name, remake_it, client_retries=kill.client_retries
            )
        finally:
            stop.set()
    if kill.nginx_front:
        record["nginx_sent_again"] = sent_again(tries(folder))
    record["remade_pod_ready_after_s"] = ready_after[0] if ready_after else None
    record["remade_pod_last_readiness_probe"] = last_probe[0] if last_probe else None
    return killed, record


def rehearse(
    manifest: Path,
    dockerfile: Path,
    project: Path,
    workdir: Path,
    timeout_s: float,
    kill: PodKill | None = None,
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
    serve_config, changes = without_gpu(serve_config)
    for change in changes:
        say(f"note: {change}")
    fs = pods.Filesystem(project=project, baked_home=workdir / "home")
    fs.baked_home.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    image.bake(image_spec, fs)
    outcome.timings["build_s"] = round(time.monotonic() - start, 1)
    network = pods.PodNetwork(len(pod_specs))
    running: list[pods.PodProcess] = []
    try:
        network.up()
        addresses = network.pods
        head_ip = addresses[0].ip
        commands = {}
        for spec, address in zip(pod_specs, addresses, strict=True):
            script = pods.conditions_script(spec, image_spec, fs)
            env = pods.pod_environment(spec, image_spec, fs, address, head_ip)
            commands[spec.name] = (script, env)
            import_path = serve_config["applications"][0]["import_path"]
            module, _, attribute = import_path.partition(":")
            # The builder, and what the replicas import when they start (the model libraries load there, not here).
            probe = ["python", "-c", f"import {module}; {module}.{attribute}; {IMPORT_REPLICA_MODULES}"]
            import_check(spec, pods.pod_command(address, script, env, probe), workdir / f"import-{spec.name}.log")
        say(f"ok   the application imports in every pod ({', '.join(s.name for s in pod_specs)})")

        def start_pod(spec: PodSpec, address: pods.PodAddress, log_name: str) -> None:
            """KubeRay's `ray start` for ``spec``'s group in its pod (again for a remade pod)."""
            script, env = commands[spec.name]
            command = pods.pod_command(address, script, env, spec.ray_start_command(head_ip))
            running.append(pods.PodProcess(command, workdir / log_name))

        start = time.monotonic()
        for spec, address in zip(pod_specs, addresses, strict=True):
            start_pod(spec, address, f"pod-{spec.name}.log")
            say(f"     pod {spec.name} at {address.ip}: {' '.join(spec.ray_start_command(head_ip)[1:])}")
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
        base_url = f"http://{head_ip}:{checks.SERVE_PORT}"
        checks.wait_until_ready(base_url, 120)
        outcome.timings["ready_s"] = round(time.monotonic() - start, 1)
        say(f"ok   /readyz 200 {outcome.timings['ready_s']} s after the pods started")
        results = [
            (f"pod {spec.name}: KubeRay's readiness probe", *checks.readiness_probe(address.name))
            for spec, address in zip(pod_specs, addresses, strict=True)
        ]
        api_key = secret[SECRET_NAME]["api-keys"].split(",")[0]
        results += checks.client_checks(base_url, api_key)
        if token:
            results += checks.dashboard_checks(head_ip, serve_config)
        pod_names = {pod.ip: pod_spec.name for pod_spec, pod in zip(pod_specs, addresses, strict=True)}

        def placement() -> dict[str, dict[str, int]]:
            return checks.running_replicas_by_pod(checks.application_status(head_ip, app_name, token), pod_names)

        if kill is not None:
            # The group's first pod: with several, the others keep serving while it is gone.
            index = [spec.group for spec in pod_specs].index(kill.group)
            spec, address = pod_specs[index], addresses[index]
            remake = partial(start_pod, spec, address, f"pod-{spec.name}-remade.log")
            before = placement()
            killed, record = killed_under_load(kill, spec.name, address, addresses, remake, base_url, api_key, workdir)
            record["replicas_by_pod_before_kill"], record["replicas_by_pod_after"] = before, placement()
            # A pod becomes one of the Serve service's endpoints only when Ready, and its Serve proxy (which the
            # probe asks) runs only while the pod holds a replica: a remade pod left without one serves nothing.
            ready, seen = checks.readiness_probe(address.name)
            killed.append((f"the remade pod {spec.name} passes KubeRay's readiness probe after the load", ready, seen))
            results += killed
            outcome.timings["pod_kill"] = record
            say(f"     pod {spec.name} killed: {json.dumps(record)}")
        if update_client_retries is not None:
            updated, record = config_update.updated_under_load(
                serve_config, head_ip, token, base_url, api_key, placement, update_client_retries
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
        for process in reversed(running):
            process.stop()
        network.down()
    return outcome


def main(
    manifest: Path,
    dockerfile: Path,
    project: Path,
    timeout_s: float,
    keep: Path | None,
    out: Path | None = None,
    kill: PodKill | None = None,
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
        outcome = rehearse(manifest, dockerfile, project, workdir, timeout_s, kill, update_client_retries)
    print("\n".join(outcome.lines))
    print(json.dumps(outcome.timings))
    print("rehearsal passed" if outcome.passed else "rehearsal FAILED")
    if out is not None:
        record = {"passed": outcome.passed, "manifest": manifest.name, **outcome.timings, "output": outcome.lines}
        out.write_text(json.dumps(record, indent=1) + "\n")
    return 0 if outcome.passed else 1
