"""The monitoring manifests (kuberay/monitoring/): alert rules checked and unit-tested with promtool, the
PodMonitors pointed at ports and labels the RayService really has, the NetworkPolicy admitting scrapers to the
metrics port only, and the Grafana dashboard querying only metrics that exist. (That each dashboard query returns
data from the running app is tests/integration/test_metrics_prometheus.py.)"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "kuberay" / "monitoring"
APP_METRIC_NAMES = re.compile(r'"(serve_app_[a-z0-9_]+)"')


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return binary


def rule_groups(tmp_path: Path) -> Path:
    rule = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = subprocess.run([promtool(), "check", "rules", str(rule_groups(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def run_rule_tests(tmp_path: Path, tests: dict) -> None:
    """promtool's rule unit tests (``tests`` without ``rule_files``) against the alert rules."""
    tests = {"rule_files": [str(rule_groups(tmp_path))], **tests}
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_error_rate_alert_fires_on_5xx_and_not_on_refusals(tmp_path: Path) -> None:
    """promtool's rule unit test: 5% of requests failing with 500 pages; the same share of 503 overloaded does not."""
    ok = 'ray_serve_app_http_requests_total{route="/faq/match", status="200", error_type=""}'
    failed = 'ray_serve_app_http_requests_total{route="/faq/match", status="500", error_type="internal_error"}'
    refused = 'ray_serve_app_http_requests_total{route="/faq/match", status="503", error_type="overloaded"}'
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": ok, "values": "0+95x30"},
                    {"series": failed, "values": "0+5x30"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "ServeAppErrorRateHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "page"},
                                "exp_annotations": {
                                    "summary": "More than 1% of requests fail with a 5xx of our own",
                                    "description": "Errors by type: sum by (error_type) (rate(ray_serve_app_http_"
                                    'requests_total{status=~"5.."}[5m]))',
                                },
                            }
                        ],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": ok, "values": "0+95x30"},
                    {"series": refused, "values": "0+5x30"},
                ],
                "alert_rule_test": [{"eval_time": "20m", "alertname": "ServeAppErrorRateHigh", "exp_alerts": []}],
            },
        ],
    }
    run_rule_tests(tmp_path, tests)


def test_collection_alert_fires_on_dropped_records_only(tmp_path: Path) -> None:
    """Records written at any rate raise nothing; a few dropped each minute for 10 minutes raise a ticket."""
    written = 'ray_serve_app_collection_records_total{kind="prediction", outcome="written"}'
    dropped = 'ray_serve_app_collection_records_total{kind="prediction", outcome="dropped_buffer_full"}'
    alert = {
        "exp_labels": {"severity": "ticket", "outcome": "dropped_buffer_full"},
        "exp_annotations": {
            "summary": "Model data collection is dropping records (buffer full or destination failing)"
        },
    }
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": written, "values": "0+600x30"}, {"series": dropped, "values": "0+3x30"}],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "ServeAppCollectionDropping", "exp_alerts": [alert]}
                ],
            },
            {
                "interval": "1m",
                "input_series": [{"series": written, "values": "0+600x30"}, {"series": dropped, "values": "0x30"}],
                "alert_rule_test": [{"eval_time": "20m", "alertname": "ServeAppCollectionDropping", "exp_alerts": []}],
            },
        ],
    }
    run_rule_tests(tmp_path, tests)


def rayservice_groups() -> list[dict]:
    spec = yaml.safe_load((ROOT / "kuberay" / "rayservice.yaml").read_text())["spec"]["rayClusterConfig"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


@pytest.mark.parametrize("name", ["podmonitor.yaml", "azure-podmonitor.yaml"])
def test_pod_monitors_select_every_ray_pod_on_its_metrics_port(name: str) -> None:
    monitor = yaml.safe_load((MONITORING / name).read_text())
    assert monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for group in rayservice_groups():
        template = group["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        assert ports.get(endpoint["port"]) == 8080, (group.get("groupName", "head"), ports)


def test_network_policy_admits_scrapers_to_the_metrics_port_only() -> None:
    policy = yaml.safe_load((ROOT / "kuberay" / "networkpolicy.yaml").read_text())
    scraper_rules = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
            for peer in rule["from"]
        )
    ]
    (rule,) = scraper_rules
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_dashboard_queries_only_existing_metrics() -> None:
    """Every panel has a query; each metric it names is one serve_app.metrics defines or one Ray Serve exports."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    ours = set(APP_METRIC_NAMES.findall((ROOT / "serve_app" / "metrics.py").read_text()))
    import ray.serve

    serve_sources = "".join(path.read_text() for path in Path(ray.serve.__file__).parent.rglob("*.py"))
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in re.findall(r"ray_([a-z0-9_]+?)(?:_total|_bucket|_count|_sum)?\b(?=[{\[ )])", target["expr"]):
                known = metric in ours or f'"{metric}"' in serve_sources
                assert known, f"{panel['title']}: {metric} is neither ours nor Ray Serve's"
