"""serveConfigV2 changed under load, as KubeRay applies an edited RayService: PUT to the dashboard, in place.

The change touches every deployment (an environment variable in the application's ``runtime_env``), so Serve
replaces every replica, a rolling update: what an operator's config change costs the clients. The
ImageClassifier's replacement starts before the old replica stops (``max_surge_percent``) and needs a GPU of its
own: the autoscaler stand-in (autoscaler.py) adds a GPU pod for it. Reported: requests
sent, answered, failed, and each deployment's replicas per pod before and after, so a placement rule
(``max_replicas_per_node``) that would hold a new replica back shows.
"""

import copy
import time
from collections.abc import Callable

from serve_app.rehearsal import checks, pod_kill
from serve_app.rehearsal.autoscaler import GpuAutoscaler

REVISION_VARIABLE = "SERVE_APP_REHEARSAL_REVISION"  # read by nothing: a change that replaces every replica
UPDATE_AT_S = 15
LOAD_S = 120


def revised(serve_config: dict) -> dict:
    """serveConfigV2 with every application's runtime_env changed, and nothing else."""
    config = copy.deepcopy(serve_config)
    for app in config["applications"]:
        env_vars = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env_vars[REVISION_VARIABLE] = str(int(env_vars.get(REVISION_VARIABLE, "1")) + 1)
    return config


def replica_ids(application: dict) -> set[str]:
    return {r["replica_id"] for d in application.get("deployments", {}).values() for r in d.get("replicas", [])}


def updated_under_load(
    serve_config: dict,
    head_ip: str,
    token: str | None,
    base_url: str,
    api_key: str,
    placement: Callable[[], dict[str, dict[str, int]]],
    client_retries: int,
    scaler: GpuAutoscaler | None = None,
    settle_s: float = 180,
) -> tuple[list[tuple[str, bool, str]], dict]:
    """(checks, record): the revised serveConfigV2 PUT ``UPDATE_AT_S`` into ``LOAD_S`` of load; ``scaler``, the
    autoscaler stand-in, watches from the PUT until the update settled."""
    name = serve_config["applications"][0]["name"]
    old = replica_ids(checks.application_status(head_ip, name, token))
    before = placement()
    answers: list[int] = []

    def update() -> None:
        answers.append(checks.put_serve_config(head_ip, revised(serve_config), token).status)
        if scaler is not None:
            scaler.start()

    sent, routes = pod_kill.under_load(base_url, api_key, update, LOAD_S, UPDATE_AT_S, client_retries=client_retries)
    deadline = time.monotonic() + settle_s
    application = checks.application_status(head_ip, name, token)
    while time.monotonic() < deadline and (application.get("status") != "RUNNING" or old & replica_ids(application)):
        time.sleep(2)
        application = checks.application_status(head_ip, name, token)
    replaced = not old & replica_ids(application) and application.get("status") == "RUNNING"
    if scaler is not None:
        scaler.stop()
    record = {
        "put_status": answers[0] if answers else None,
        "updated_at_s": UPDATE_AT_S,
        "duration_s": LOAD_S,
        "every_replica_replaced_and_running": replaced,
        "replicas_by_pod_before": before,
        "replicas_by_pod_after": placement(),
        # Since the PUT: when the autoscaler stand-in added a GPU pod for a replacement waiting for a GPU.
        "gpu_pods_added_at_s": scaler.added_at_s if scaler else None,
        "autoscaler_error": repr(scaler.error) if scaler and scaler.error else None,
        **pod_kill.load_record(sent, routes, client_retries),
    }
    what = f"serveConfigV2 updated in place under load at {UPDATE_AT_S} s (every replica replaced)"
    results = [
        ("the dashboard accepted the updated serveConfigV2", record["put_status"] == 200, str(record["put_status"])),
        pod_kill.no_request_failed(what, record),
        (
            f"every replica replaced and the application RUNNING within {settle_s:g} s after the load",
            replaced,
            checks.status_report(application),
        ),
        (
            "the Ingress's replicas are spread over the pods as before the update",
            record["replicas_by_pod_after"].get("Ingress") == before.get("Ingress"),
            f"before {before.get('Ingress')}, after {record['replicas_by_pod_after'].get('Ingress')}",
        ),
    ]
    return results, record
