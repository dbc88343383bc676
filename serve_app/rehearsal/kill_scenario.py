"""A pod killed under load, as the rehearsal runs it after its checks: where the load goes (a Serve endpoint that
stays, or NGINX in front of them all), the remade pod's readiness timed, the endpoints that stay probed meanwhile
(survivors.py), and after a head kill the Serve controller's recovery checked. The kill and the load themselves:
pod_kill.py."""

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from serve_app.rehearsal import checks, config_update, pod_kill, pods
from serve_app.rehearsal.manifest import PodSpec
from serve_app.rehearsal.nginx_front import nginx_front, sent_again, tries
from serve_app.rehearsal.survivors import SurvivorReadiness


@dataclass(frozen=True)
class PodKill:
    """A group's first pod killed under load after the checks (a node failure), then remade: a worker group's, or
    the head (which only a RayService with GCS fault tolerance survives), or ``redis``: kuberay/redis.yaml's pod,
    which the head's GCS needs (redis_kill.py)."""

    group: str
    client_retries: int = pod_kill.CLIENT_RETRIES  # times a client sends a request again (0: never)
    nginx_front: bool = False  # the load through NGINX as kuberay/ingress.yaml configures it, to every pod


def killed_under_load(
    kill: PodKill,
    spec: PodSpec,
    address: pods.PodAddress,
    endpoints: dict[str, pods.PodAddress],
    remake: Callable[[], None],
    load_url: str,
    api_key: str,
    workdir: Path,
    kill_processes: Callable[[], int] | None = None,
) -> tuple[list[tuple[str, bool, str]], dict]:
    """The pod at ``address`` killed under load, sent to ``load_url`` (a pod that stays), or to NGINX in front of
    the Serve service's ``endpoints`` (pod name -> address); how long its remade copy takes to pass KubeRay's
    readiness probe is timed either way, and the endpoints that stay are probed meanwhile. Here the remade pod
    comes back at the killed one's address, so behind NGINX that address leaves the upstreams as the pod is
    remade (a moment after the kill) and returns once the probe passes in it, as a new pod becomes an endpoint
    when Ready. ``kill_processes``: what dies (how many processes), by default every process of the pod at
    ``address``; another (Redis, redis_kill.py) leaves the pod to die of it."""
    stop = threading.Event()
    ready_after: list[float] = []
    last_probe: list[str] = []

    def watch_readiness(began: float, on_ready: Callable[[], None]) -> None:
        while not stop.is_set():
            ready, seen = checks.readiness_probe(address.name, spec.is_head)
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
    upstreams = [f"{pod.ip}:{checks.SERVE_PORT}" for pod in endpoints.values()]
    survivors = SurvivorReadiness({name: pod for name, pod in endpoints.items() if pod != address})
    if kill.nginx_front:
        folder.mkdir(exist_ok=True)
    with nginx_front(folder, listen, upstreams) if kill.nginx_front else nullcontext() as front:
        url, remake_it = load_url, remade_and_watched
        if front is not None:
            url = f"http://{listen}"
        if front is not None and address in endpoints.values():
            killed_endpoint = f"{address.ip}:{checks.SERVE_PORT}"

            def remake_behind_front() -> None:
                front.set_upstreams([e for e in upstreams if e != killed_endpoint])
                remade_and_watched(on_ready=lambda: front.set_upstreams(upstreams))

            remake_it = remake_behind_front
        survivors.start()
        try:
            killed, record = pod_kill.pod_kill_under_load(
                url,
                api_key,
                spec.name if kill_processes is None else kill.group,
                kill_processes or partial(pod_kill.kill_pod, address.name),
                remake_it,
                client_retries=kill.client_retries,
            )
        finally:
            stop.set()
            survivors.stop()
    killed.append(survivors.check())
    record["readiness_probes_of_the_pods_that_stayed"] = survivors.record()
    if kill.nginx_front:
        record["nginx_sent_again"] = sent_again(tries(folder))
    record["remade_pod_ready_after_s"] = ready_after[0] if ready_after else None
    record["remade_pod_last_readiness_probe"] = last_probe[0] if last_probe else None
    return killed, record


def serve_recovered(
    head_ip: str, app_name: str, token: str | None, old_replicas: set[str], record: dict, timeout_s: float = 180
) -> tuple[str, bool, str]:
    """The check that the Serve controller came back with the remade head (from the GCS's state in Redis), reports
    the application RUNNING and kept every replica (the workers' replicas lived on: none was started again)."""
    application: dict = {}

    def running() -> bool:
        application.clear()
        application.update(checks.application_status(head_ip, app_name, token))
        return application.get("status") == "RUNNING"

    with suppress(TimeoutError):  # the check below says what the status was
        checks.wait_for("the application RUNNING through the remade head", running, timeout_s, interval_s=2)
    started_again = len(old_replicas - config_update.replica_ids(application))
    record["replicas_started_again"] = started_again
    label = "the Serve application RUNNING again through the remade head, no replica started again"
    passed = application.get("status") == "RUNNING" and not started_again
    return label, passed, f"{started_again} started again; {checks.status_report(application)}"
