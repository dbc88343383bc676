"""Application metrics scraped for real: Debian's Prometheus scrapes the running Serve instance's metrics agent
(as the PodMonitor does on Kubernetes), traffic of every kind goes through the ingress, and every query of the
Grafana dashboard (kuberay/monitoring/grafana-dashboard.json) returns data through Prometheus's query API, and
the request counters move with more traffic. Model data collection and feedback have panels too: an app of this
module's own collects (to a temporary folder) and gets feedback."""

import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from serve_app.app import build_graph
from serve_app.metrics import ROUTES
from serve_app.settings import AppArgs
from serve_app.testing import free_port
from tests.images import encode, sample_rgb
from tests.integration.conftest import BROKEN_WEIGHTS, ServeApps

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "kuberay" / "monitoring" / "grafana-dashboard.json"
RATE_WINDOW = "2m"  # what Grafana's $__rate_interval stands for here
WAIT_S = 120  # Ray's metrics agent exports every ~10 s; the first scrape after traffic can take a while
COLLECTING = "/metrics-collecting"


def dashboard_queries() -> dict[str, str]:
    """Every target of every panel, named by its panel's title and its refId."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        f"{panel['title']} [{target['refId']}]": target["expr"].replace("$__rate_interval", RATE_WINDOW)
        for panel in panels
        for target in panel["targets"]
    }


@pytest.fixture(scope="module")
def collecting(serve_apps: ServeApps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An app with model data collection on, for the collection and feedback panels (FAQ only: its images
    deployment fails to load at once and holds no CPU)."""
    destination = tmp_path_factory.mktemp("collected")
    collection = {"enabled": True, "destination": str(destination), "flush_interval_s": 1}
    args = AppArgs(images={"weights": BROKEN_WEIGHTS}, collection=collection)
    options = {"ImageClassifier": {"ray_actor_options": {"num_cpus": 0}}}
    serve.run(build_graph(args, options), name=COLLECTING.strip("/"), route_prefix=COLLECTING)
    try:
        yield COLLECTING
    finally:
        serve.delete(COLLECTING.strip("/"))


@pytest.fixture(scope="module")
def prometheus(serve_apps: ServeApps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    metrics_port = ray._private.worker.global_worker.node.metrics_export_port
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def send_collected_traffic(serve_apps: ServeApps, prefix: str) -> None:
    """Answers that are collected, and feedback on them: a label (its true answer ranked first) and a vote."""
    with serve_apps.client(prefix) as client:
        for label in ("faq_id", "helpful"):
            answer = client.post("/faq/match", json={"question": "how do I copy a file"})
            assert answer.status_code == 200, answer.text
            value = answer.json()["matches"][0]["id"] if label == "faq_id" else True
            feedback = {"request_id": answer.headers["x-request-id"], label: value}
            assert client.post("/feedback", json=feedback).status_code == 202


def send_traffic(serve_apps: ServeApps) -> None:
    """Successes and errors of every kind the dashboard shows."""
    image = encode(sample_rgb(), "JPEG")
    with serve_apps.client() as client, serve_apps.client(api_key=None) as anonymous:
        for question in ("deep copy an object", "remove an element from an array", "what is a closure"):
            assert client.post("/faq/match", json={"question": question}).status_code == 200
        assert client.post("/faq/match", json={"questions": ["check if a key exists"] * 8}).status_code == 200
        assert client.post("/score", json={"input": "sort an array of numbers"}).status_code == 200
        assert client.post("/images/classify", content=image, headers={"content-type": "image/jpeg"}).status_code == 200
        assert client.post("/faq/match", json={"question": ""}).status_code == 422
        assert client.post(
            "/images/classify", content=b"not an image", headers={"content-type": "text/plain"}
        ).status_code in (415, 422)
        assert (
            client.post(
                "/faq/match", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"}
            ).status_code
            == 413
        )
        assert anonymous.post("/faq/match", json={"question": "q"}).status_code == 401
        bad_key = {"Authorization": "Bearer not-a-key-of-ours"}
        assert anonymous.post("/faq/match", json={"question": "q"}, headers=bad_key).status_code == 401
        assert anonymous.get("/readyz").status_code == 200


def query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def measured(prometheus: str, expr: str) -> list[float]:
    """The values of a query's series, none while a ratio is still 0/0 (a counter not yet seen to move)."""
    values = [float(series["value"][1]) for series in query(prometheus, expr)]
    return [] if any(math.isnan(value) for value in values) else values


def total_requests(prometheus: str) -> float:
    series = query(prometheus, "sum(ray_serve_app_http_requests_total)")
    return float(series[0]["value"][1]) if series else 0.0


def test_every_dashboard_query_has_data_and_counters_move(
    serve_apps: ServeApps, prometheus: str, collecting: str
) -> None:
    send_traffic(serve_apps)
    pending = dashboard_queries()
    deadline = time.monotonic() + WAIT_S
    while pending and time.monotonic() < deadline:
        send_traffic(serve_apps)  # rates need two samples of a moving counter inside the window
        send_collected_traffic(serve_apps, collecting)
        pending = {title: expr for title, expr in pending.items() if not query(prometheus, expr)}
        time.sleep(3)
    assert not pending, f"dashboard queries without data: {pending}"
    # Every label this module sent named the top answer, every vote was helpful: the online Acc@1 and helpful
    # share of its app (other tests of the session send other feedback) say 1, once its counters moved in Prometheus.
    panel = "Online Acc@1 from feedback (last hour, labelled answers)"
    ours = f'ray_serve_app_feedback_outcomes_total{{application="{COLLECTING.strip("/")}", '
    shares = [
        dashboard_queries()[f"{panel} [{ref_id}]"].replace("ray_serve_app_feedback_outcomes_total{", ours)
        for ref_id in "AB"
    ]
    deadline = time.monotonic() + WAIT_S
    while not all(measured(prometheus, expr) for expr in shares) and time.monotonic() < deadline:
        send_collected_traffic(serve_apps, collecting)
        time.sleep(3)
    assert [measured(prometheus, expr) for expr in shares] == [[1.0], [1.0]]

    before = total_requests(prometheus)
    send_traffic(serve_apps)
    deadline = time.monotonic() + WAIT_S
    while total_requests(prometheus) <= before and time.monotonic() < deadline:
        time.sleep(2)
    assert total_requests(prometheus) > before

    # Bounded labels: routes from the fixed list, never a question or a key.
    routes = {series["metric"]["route"] for series in query(prometheus, "ray_serve_app_http_requests_total")}
    assert routes <= {*ROUTES, "/", "other"}, routes
    reasons = {series["metric"]["reason"] for series in query(prometheus, "ray_serve_app_auth_failures_total")}
    # Other tests of the session send expired tokens too.
    assert (
        {"missing_credentials", "invalid_credentials"}
        <= reasons
        <= {"missing_credentials", "invalid_credentials", "expired"}
    )
