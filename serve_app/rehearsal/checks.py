"""What KubeRay and a client do against the rehearsed cluster, over HTTP: deploy serveConfigV2 through the
head's dashboard (as the operator does), wait for the application, then call every route."""

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DASHBOARD_PORT = 8265
SERVE_PORT = 8000


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, head = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, head = error.code, error.read(), dict(error.headers)
    try:
        return Answer(status, json.loads(raw), head)
    except ValueError:
        return Answer(status, raw.decode(errors="replace"), head)


def wait_for(what: str, check, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns a truthy value; raise TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError) as error:  # not listening yet, reset, half-written JSON
            last_error = error
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s" + (f" (last error: {last_error})" if last_error else ""))


def dashboard_headers(token: str | None) -> dict[str, str]:
    """Ray's token, as the KubeRay operator sends it on its dashboard calls (none when token auth is off)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def alive_nodes(head_ip: str, token: str | None) -> list[dict]:
    url = f"http://{head_ip}:{DASHBOARD_PORT}/api/v0/nodes?limit=100"
    answer = http("GET", url, headers=dashboard_headers(token), timeout=10)
    if answer.status != 200:
        return []
    return [n for n in answer.body["data"]["result"]["result"] if n.get("state") == "ALIVE"]


def put_serve_config(head_ip: str, serve_config: dict, token: str | None) -> Answer:
    """KubeRay's way: PUT the whole serveConfigV2 to the dashboard's Serve REST API."""
    return http(
        "PUT",
        f"http://{head_ip}:{DASHBOARD_PORT}/api/serve/applications/",
        json.dumps(serve_config).encode(),
        {"Content-Type": "application/json", **dashboard_headers(token)},
    )


def deploy(head_ip: str, serve_config: dict, token: str | None) -> None:
    answer = put_serve_config(head_ip, serve_config, token)
    if answer.status != 200:
        raise RuntimeError(f"the dashboard refused serveConfigV2: {answer.status} {answer.body}")


@dataclass
class ReplicaTimes:
    """Each replica's cold start: its actor's start to the controller's first report of it RUNNING."""

    started: dict[str, tuple[str, float]] = field(default_factory=dict)  # replica id -> (deployment, start time)
    serving: dict[str, float] = field(default_factory=dict)  # replica id -> first seen RUNNING (wall clock)

    def observe(self, application: dict) -> None:
        now = time.time()
        for name, deployment in application.get("deployments", {}).items():
            for replica in deployment.get("replicas", []):
                rid = replica["replica_id"]
                if replica.get("start_time_s"):
                    self.started.setdefault(rid, (name, replica["start_time_s"]))
                if replica.get("state") == "RUNNING":
                    self.serving.setdefault(rid, now)

    def cold_starts(self) -> list[tuple[str, str, float]]:
        return sorted(
            (deployment, rid, self.serving[rid] - start)
            for rid, (deployment, start) in self.started.items()
            if rid in self.serving
        )


def serve_details(head_ip: str, token: str | None) -> dict:
    """The dashboard's Serve REST API answer (applications, controller), or {} while it cannot give one."""
    url = f"http://{head_ip}:{DASHBOARD_PORT}/api/serve/applications/"
    answer = http("GET", url, headers=dashboard_headers(token), timeout=10)
    return answer.body if answer.status == 200 and isinstance(answer.body, dict) else {}


def application_status(head_ip: str, name: str, token: str | None) -> dict:
    return serve_details(head_ip, token).get("applications", {}).get(name, {})


def controller_node_ip(head_ip: str, token: str | None) -> str | None:
    """The node the Serve controller runs on, as the dashboard reports it."""
    return (serve_details(head_ip, token).get("controller_info") or {}).get("node_ip")


def running_replicas_by_pod(application: dict, pod_names: dict[str, str]) -> dict[str, dict[str, int]]:
    """Deployment -> pod name -> its RUNNING replicas there (``pod_names``: node IP -> pod name)."""
    placement: dict[str, dict[str, int]] = {}
    for name, deployment in application.get("deployments", {}).items():
        counts = placement.setdefault(name, {})
        for replica in deployment.get("replicas", []):
            if replica.get("state") == "RUNNING":
                pod = pod_names.get(replica.get("node_ip", ""), replica.get("node_ip", "?"))
                counts[pod] = counts.get(pod, 0) + 1
    return placement


def status_report(application: dict) -> str:
    """The application's and each unhealthy deployment's message: what `serve status` would print."""
    lines = [f"application {application.get('status', 'absent')}: {application.get('message', '')}".strip()]
    for name, deployment in application.get("deployments", {}).items():
        if deployment.get("status") != "HEALTHY":
            lines.append(f"  {name} {deployment.get('status')}: {deployment.get('message', '')}".rstrip())
    return "\n".join(lines)


SCHEDULING_MESSAGE = re.compile(
    r"to be scheduled.*Resources required for each replica: (\{[^}]*\}), total resources available: (\{[^}]*\})",
    re.DOTALL,
)


def unschedulable(application: dict) -> bool:
    """A replica no node can hold: in the cluster the autoscaler would add a node (or never could); here each
    group has its one pod, so waiting longer changes nothing. Serve says so after 30 s of trying."""
    deployments = application.get("deployments", {}).values()
    return any(_cannot_fit(deployment.get("message") or "") for deployment in deployments)


def _cannot_fit(message: str) -> bool:
    """Serve's "taken more than 30s to be scheduled" also appears when the resources are there but starting the
    replica's worker is slow (a busy machine): only a replica asking for more than the cluster has free is
    unschedulable. A message without the resource figures counts as unschedulable, as Serve means it."""
    if "to be scheduled" not in message:
        return False
    figures = SCHEDULING_MESSAGE.search(message)
    if figures is None:
        return True
    try:
        required, available = (json.loads(group) for group in figures.groups())
    except ValueError:
        return True
    return any(amount > available.get(resource, 0) for resource, amount in required.items())


def wait_until_running(head_ip: str, name: str, timeout_s: float, times: ReplicaTimes, token: str | None) -> None:
    deadline = time.monotonic() + timeout_s
    application: dict = {}
    while time.monotonic() < deadline:
        try:
            application = application_status(head_ip, name, token)
        except (OSError, ValueError):
            application = {}
        times.observe(application)
        if application.get("status") == "RUNNING":
            return
        if application.get("status") == "DEPLOY_FAILED" or unschedulable(application):
            break
        time.sleep(0.5)
    raise RuntimeError("the Serve application did not reach RUNNING\n" + status_report(application))


def dashboard_checks(head_ip: str, serve_config: dict) -> list[tuple[str, bool, str]]:
    """With Ray's token authentication on, what a caller without the token gets from the dashboard: nothing."""
    answer = put_serve_config(head_ip, serve_config, None)
    label = "PUT serveConfigV2 to the dashboard without Ray's token: 401"
    nodes = http("GET", f"http://{head_ip}:{DASHBOARD_PORT}/api/v0/nodes?limit=1", timeout=10)
    return [
        (label, answer.status == 401, f"{answer.status} {str(answer.body)[:160]}"),
        ("GET the dashboard's node list without Ray's token: 401", nodes.status == 401, f"{nodes.status}"),
    ]


def jpeg_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def client_checks(base_url: str, api_key: str) -> list[tuple[str, bool, str]]:
    """(check, passed, what was seen) for every route, with the key and without it."""
    auth = {"Authorization": f"Bearer {api_key}"}
    question = json.dumps({"question": "how do I copy an object with nested arrays", "top_k": 3}).encode()
    as_json = {"Content-Type": "application/json"}
    image = jpeg_bytes()
    as_jpeg = {"Content-Type": "image/jpeg"}
    results = []

    def check(label: str, answer: Answer, passed: bool) -> None:
        results.append((label, passed, f"{answer.status} {str(answer.body)[:160]}"))

    answer = http("GET", f"{base_url}/healthz")
    check("GET /healthz (probe, no key) 200", answer, answer.status == 200)
    answer = http("POST", f"{base_url}/faq/match", question, {**as_json, **auth})
    matches = answer.body.get("matches", []) if isinstance(answer.body, dict) else []
    check("POST /faq/match with a key: 200 and 3 matches", answer, answer.status == 200 and len(matches) == 3)
    answer = http("POST", f"{base_url}/faq/match", question, as_json)
    check("POST /faq/match without a key: 401", answer, answer.status == 401)
    answer = http("POST", f"{base_url}/images/classify?top_k=2", image, {**as_jpeg, **auth}, timeout=60)
    predictions = answer.body.get("predictions", []) if isinstance(answer.body, dict) else []
    check("POST /images/classify with a key: 200 and 2 classes", answer, answer.status == 200 and len(predictions) == 2)
    answer = http("POST", f"{base_url}/images/classify", image, as_jpeg)
    check("POST /images/classify without a key: 401", answer, answer.status == 401)
    answer = http("GET", f"{base_url}/version", headers=auth)
    check("GET /version with a key: 200", answer, answer.status == 200)
    return results


def wait_until_ready(base_url: str, timeout_s: float) -> Answer:
    """/readyz as the RayService's readiness probe would see it: 200 once every model has loaded."""
    return wait_for("/readyz 200", lambda: (a := http("GET", f"{base_url}/readyz")).status == 200 and a, timeout_s)


# KubeRay's readiness probes of a RayService's Ray pods, exec probes inside the pod: a worker's raylet healthy and
# its Serve proxy answering /-/healthz (a worker failing it leaves the Serve Service's endpoints); the head's
# raylet and GCS.
READINESS_URLS = ("http://localhost:52365/api/local_raylet_healthz", f"http://localhost:{SERVE_PORT}/-/healthz")
HEAD_READINESS_URLS = (READINESS_URLS[0], f"http://localhost:{DASHBOARD_PORT}/api/gcs_healthz")
# The answer's body, or the error's last line (no traceback: it would name this machine's paths).
PROBE = (
    "import sys, urllib.request\n"
    "try: print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
    "except Exception as error: sys.exit(f'{type(error).__name__}: {error}')"
)


def readiness_probe(network_namespace: str, head: bool = False) -> tuple[bool, str]:
    """Run KubeRay's readiness checks from inside the pod's network namespace, as the kubelet would."""
    for url in HEAD_READINESS_URLS if head else READINESS_URLS:
        command = ["ip", "netns", "exec", network_namespace, sys.executable, "-c", PROBE, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode or "success" not in result.stdout:
            return False, f"{url}: {(result.stdout + result.stderr).strip()[-200:]}"
    return True, "raylet and GCS healthy" if head else "raylet and Serve proxy healthy"
